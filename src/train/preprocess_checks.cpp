// Training's checks on what its inputs mean (preprocess_checks.hpp). Prediction only warns about
// a model of another preprocessing version, since a model may be all there is; training would
// bake the difference into new weights, so it refuses unless told otherwise.
#include "train/preprocess_checks.hpp"

#include <boneage/error.hpp>
#include <boneage/preprocess.hpp>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <string>

namespace boneage::detail {

namespace {

const char* const kOverride = "--allow-preprocess-mismatch (allow_preprocess_mismatch) overrides";

void check_version(const std::filesystem::path& file, int version, const TrainOptions& options,
                   const char* remedy) {
    if (options.allow_preprocess_mismatch) return;
    const std::string why = preprocess_version_mismatch(file, version);
    if (!why.empty()) throw UsageError(fmt::format("{}; {}, or {}", why, remedy, kOverride));
}

// Everything that decides what a cache's images show: the settings and the algorithm's
// version. Not the output size: training brings every batch to the model's input size, and
// pre-training on small thumbnails while validating on the full-size radiographs is a recipe.
nlohmann::json preprocessing_of(const PreparedCache& cache) {
    nlohmann::json j = cache.settings();
    j.erase("output_size");
    j["preprocess_version"] = cache.preprocess_version();
    return j;
}

}  // namespace

void check_preprocessing(const TrainData& data, const TrainOptions& options) {
    const char* remedy = "prepare it again with this build (boneage prepare)";
    check_version(data.train->path(), data.train->preprocess_version(), options, remedy);
    if (!data.val_owned) return;
    const PreparedCache& val = *data.val_owned;
    check_version(val.path(), val.preprocess_version(), options, remedy);
    const nlohmann::json train = preprocessing_of(*data.train), validation = preprocessing_of(val);
    for (const auto& [field, value] : train.items()) {
        const nlohmann::json other = validation.value(field, nlohmann::json());
        if (other == value) continue;
        throw UsageError(fmt::format(
            "the validation cache {} is preprocessed unlike the training cache {}: {} is {} in "
            "the validation cache and {} in the training cache; prepare both with the same "
            "settings",
            val.path().string(), data.train->path().string(), field, other.dump(), value.dump()));
    }
}

void check_preprocessing(const std::filesystem::path& file, const LoadedModel& from,
                         const TrainOptions& options) {
    check_version(file, from.meta.preprocess_version, options,
                  "start from a model trained on this build's preprocessing");
}

}  // namespace boneage::detail
