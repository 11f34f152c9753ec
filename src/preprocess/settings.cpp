// PreprocessSettings: range checks and the JSON form a model file records.
#include <boneage/error.hpp>
#include <boneage/preprocess.hpp>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <climits>
#include <cstdint>

namespace boneage {

namespace {

// The first problem with `s`, or an empty string when every field is in range.
std::string first_problem(const PreprocessSettings& s) {
    if (s.output_size < 8 || s.output_size > 4096)
        return fmt::format("output_size must be in [8, 4096], got {}", s.output_size);
    if (!(s.clahe_clip_limit > 0.0) || s.clahe_clip_limit > 1000.0)
        return fmt::format("clahe_clip_limit must be in (0, 1000], got {}", s.clahe_clip_limit);
    if (s.clahe_tile_grid < 1 || s.clahe_tile_grid > 64)
        return fmt::format("clahe_tile_grid must be in [1, 64], got {}", s.clahe_tile_grid);
    if (!(s.crop_margin >= 0.0) || s.crop_margin > 1.0)
        return fmt::format("crop_margin must be in [0, 1], got {}", s.crop_margin);
    if (s.detect_size < 16 || s.detect_size > 8192)
        return fmt::format("detect_size must be in [16, 8192], got {}", s.detect_size);
    if (!(s.landmark_margin >= 0.0) || s.landmark_margin > 1.0)
        return fmt::format("landmark_margin must be in [0, 1], got {}", s.landmark_margin);
    if (!(s.landmark_forearm >= 0.0) || s.landmark_forearm > 2.0)
        return fmt::format("landmark_forearm must be in [0, 2], got {}", s.landmark_forearm);
    if (!(s.landmark_padding >= 0.0) || s.landmark_padding > 2.0)
        return fmt::format("landmark_padding must be in [0, 2], got {}", s.landmark_padding);
    if (!(s.landmark_min_score >= 0.0) || s.landmark_min_score > 1.0)
        return fmt::format("landmark_min_score must be in [0, 1], got {}", s.landmark_min_score);
    return {};
}

// A whole-number field, or `fallback` when absent. A JSON float is refused rather than
// converted: converting one outside int's range is undefined behaviour.
int whole_number(const nlohmann::json& j, const char* key, int fallback) {
    const auto it = j.find(key);
    if (it == j.end()) return fallback;
    // An unsigned value past int64's range reads as negative, which first_problem refuses.
    const std::int64_t v = it->is_number_integer() ? it->get<std::int64_t>() : 0;
    if (!it->is_number_integer() || v < INT_MIN || v > INT_MAX)
        throw Error(ErrorKind::BadData,
                    fmt::format("preprocessing settings: {} must be a whole number, got {}", key,
                                it->dump()));
    return static_cast<int>(v);
}

}  // namespace

const char* to_string(CropDetector detector) {
    switch (detector) {
        case CropDetector::mediapipe: return "mediapipe";
        case CropDetector::automatic: return "auto";
        case CropDetector::classical: break;
    }
    return "classical";
}

CropDetector crop_detector_from_string(const std::string& word) {
    for (CropDetector d :
         {CropDetector::classical, CropDetector::mediapipe, CropDetector::automatic})
        if (word == to_string(d)) return d;
    throw UsageError(fmt::format("crop: '{}' is not one of classical, mediapipe, auto", word));
}

void validate(const PreprocessSettings& s) {
    std::string problem = first_problem(s);
    if (!problem.empty()) throw UsageError("preprocessing settings: " + problem);
}

void to_json(nlohmann::json& j, const PreprocessSettings& s) {
    j = nlohmann::json{{"output_size", s.output_size},
                       {"clahe_clip_limit", s.clahe_clip_limit},
                       {"clahe_tile_grid", s.clahe_tile_grid},
                       {"crop_margin", s.crop_margin},
                       {"crop_hand", s.crop_hand},
                       {"detect_size", s.detect_size},
                       {"detector", to_string(s.detector)},
                       {"landmark_margin", s.landmark_margin},
                       {"landmark_forearm", s.landmark_forearm},
                       {"landmark_padding", s.landmark_padding},
                       {"landmark_min_score", s.landmark_min_score}};
}

void from_json(const nlohmann::json& j, PreprocessSettings& s) {
    if (!j.is_object())
        throw Error(ErrorKind::BadData, "preprocessing settings: expected a JSON object");
    PreprocessSettings r;
    try {
        r.output_size = whole_number(j, "output_size", r.output_size);
        r.clahe_clip_limit = j.value("clahe_clip_limit", r.clahe_clip_limit);
        r.clahe_tile_grid = whole_number(j, "clahe_tile_grid", r.clahe_tile_grid);
        r.crop_margin = j.value("crop_margin", r.crop_margin);
        r.crop_hand = j.value("crop_hand", r.crop_hand);
        r.detect_size = whole_number(j, "detect_size", r.detect_size);
        // Files written before the MediaPipe crop have no detector: the classical finder.
        if (const auto it = j.find("detector"); it != j.end()) {
            if (!it->is_string())
                throw Error(ErrorKind::BadData,
                            "preprocessing settings: detector must be a string, got " +
                                it->dump());
            try {
                r.detector = crop_detector_from_string(it->get<std::string>());
            } catch (const Error& e) {
                throw Error(ErrorKind::BadData, std::string("preprocessing settings: ") + e.what());
            }
        }
        r.landmark_margin = j.value("landmark_margin", r.landmark_margin);
        r.landmark_forearm = j.value("landmark_forearm", r.landmark_forearm);
        r.landmark_padding = j.value("landmark_padding", r.landmark_padding);
        r.landmark_min_score = j.value("landmark_min_score", r.landmark_min_score);
    } catch (const nlohmann::json::exception& e) {
        throw Error(ErrorKind::BadData, std::string("preprocessing settings: ") + e.what());
    }
    std::string problem = first_problem(r);
    if (!problem.empty()) throw Error(ErrorKind::BadData, "preprocessing settings: " + problem);
    s = r;
}

}  // namespace boneage
