// Bone age of single radiographs with a trained model: the model file's own preprocessing,
// then the network in evaluation mode, in batches, through the inference fast path
// (fast_path.hpp: folded batch norms, bf16 where the CPU has it natively, fp32 head).
//
//   boneage::Predictor p(boneage::load_model("model.bin"));
//   boneage::PredictRequest r;  r.male = true;
//   std::vector<boneage::Prediction> out = p.predict_files({"hand.png", "other.dcm"}, r);
//   if (out[0].ok()) std::cout << out[0].bone_age_months;
#pragma once

#include <boneage/augment.hpp>
#include <boneage/fast_path.hpp>
#include <boneage/model.hpp>
#include <boneage/preprocess.hpp>

#include <nlohmann/json_fwd.hpp>

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace boneage {

class HandGate;  // hand_gate.hpp
namespace infer {
class PreprocessAhead;  // src/infer/preprocess_ahead.hpp
}
struct GateVerdict;

// The range a reported bone age is clamped to, months. The Greulich-Pyle atlas and the RSNA
// labels end at 19 years (228 months); a little room above keeps honest outputs for near-adult
// hands while cutting off what no hand can be (negative ages, decades).
constexpr double kMinBoneAgeMonths = 0.0;
constexpr double kMaxBoneAgeMonths = 240.0;

// What the caller knows about the patients of one request. A DICOM input brings its own
// PatientSex, PatientBirthDate and StudyDate; what is set here overrides them, per input.
// The chronological age is the one given, else the months between the birth and study dates
// (each from here, else from the DICOM).
struct PredictRequest {
    std::optional<bool> male;                    // sex, when known (true male)
    std::optional<double> chronological_age_months;  // carried into each Prediction
    std::optional<std::string> birth_date;       // "YYYY-MM-DD" (calendar.hpp)
    std::optional<std::string> study_date;       // "YYYY-MM-DD"
    // Keep each ok input's preprocessed image in Prediction::image (for heatmaps); off, the
    // images are freed as soon as their batch has run.
    bool keep_images = false;
};

// Where an answer came from: the same for every input one Predictor reads, ok or not.
struct Provenance {
    std::string model_file;      // the model file's name, without its folder; empty for a model
                                 // made in memory
    std::string model_sha256;    // that file's SHA-256, 64 hex digits; empty as above
    std::string model_version;   // the model's own version (ModelMetadata::model_version)
    int preprocess_version = 0;  // the preprocessing the model was trained on (preprocess.hpp)
    std::string build_commit;    // the commit this program was built from (build_info.hpp)
    std::string precision;       // "fp32" or "bf16": what the network runs in
    std::string crop_method;     // crop_method() of the model's preprocessing settings
};

// One input's result. A failed input has status "error" and a message; an input that is not a
// whole hand radiograph has status "rejected" and the reason in the message. Neither carries a
// bone age.
struct Prediction {
    std::filesystem::path path;       // the input file (empty for in-memory radiographs)
    std::string status = "ok";        // "ok", "rejected" or "error"
    std::string message;              // the error, or why the input was rejected
    double bone_age_months = 0.0;     // the network's output clamped to the range above
    double raw_months = 0.0;          // the network's output before clamping
    std::optional<bool> male;         // the patient's sex, when known (fed to a model using sex)
    bool sex_averaged = false;        // the model uses sex, none was given: mean of both
    // A sex was given but the model does not take it: the bone age is the same for either sex
    // (the sex still chooses the reference SD of the Z-score). A warning says so too.
    bool sex_ignored = false;
    std::optional<double> chronological_age_months;  // given, or from the birth and study dates
    // The bone age against the chronological age (clinical/bone_age_reference.hpp): the
    // Z-score, the reference SD it divides by, and "delayed", "normal" or "advanced". Empty
    // without a chronological age or a sex; `z_score_note` then says why there is none.
    std::optional<double> z_score;
    std::optional<double> reference_sd_months;
    std::string interpretation;
    std::string z_score_note;
    // The hand gate's probability that the input is a whole hand radiograph (empty when the
    // gate did not run: --accept-all, or no gate model).
    std::optional<double> hand_score;
    ImageInfo source;                 // what reading the input learned (DICOM identifiers)
    HandBox hand;                     // where the hand was found, in original pixels
    int width = 0;                    // original image size, pixels
    int height = 0;
    std::vector<std::string> warnings;  // from preprocessing and from prediction
    std::string precision;            // "fp32" or "bf16": what the network ran in (ok only)
    int views = 1;                    // test-time views averaged (1: the image alone)
    cv::Mat image;                    // the preprocessed image, when the request kept it
    std::filesystem::path heatmap;    // the heatmap picture written for it (write_heatmaps)
    Provenance provenance;            // the model, build, precision and crop that answered

    bool ok() const { return status == "ok"; }
    // Bone age minus chronological age, months; empty unless ok with a chronological age.
    std::optional<double> difference_months() const {
        if (!ok() || !chronological_age_months) return std::nullopt;
        return bone_age_months - *chronological_age_months;
    }
};

// {path, status, message, bone_age_months, raw_months, male, sex_averaged,
//  chronological_age_months, z_score, box [x,y,w,h], method, confidence, width, height,
//  warnings, precision, views, difference_months, reference_sd_months, interpretation,
//  z_score_note, heatmap, sex_ignored, provenance {model_file, model_sha256, model_version,
//  preprocess_version, build_commit, precision, crop_method}}; absent values are null.
void to_json(nlohmann::json& j, const Prediction& p);

struct PredictorOptions {
    int batch = 16;     // images per forward pass
    int threads = 0;    // threads decoding and preprocessing (0: one per core)
    // What the network's trunk runs in; Auto is bf16 where the CPU computes it natively, else
    // fp32. bf16 stays within about 0.6 months of fp32 (at most 0.40 on 191 development films)
    // and is several times faster there.
    Precision precision = Precision::Auto;
    // Test-time augmentation: the mean over this many fixed views of each image (tta_views),
    // at as many forward passes. 1 runs the image alone; 0 takes the model's own number
    // (ModelMetadata::views: 1 unless its file records another).
    int views = 0;
    // Refuses inputs that are not whole hand radiographs (status "rejected", no bone age)
    // before they are preprocessed. Null: every input is read, whatever it shows.
    std::shared_ptr<const HandGate> gate;
    // predict_files and predict_batch read and preprocess the next inputs while the network
    // runs the current batch: one thread preprocesses all along, more only while the network
    // waits, and the network takes the cores the preprocessing leaves free. Off, each chunk of
    // inputs is preprocessed on every core, then run on every core. The answers and their order
    // are the same either way (the batches are). Off by default: on 2 cores it was not faster
    // (docs/PERFORMANCE.md, bench-predict-overlap), since both stages already use both cores.
    bool overlap = false;
    // Who finds the hand, in place of the model's own setting (preprocess.hpp, --crop). Unset:
    // the detector the model was trained with.
    std::optional<CropDetector> crop;
};

// The first `count` test-time views: the image itself, then pairs of opposite small changes
// (rotation, zoom, shift) well inside the ranges the bundled recipe trains with, so that a
// pair's biases cancel. Throws boneage::Error (Usage) unless 1 <= count <= kMaxViews.
std::vector<Augmentation> tta_views(int count);

// Runs one loaded model. Not thread-safe: one Predictor per thread.
class Predictor {
public:
    // Takes the model, puts it in evaluation mode and prepares a FastModel from a copy of it
    // (the model itself keeps its weights). Throws boneage::Error (BadModel) when the model's
    // input size or its preprocessing output size is not positive.
    explicit Predictor(LoadedModel model, PredictorOptions options = {});

    const LoadedModel& model() const { return model_; }
    const PreprocessSettings& settings() const { return model_.meta.preprocess; }
    bool uses_sex() const { return model_.net->config().use_sex; }
    int input_size() const { return model_.net->config().input_size; }
    // Side of the preprocessed images, settings().output_size. When it differs from
    // input_size() the batch is resized as training resized it (resize_batch in model.hpp).
    int image_size() const { return model_.meta.preprocess.output_size; }
    // The precision the network runs in: options.precision resolved, never Auto.
    Precision precision() const;
    // What every Prediction of this predictor records of where it came from.
    const Provenance& provenance() const { return provenance_; }
    // Test-time views averaged per image (options.views).
    int views() const { return options_.views; }

    // Months for already preprocessed images (image_size() x image_size() uint8 each), one
    // forward pass per `batch`. `male[i]` is the sex of image i; when the model uses sex and
    // `male` is empty, each image is run as both sexes and the mean returned. Raw outputs, not
    // clamped. Throws boneage::Error (Usage) when `male` is neither empty nor of equal length.
    std::vector<double> predict_preprocessed(const std::vector<const std::uint8_t*>& images,
                                             const std::vector<bool>& male = {});

    // One radiograph in memory: preprocess with the model's settings, then predict.
    // Throws what preprocessing throws.
    Prediction predict(const Radiograph& radiograph, const PredictRequest& request = {});

    // Every file, in order; a file that cannot be read or preprocessed gives a Prediction with
    // status "error" and the reason, and the others go on. Never throws for a bad input.
    // `progress`, when set, is called with (done, total) as inputs finish.
    std::vector<Prediction> predict_files(
        const std::vector<std::filesystem::path>& files, const PredictRequest& request = {},
        const std::function<void(std::size_t, std::size_t)>& progress = {});

    // As predict_files, with each input's own request (a service batches the uploads of
    // different patients into one pass). Throws boneage::Error (Usage) unless there is one
    // request per file.
    std::vector<Prediction> predict_batch(
        const std::vector<std::filesystem::path>& files, const std::vector<PredictRequest>& requests,
        const std::function<void(std::size_t, std::size_t)>& progress = {});

private:
    Prediction finish(Prediction p, double raw, const PredictRequest& request) const;
    // The network on the prepared inputs [start, end) of predict_batch, in the batches
    // predict_mixed forms, finishing each ok input of `out` (or failing them all with the
    // model's error); with `ahead`, each batch as soon as its inputs are prepared.
    void run_chunk(std::size_t start, std::size_t end, std::vector<cv::Mat>& inputs,
                   std::vector<Prediction>& out, const std::vector<PredictRequest>& requests,
                   infer::PreprocessAhead* ahead);
    // The gate's verdict on one input; nullopt when the predictor has no gate.
    std::optional<GateVerdict> screen(const Radiograph& radiograph) const;

    LoadedModel model_;
    PredictorOptions options_;
    std::unique_ptr<FastModel> fast_;  // built once from model_.net; runs every forward pass
    std::shared_ptr<const HandFinder> finder_;  // the crop's hand finder, for settings()
    Provenance provenance_;            // worked out once, copied into every Prediction
};

// Where the network looked (heatmap.hpp), for every ok prediction that kept its image
// (PredictRequest::keep_images): writes DIR/<stem>.heatmap.png (<stem>-2.heatmap.png, ... when
// inputs share a stem), captioned with the bone age, and records the path in
// Prediction::heatmap. Creates DIR. Throws boneage::Error naming the file when DIR or a
// picture cannot be written; a prediction without its image is left without a heatmap.
void write_heatmaps(const LoadedModel& model, std::vector<Prediction>& predictions,
                    const std::filesystem::path& dir);

}  // namespace boneage
