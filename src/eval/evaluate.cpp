// Evaluation of one model on a labelled set: per-item predictions, the paper's metrics, and
// what the model file says about its training.
#include <boneage/evaluate.hpp>

#include <boneage/error.hpp>

#include <fmt/format.h>

#include <chrono>

namespace boneage {

namespace {

// The median training step recorded by train, when the metadata carries one.
std::optional<double> recorded_ms_per_step(const nlohmann::json& training) {
    auto it = training.find("ms_per_step");
    if (it != training.end() && it->is_number()) return it->get<double>();
    return std::nullopt;
}

}  // namespace

Evaluation evaluate(Predictor& predictor, const EvalSet& set, const std::filesystem::path& model_file,
                    const std::function<void(std::size_t, std::size_t)>& progress) {
    const LoadedModel& model = predictor.model();
    Evaluation e;
    e.model_file = model_file;
    e.model = model_file.empty() ? model.meta.config.arch : model_file.stem().string();
    e.arch = model.meta.config.arch;
    e.head = model.meta.config.head;
    e.uses_sex = predictor.uses_sex();
    e.precision = to_string(predictor.precision());
    e.views = predictor.views();
    std::error_code ec;
    if (!model_file.empty()) {
        auto bytes = std::filesystem::file_size(model_file, ec);
        if (!ec) e.model_bytes = bytes;
    }
    e.ms_per_step = recorded_ms_per_step(model.meta.training);
    if (auto it = model.meta.training.find("history");
        it != model.meta.training.end() && it->is_array())
        e.history = *it;
    // Files from before the choice of loss trained with the paper's MSLE.
    if (auto it = model.meta.training.find("options");
        it != model.meta.training.end() && it->is_object())
        e.training_loss = it->value("loss", std::string("msle"));
    e.validation = model.meta.validation;
    e.failed = set.failed;
    e.rejected = set.rejected;
    e.warnings = set.warnings;
    if (set.samples.empty()) return e;

    if (set.samples.front().image.rows != predictor.image_size())
        throw UsageError(fmt::format("the set holds {} px images but the model expects {} px",
                                     set.samples.front().image.rows, predictor.image_size()));
    auto start = std::chrono::steady_clock::now();
    // Forward in slices so the progress bar moves; the predictor batches inside each slice.
    constexpr std::size_t kSlice = 64;
    std::vector<double> truth, predicted;
    for (std::size_t from = 0; from < set.samples.size(); from += kSlice) {
        std::size_t to = std::min(set.samples.size(), from + kSlice);
        std::vector<const std::uint8_t*> images;
        std::vector<bool> male;
        for (std::size_t i = from; i < to; ++i) {
            images.push_back(set.samples[i].image.ptr<std::uint8_t>());
            male.push_back(set.samples[i].male);
        }
        std::vector<double> months = predictor.predict_preprocessed(images, male);
        for (std::size_t i = from; i < to; ++i) {
            const EvalSample& s = set.samples[i];
            e.items.push_back({s.id, s.age_months, months[i - from], s.male});
            truth.push_back(s.age_months);
            predicted.push_back(months[i - from]);
        }
        if (progress) progress(to, set.samples.size());
    }
    e.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    e.metrics = compute_metrics(truth, predicted);
    return e;
}

void to_json(nlohmann::json& j, const Evaluation& e) {
    using nlohmann::json;
    json failed = json::array();
    for (const FailedItem& f : e.failed) failed.push_back({{"id", f.id}, {"error", f.error}});
    json rejected = json::array();
    for (const FailedItem& r : e.rejected) rejected.push_back({{"id", r.id}, {"reason", r.error}});
    j = json{{"model", e.model},
             {"model_file", e.model_file.string()},
             {"arch", e.arch},
             {"head", e.head},
             {"uses_sex", e.uses_sex},
             {"model_bytes", e.model_bytes},
             {"ms_per_step", e.ms_per_step ? json(*e.ms_per_step) : json(nullptr)},
             {"n", e.metrics.n},
             {"mae", e.metrics.mae},
             {"rmse", e.metrics.rmse},
             {"msle", e.metrics.msle},
             {"failed", failed},
             {"rejected", rejected},
             {"warnings", e.warnings},
             {"seconds", e.seconds},
             {"validation", e.validation},
             {"precision", e.precision},
             {"views", e.views}};
}

}  // namespace boneage
