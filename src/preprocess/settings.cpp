// PreprocessSettings: range checks and the JSON form a model file records.
#include <boneage/error.hpp>
#include <boneage/preprocess.hpp>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

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
    return {};
}

}  // namespace

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
                       {"detect_size", s.detect_size}};
}

void from_json(const nlohmann::json& j, PreprocessSettings& s) {
    if (!j.is_object())
        throw Error(ErrorKind::BadData, "preprocessing settings: expected a JSON object");
    PreprocessSettings r;
    try {
        r.output_size = j.value("output_size", r.output_size);
        r.clahe_clip_limit = j.value("clahe_clip_limit", r.clahe_clip_limit);
        r.clahe_tile_grid = j.value("clahe_tile_grid", r.clahe_tile_grid);
        r.crop_margin = j.value("crop_margin", r.crop_margin);
        r.crop_hand = j.value("crop_hand", r.crop_hand);
        r.detect_size = j.value("detect_size", r.detect_size);
    } catch (const nlohmann::json::exception& e) {
        throw Error(ErrorKind::BadData, std::string("preprocessing settings: ") + e.what());
    }
    std::string problem = first_problem(r);
    if (!problem.empty()) throw Error(ErrorKind::BadData, "preprocessing settings: " + problem);
    s = r;
}

}  // namespace boneage
