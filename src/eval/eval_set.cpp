// The labelled set an evaluation runs on: RSNA-layout images preprocessed with the model's
// settings, or a prepared cache mapped as it is.
#include <boneage/evaluate.hpp>

#include <boneage/error.hpp>
#include <boneage/hand_detector.hpp>
#include <boneage/hand_gate.hpp>
#include <boneage/image.hpp>
#include <boneage/parallel.hpp>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <atomic>
#include <cstdlib>
#include <exception>
#include <optional>
#include <utility>

namespace boneage {

namespace {

// "k/K" with 0 <= k < K and K >= 2, or nothing.
std::optional<std::pair<int, int>> parse_fold(const std::string& text) {
    const auto slash = text.find('/');
    if (slash == std::string::npos) return std::nullopt;
    auto whole = [](const std::string& digits, int& out) {
        if (digits.empty() || digits.size() > 4 ||
            digits.find_first_not_of("0123456789") != std::string::npos)
            return false;
        out = std::stoi(digits);
        return true;
    };
    int fold = 0, folds = 0;
    if (!whole(text.substr(0, slash), fold) || !whole(text.substr(slash + 1), folds) ||
        folds < 2 || fold >= folds)
        return std::nullopt;
    return std::make_pair(fold, folds);
}

}  // namespace

std::function<bool(const std::string&)> parse_split(const std::string& split) {
    if (split.empty() || split == "all") return [](const std::string&) { return true; };
    auto colon = split.find(':');
    std::string side = split.substr(0, colon);
    if (side == "fold" || side == "notfold") {
        const auto fold = colon == std::string::npos ? std::nullopt
                                                     : parse_fold(split.substr(colon + 1));
        if (!fold)
            throw UsageError("split '" + split + "' is not '" + side +
                             ":k/K' with 2 <= K and 0 <= k < K (e.g. fold:0/5)");
        const bool want_in = side == "fold";
        return [want_in, k = fold->first, folds = fold->second](const std::string& id) {
            return (fold_of(id, folds) == k) == want_in;
        };
    }
    double fraction = -1;
    if (colon != std::string::npos) {
        const char* text = split.c_str() + colon + 1;
        char* end = nullptr;
        fraction = std::strtod(text, &end);
        if (end == text || *end != '\0') fraction = -1;
    }
    if ((side != "val" && side != "train") || !(fraction > 0 && fraction < 1))
        throw UsageError("split '" + split +
                         "' is not 'all', 'val:F' or 'train:F' with 0 < F < 1 (e.g. val:0.1), "
                         "'fold:k/K' or 'notfold:k/K'");
    bool want_val = side == "val";
    return [want_val, fraction](const std::string& id) {
        return in_validation_split(id, fraction) == want_val;
    };
}

namespace {

EvalSet from_cache(const EvalSetOptions& options, const PreprocessSettings& settings,
                   const std::function<bool(const std::string&)>& keep) {
    EvalSet set;
    auto cache = std::make_shared<const PreparedCache>(options.cache);
    if (cache->image_size() != settings.output_size)
        throw UsageError(fmt::format("{}: the cache holds {} px images but the model takes {} px",
                                     options.cache.string(), cache->image_size(),
                                     settings.output_size));
    nlohmann::json have = cache->settings(), want = settings;
    if (have != want)
        set.warnings.push_back(fmt::format(
            "the cache was preprocessed with {} but the model was trained with {}; metrics may "
            "differ from predictions on the original images",
            have.dump(), want.dump()));
    set.settings = cache->settings();
    set.source = options.cache.string();
    const int size = cache->image_size();
    for (std::size_t i = 0; i < cache->size(); ++i) {
        if (!keep(cache->id(i))) continue;
        // The Mat points into the mapping; set.cache keeps it alive.
        cv::Mat image(size, size, CV_8UC1, const_cast<std::uint8_t*>(cache->image(i)));
        set.samples.push_back({cache->id(i), cache->age_months(i), cache->male(i), image});
        if (options.progress) options.progress(i + 1, cache->size());
    }
    set.cache = std::move(cache);
    return set;
}

EvalSet from_images(const EvalSetOptions& options, const PreprocessSettings& settings,
                    const std::function<bool(const std::string&)>& keep) {
    EvalSet set;
    set.settings = settings;
    set.source = options.images_dir.string();
    Labels labels = read_labels(options.labels_csv);
    for (const RejectedRow& r : labels.rejected)
        set.failed.push_back({r.id, fmt::format("{}:{}: {}", options.labels_csv.string(), r.line,
                                                r.reason)});
    std::vector<LabelRow> rows;
    for (const LabelRow& r : labels.rows)
        if (keep(r.id)) rows.push_back(r);

    std::vector<cv::Mat> images(rows.size());
    std::vector<std::string> errors(rows.size());
    std::vector<std::string> refusals(rows.size());
    std::atomic<std::size_t> done{0};
    const std::shared_ptr<const HandFinder> finder = hand_finder_for(settings);
    parallel_for(rows.size(), options.threads, [&](std::size_t i) {
        try {
            std::filesystem::path file = find_image(options.images_dir, rows[i].id);
            if (file.empty())
                throw Error(ErrorKind::NotFound, options.images_dir / rows[i].id,
                            "no image for this id (.png, .jpg, .jpeg, .dcm, .tif, .tiff, .bmp)");
            const Radiograph radiograph = read_radiograph(file);
            if (options.gate) {
                const GateVerdict verdict = options.gate->check(radiograph);
                if (!verdict.accepted) {
                    refusals[i] = verdict.reason;
                    return;
                }
            }
            cv::Mat image = preprocess(radiograph, settings, *finder).image;
            images[i] = image.isContinuous() ? image : image.clone();
        } catch (const std::exception& e) {
            errors[i] = e.what();
        }
        if (options.progress) options.progress(++done, rows.size());
    });
    for (std::size_t i = 0; i < rows.size(); ++i) {
        if (!refusals[i].empty())
            set.rejected.push_back({rows[i].id, refusals[i]});
        else if (images[i].empty())
            set.failed.push_back({rows[i].id, errors[i]});
        else
            set.samples.push_back({rows[i].id, rows[i].age_months, rows[i].male, images[i]});
    }
    return set;
}

}  // namespace

EvalSet load_eval_set(const EvalSetOptions& options, const PreprocessSettings& settings) {
    auto keep = parse_split(options.split);
    if (!options.cache.empty()) {
        if (!options.images_dir.empty() || !options.labels_csv.empty())
            throw UsageError("give either a prepared cache or images and labels, not both");
        EvalSet set = from_cache(options, settings, keep);
        set.split = options.split;
        if (options.gate)
            set.warnings.push_back("the hand gate did not screen these images: a prepared cache "
                                   "holds only preprocessed images");
        return set;
    }
    if (options.images_dir.empty() || options.labels_csv.empty())
        throw UsageError("evaluation needs --images DIR and --labels CSV, or --cache FILE");
    EvalSet set = from_images(options, settings, keep);
    set.split = options.split;
    return set;
}

}  // namespace boneage
