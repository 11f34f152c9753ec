// Evaluation of trained models on a labelled set, and the report that compares them the way
// the paper's Table 1 and Figures 2-4 do.
//
//   boneage::EvalSetOptions o;  o.images_dir = "images/";  o.labels_csv = "labels.csv";
//   boneage::Predictor p(boneage::load_model("model.bin"));
//   boneage::EvalSet set = boneage::load_eval_set(o, p.settings());
//   boneage::Evaluation e = boneage::evaluate(p, set, "model.bin");
//   std::cout << e.metrics.mae;                      // months
//   boneage::write_report("report/", {e}, &set);     // report.md, PNG figures, predictions.csv
#pragma once

#include <boneage/dataset.hpp>
#include <boneage/predict.hpp>
#include <boneage/preprocess.hpp>

#include <nlohmann/json.hpp>
#include <opencv2/core.hpp>

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace boneage {

// ---- metrics ------------------------------------------------------------------------------

struct Metrics {
    std::size_t n = 0;
    double mae = 0.0;   // mean |pred - true|, months
    double rmse = 0.0;  // sqrt(mean (pred - true)^2), months
    double msle = 0.0;  // mean (log(max(pred, 1e-7) + 1) - log(true + 1))^2, as Keras computes it
};

// The metrics of paired values. Throws boneage::Error (Usage) when the lengths differ; all
// zero with n = 0 for empty input.
Metrics compute_metrics(const std::vector<double>& truth, const std::vector<double>& predicted);

// One squared log error term, Keras' clipping included (both sides clipped at 1e-7).
double squared_log_error(double truth, double predicted);

// An age band [from, to) in months, for errors by age.
struct AgeBand {
    std::string label;  // e.g. "2-5 y"
    double from_months = 0.0;
    double to_months = 0.0;
};

// 0-2, 2-5, 5-9, 9-12, 12-15, 15-19 years (the last band also takes anything older).
const std::vector<AgeBand>& default_age_bands();

// ---- data ---------------------------------------------------------------------------------

// One preprocessed, labelled image.
struct EvalSample {
    std::string id;
    double age_months = 0.0;
    bool male = false;
    cv::Mat image;  // size x size CV_8UC1; may point into a PreparedCache the set keeps alive
};

// An item that could not be evaluated, and why.
struct FailedItem {
    std::string id;
    std::string error;
};

struct EvalSet {
    std::vector<EvalSample> samples;
    std::vector<FailedItem> failed;     // unreadable images, missing files, rejected label rows
    // Images the hand gate refused (the error is its reason): kept out of the metrics, and
    // counted in every output, never dropped silently.
    std::vector<FailedItem> rejected;
    PreprocessSettings settings;        // how the samples were preprocessed
    std::string source;                 // the images dir or cache file, for the report
    std::string split = "all";          // which ids were kept (EvalSetOptions::split)
    std::vector<std::string> warnings;  // e.g. cache settings that differ from the model's
    std::shared_ptr<const PreparedCache> cache;  // owns the pixels when loaded from a cache
};

struct EvalSetOptions {
    std::filesystem::path images_dir;   // RSNA layout: images at DIR/<id>.png|jpg|dcm|...
    std::filesystem::path labels_csv;   // id,boneage,male
    std::filesystem::path cache;        // a prepared cache instead of images_dir + labels_csv
    // Which ids to keep: "all", "val:F" (ids in_validation_split(id, F)), "train:F" (the rest),
    // "fold:k/K" (ids with fold_of(id, K) == k: a cross-validation fold) or "notfold:k/K".
    std::string split = "all";
    int threads = 0;                    // preprocessing threads (0: one per core)
    std::function<void(std::size_t, std::size_t)> progress;  // (done, total), optional
    // Screens each image before preprocessing (images only: a cache holds no originals).
    std::shared_ptr<const HandGate> gate;
};

// Reads and preprocesses a labelled set with `settings`, or maps a prepared cache. With a cache
// whose image size differs from settings.output_size it throws boneage::Error (Usage); other
// differing settings only add a warning. Bad rows and images land in `failed`. Throws
// boneage::Error when the labels or the cache cannot be read, or on a malformed split.
EvalSet load_eval_set(const EvalSetOptions& options, const PreprocessSettings& settings);

// Parses "all", "val:F", "train:F", "fold:k/K" or "notfold:k/K" (2 <= K, 0 <= k < K) into a
// predicate on ids. Throws boneage::UsageError.
std::function<bool(const std::string&)> parse_split(const std::string& split);

// ---- evaluation ---------------------------------------------------------------------------

struct ItemResult {
    std::string id;
    double true_months = 0.0;
    double predicted_months = 0.0;  // the raw network output (metrics are taken on it)
    bool male = false;
    double error() const { return predicted_months - true_months; }
};

struct Evaluation {
    std::string model;            // a short label: the file stem, or the arch
    std::filesystem::path model_file;
    std::string arch;
    std::string head;             // "flatten" | "gap"
    bool uses_sex = false;
    std::uintmax_t model_bytes = 0;       // the model file's size
    std::optional<double> ms_per_step;    // median training step, from the model's metadata
    nlohmann::json history = nlohmann::json::array();  // training curves, from the metadata
    std::string training_loss = "msle";  // what the history's losses are: "msle" or "mae"
    nlohmann::json validation = nlohmann::json::object();  // metrics recorded at training
    Metrics metrics;
    std::vector<ItemResult> items;
    std::vector<FailedItem> failed;
    std::vector<FailedItem> rejected;  // refused by the hand gate (EvalSet::rejected)
    std::vector<std::string> warnings;
    double seconds = 0.0;         // wall time of the forward passes
    std::string precision;        // "fp32" | "bf16": what the network ran in (Predictor)
    int views = 1;                // test-time views averaged per image (Predictor)
};

// {model, model_file, arch, head, uses_sex, model_bytes, ms_per_step, n, mae, rmse, msle, failed
//  [{id, error}], rejected [{id, reason}], warnings, seconds, validation, precision, views}.
void to_json(nlohmann::json& j, const Evaluation& e);

// Runs the predictor over every sample (with each sample's sex when the model uses it) and
// collects the metrics. `model_file` fills the size and label; the metadata comes from the
// predictor's model. `progress` (done, total) is optional.
Evaluation evaluate(Predictor& predictor, const EvalSet& set,
                    const std::filesystem::path& model_file,
                    const std::function<void(std::size_t, std::size_t)>& progress = {});

// MAE per age band (months); bands without items are left out. Pairs of (band, metrics).
std::vector<std::pair<AgeBand, Metrics>> metrics_by_age_band(
    const std::vector<ItemResult>& items, const std::vector<AgeBand>& bands = default_age_bands());

// ---- cross-validation ---------------------------------------------------------------------

// The errors of one group of predictions (all of them, a fold, an age band, a sex).
struct GroupErrors {
    std::string label;        // "all", "fold 2", "5-9 y", "girls", ...
    std::size_t n = 0;
    double mae = 0.0;         // months
    double mae_se = 0.0;      // standard error of the MAE: sample SD of |error| / sqrt(n);
                              // NaN when n < 2
    double rmse = 0.0;        // months
    double mean_error = 0.0;  // mean of predicted - true, months (the bias)
};

// Out-of-fold errors of a cross-validation: every id predicted once, by the model of the
// fold that held it out.
struct OutOfFoldSummary {
    GroupErrors all;
    std::vector<GroupErrors> folds;      // one per part, in the order given
    std::vector<GroupErrors> age_bands;  // default_age_bands(), by true age; empty bands left out
    std::vector<GroupErrors> sexes;      // "girls", "boys"; an absent sex left out
};

// The errors of `items` under `label`.
GroupErrors group_errors(const std::string& label, const std::vector<ItemResult>& items);

// Summarises the parts of a cross-validation, parts[k] the predictions of fold k's model on
// fold k. Throws boneage::UsageError when there are no predictions or an id occurs twice
// (within a part or across parts): out-of-fold means one prediction per id.
OutOfFoldSummary summarise_out_of_fold(const std::vector<std::vector<ItemResult>>& parts);

// Reads the predictions.csv that write_report writes (id,true,predicted,male,error,model),
// which must hold one model's. Throws boneage::Error (NotFound) when it cannot be read and
// (BadData, naming the line) on a missing column, a bad number or a second model.
std::vector<ItemResult> read_predictions_csv(const std::filesystem::path& file);

// ---- report -------------------------------------------------------------------------------

struct ReportOptions {
    int sample_count = 8;   // preprocessed samples on the sample sheet
    bool figures = true;    // false writes only report.md and predictions.csv
    // When set, the sample sheet shows where this model (the first evaluated) looked.
    std::optional<LoadedModel> heatmap_model;
};

// What write_report wrote.
struct ReportFiles {
    std::filesystem::path markdown;               // DIR/report.md
    std::filesystem::path predictions;            // DIR/predictions.csv
    std::vector<std::filesystem::path> figures;   // every PNG
};

// Writes DIR/report.md (the paper's Table 1 columns for every model side by side, errors by
// age band, the figures), DIR/predictions.csv (id,true,predicted,male,error,model) and PNG
// figures: metrics.png (Fig. 3), training_<model>.png (Fig. 4, when the model carries a
// history), scatter_<model>.png, age_bands.png, and samples.png (Fig. 2, when `set` is given).
// Plots are drawn by gnuplot; throws boneage::Error (NotFound) when figures are asked for and
// gnuplot is missing, and boneage::Error naming the file on any write failure.
ReportFiles write_report(const std::filesystem::path& dir, const std::vector<Evaluation>& evals,
                         const EvalSet* set = nullptr, const ReportOptions& options = {});

// True when a gnuplot executable is on PATH.
bool gnuplot_available();

// A grid of preprocessed samples, each captioned with its true and predicted age (the paper's
// Fig. 2). `eval` supplies the predictions (matched by id; may be null). With `heatmap_model`,
// each sample shows where that model looked (overlay_heatmap in heatmap.hpp, with the
// sample's sex); a sample of another size than the model's preprocessing stays grey. 8-bit BGR.
cv::Mat sample_sheet(const EvalSet& set, const Evaluation* eval, int count, int tile = 240,
                     const LoadedModel* heatmap_model = nullptr);

}  // namespace boneage
