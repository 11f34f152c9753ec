// Bone age of single radiographs with a trained model: the model file's own preprocessing,
// then the network in evaluation mode, in batches, through the inference fast path
// (fast_path.hpp: folded batch norms, bf16 where the CPU has it natively, fp32 head).
//
//   boneage::Predictor p(boneage::load_model("model.bin"));
//   boneage::PredictRequest r;  r.male = true;
//   std::vector<boneage::Prediction> out = p.predict_files({"hand.png", "other.dcm"}, r);
//   if (out[0].ok()) std::cout << out[0].bone_age_months;
#pragma once

#include <boneage/fast_path.hpp>
#include <boneage/model.hpp>
#include <boneage/preprocess.hpp>
#include <boneage/train.hpp>

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

// The range a reported bone age is clamped to, months. The Greulich-Pyle atlas and the RSNA
// labels end at 19 years (228 months); a little room above keeps honest outputs for near-adult
// hands while cutting off what no hand can be (negative ages, decades).
constexpr double kMinBoneAgeMonths = 0.0;
constexpr double kMaxBoneAgeMonths = 240.0;

// What the caller knows about the patients of one request.
struct PredictRequest {
    std::optional<bool> male;                    // sex, when known (true male)
    std::optional<double> chronological_age_months;  // carried into each Prediction
};

// One input's result. A failed input has status "error" and a message; nothing else is set.
struct Prediction {
    std::filesystem::path path;       // the input file (empty for in-memory radiographs)
    std::string status = "ok";        // "ok" or "error"
    std::string message;              // the error when status is "error"
    double bone_age_months = 0.0;     // the network's output clamped to the range above
    double raw_months = 0.0;          // the network's output before clamping
    std::optional<bool> male;         // the sex fed to the network, when one was
    bool sex_averaged = false;        // the model uses sex, none was given: mean of both
    std::optional<double> chronological_age_months;  // as given in the request
    // Z-score of the bone age for the chronological age and sex. Needs reference tables of
    // bone age spread by age and sex, which this stage does not hold: always empty here.
    std::optional<double> z_score;
    HandBox hand;                     // where the hand was found, in original pixels
    int width = 0;                    // original image size, pixels
    int height = 0;
    std::vector<std::string> warnings;  // from preprocessing and from prediction
    std::string precision;            // "fp32" or "bf16": what the network ran in (ok only)
    int views = 1;                    // test-time views averaged (1: the image alone)

    bool ok() const { return status == "ok"; }
};

// {path, status, message, bone_age_months, raw_months, male, sex_averaged,
//  chronological_age_months, z_score, box [x,y,w,h], method, confidence, width, height,
//  warnings, precision, views}; absent values are null.
void to_json(nlohmann::json& j, const Prediction& p);

struct PredictorOptions {
    int batch = 16;     // images per forward pass
    int threads = 0;    // threads decoding and preprocessing (0: one per core)
    // What the network's trunk runs in; Auto is bf16 where the CPU computes it natively, else
    // fp32. bf16 stays within about a quarter month of fp32 and is several times faster there.
    Precision precision = Precision::Auto;
    // Test-time augmentation: the mean over this many fixed views of each image (tta_views),
    // at as many forward passes. 1 runs the image alone.
    int views = 1;
};

// The most test-time views there are.
constexpr int kMaxViews = 7;

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
    // input_size() the batch is resized as training resized it (resize_batch in train.hpp).
    int image_size() const { return model_.meta.preprocess.output_size; }
    // The precision the network runs in: options.precision resolved, never Auto.
    Precision precision() const;
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

private:
    Prediction finish(Prediction p, double raw, const PredictRequest& request) const;

    LoadedModel model_;
    PredictorOptions options_;
    std::unique_ptr<FastModel> fast_;  // built once from model_.net; runs every forward pass
};

}  // namespace boneage
