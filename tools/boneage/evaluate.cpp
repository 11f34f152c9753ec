// boneage evaluate: the paper's metrics of one or several models on a labelled set, and an
// optional report with its table and figures.
#include "command.hpp"
#include "progress_bar.hpp"

#include <boneage/error.hpp>
#include <boneage/evaluate.hpp>
#include <boneage/model.hpp>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <iostream>
#include <memory>
#include <mutex>
#include <optional>

namespace boneage::cli {

namespace {

struct EvaluateArgs {
    std::vector<std::string> models;   // model files; none: the bundled default
    std::string images;                // RSNA-layout image folder
    std::string labels;                // id,boneage,male CSV
    std::string cache;                 // a prepared cache instead of images + labels
    std::string split = "all";         // all | val:F | train:F | fold:k/K | notfold:k/K
    std::string format = "text";       // text | json
    std::string report;                // report folder; empty: no report
    int samples = 8;                   // images on the report's sample sheet
    InferenceArgs inference;           // --batch, --threads, --precision, --tta
};

std::vector<std::filesystem::path> resolve_models(const std::vector<std::string>& given) {
    if (!given.empty()) return {given.begin(), given.end()};
    return {resolve_model("")};
}

void print_text(const std::vector<Evaluation>& evals) {
    std::cout << fmt::format("{:<24} {:<12} {:>6} {:>9} {:>9} {:>9} {:>7} {:>8}\n", "model", "arch", "n",
                             "MAE", "RMSE", "MSLE", "failed", "rejected");
    for (const Evaluation& e : evals)
        std::cout << fmt::format("{:<24} {:<12} {:>6} {:>9.3f} {:>9.3f} {:>9.5f} {:>7} {:>8}\n", e.model,
                                 e.arch, e.metrics.n, e.metrics.mae, e.metrics.rmse,
                                 e.metrics.msle, e.failed.size(), e.rejected.size());
    std::cout << "MAE and RMSE in months, over the n images read; rejected: not whole hand "
                 "radiographs by the hand gate, left out of the figures.\n";
    if (!evals.empty())
        for (const FailedItem& r : evals.front().rejected)
            std::cout << "rejected " << r.id << ": " << r.error << '\n';
    if (!evals.empty())
        for (const std::string& w : evals.front().warnings) std::cout << "warning: " << w << '\n';
}

int run_evaluate(const EvaluateArgs& args) {
    const PredictorOptions options = args.inference.predictor_options();  // a bad one fails first
    if (args.cache.empty() && (args.images.empty() || args.labels.empty()))
        throw UsageError("evaluate needs --images DIR and --labels CSV, or --cache FILE");
    if (!args.cache.empty() && (!args.images.empty() || !args.labels.empty()))
        throw UsageError("give either --cache or --images with --labels, not both");
    parse_split(args.split);  // a bad split is a usage error before any work

    EvalSetOptions set_options;
    set_options.images_dir = args.images;
    set_options.labels_csv = args.labels;
    set_options.cache = args.cache;
    set_options.split = args.split;
    set_options.threads = args.inference.threads;
    set_options.gate = options.gate;

    std::vector<Evaluation> evals;
    std::shared_ptr<EvalSet> first_set, set;
    std::optional<LoadedModel> first_model;  // the report's sample sheet shows where it looked
    nlohmann::json set_settings;
    for (const std::filesystem::path& file : resolve_models(args.models)) {
        Predictor predictor(load_inference_model(file, "evaluate"), options);
        if (!first_model && !args.report.empty()) first_model = predictor.model();
        // Models preprocessed alike share one pass over the images.
        nlohmann::json wanted = predictor.settings();
        if (!set || wanted != set_settings) {
            // The total is known only once the labels are read: the bar starts on first call.
            std::unique_ptr<ProgressBar> loading;
            std::mutex loading_mutex;
            set_options.progress = [&](std::size_t done, std::size_t total) {
                std::lock_guard<std::mutex> lock(loading_mutex);
                if (!loading) loading = std::make_unique<ProgressBar>("load", total);
                loading->update(done);
            };
            set = std::make_shared<EvalSet>(load_eval_set(set_options, predictor.settings()));
            if (loading)
                loading->finish(fmt::format("{} images, {} failed", set->samples.size(),
                                            set->failed.size()));
            set_settings = wanted;
            if (!first_set) first_set = set;
        }
        ProgressBar bar("evaluate", set->samples.size());
        evals.push_back(evaluate(predictor, *set, file, [&bar](std::size_t done, std::size_t) {
            bar.update(done);
        }));
        bar.finish(fmt::format("{}: MAE {:.2f} months ({})", evals.back().model,
                               evals.back().metrics.mae, evals.back().precision));
    }

    if (args.format == "json") {
        nlohmann::json out = evals.size() == 1 ? nlohmann::json(evals.front()) : nlohmann::json(evals);
        std::cout << out.dump(2) << '\n';
    } else {
        print_text(evals);
    }
    if (!args.report.empty()) {
        ReportOptions options;
        options.sample_count = args.samples;
        options.heatmap_model = first_model;
        ReportFiles files = write_report(args.report, evals, first_set.get(), options);
        std::cerr << "report: " << files.markdown.string() << " (" << files.figures.size()
                  << " figures)\n";
    }

    bool any_failed = false;
    for (const Evaluation& e : evals)
        any_failed = any_failed || !e.failed.empty() || !e.rejected.empty() || e.metrics.n == 0;
    if (!evals.empty() && !evals.front().rejected.empty())
        std::cerr << "boneage evaluate: " << evals.front().rejected.size()
                  << " images rejected by the hand gate and left out of the figures (--accept-all keeps them)\n";
    if (!evals.empty() && evals.front().metrics.n == 0)
        std::cerr << "boneage evaluate: no image could be evaluated\n";
    return any_failed ? kSomeFailed : kOk;
}

const Command evaluate_command{
    "evaluate", "MAE, RMSE and MSLE of models on a labelled set; optional report with figures",
    [](CLI::App& sub) -> std::function<int()> {
        auto args = std::make_shared<EvaluateArgs>();
        sub.add_option("--model", args->models,
                       "model file; repeat to compare several (default: the bundled model)")
            ->check(CLI::ExistingFile)
            ->take_all();
        sub.add_option("--images", args->images, "folder of images named <id>.png|jpg|dcm")
            ->check(CLI::ExistingDirectory);
        sub.add_option("--labels", args->labels,
                       "labels CSV: id, bone age and sex columns in any order (id,boneage,male "
                       "as RSNA; README: Labels files)")
            ->check(CLI::ExistingFile);
        sub.add_option("--cache", args->cache, "a prepared cache instead of --images/--labels")
            ->check(CLI::ExistingFile);
        sub.add_option("--split,--ids-split", args->split,
                       "ids to keep: all, val:F (the validation split of fraction F), train:F, "
                       "fold:k/K (the ids train --fold k/K validates on) or notfold:k/K")
            ->capture_default_str();
        sub.add_option("--format", args->format, "output: text or json (one object per model)")
            ->check(CLI::IsMember({"text", "json"}))
            ->capture_default_str();
        sub.add_option("--report", args->report,
                       "write DIR/report.md, figures and predictions.csv");
        add_inference_options(sub, args->inference);
        sub.add_option("--samples", args->samples, "images on the report's sample sheet")
            ->check(CLI::Range(1, 64))
            ->capture_default_str();
        return [args] { return run_evaluate(*args); };
    }};

}  // namespace

}  // namespace boneage::cli
