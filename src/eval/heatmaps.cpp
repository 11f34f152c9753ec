// Heatmap pictures for predictions: where the network looked, beside each input's result.
#include <fmt/format.h>

#include <algorithm>
#include <boneage/error.hpp>
#include <boneage/heatmap.hpp>
#include <boneage/image.hpp>
#include <boneage/predict.hpp>
#include <set>

namespace boneage {

namespace {

// DIR/<stem>.heatmap.png, numbered from 2 when another input of this call took the name.
std::filesystem::path free_name(const std::filesystem::path& dir, const Prediction& p,
                                std::set<std::string>& taken) {
    std::string stem = p.path.empty() ? std::string("image") : p.path.stem().string();
    std::string name = stem;
    for (int k = 2; taken.count(name); ++k) name = fmt::format("{}-{}", stem, k);
    taken.insert(name);
    return dir / (name + ".heatmap.png");
}

std::string caption(const Prediction& p, const std::string& method) {
    std::string sex = !p.male ? "" : *p.male ? ", male" : ", female";
    return fmt::format("bone age {:.1f} months{} ({})", p.bone_age_months, sex, method);
}

}  // namespace

void write_heatmaps(const LoadedModel& model, std::vector<Prediction>& predictions,
                    const std::filesystem::path& dir) {
    std::error_code ec;
    std::filesystem::create_directories(dir, ec);
    if (ec) throw Error(ErrorKind::NotFound, dir, "cannot create the folder: " + ec.message());
    std::set<std::string> taken;
    for (Prediction& p : predictions) {
        if (!p.ok() || p.image.empty()) continue;
        // The sex the prediction used: the patient's, else both averaged as the predictor does.
        Saliency s = saliency(model, p.image, p.male);
        std::filesystem::path file = free_name(dir, p, taken);
        const int size = std::max(320, p.image.cols);
        write_image(file, render_heatmap(p.image, s.map, caption(p, s.method), size));
        p.heatmap = file;
    }
}

}  // namespace boneage
