// The sheet of preprocessed samples (the paper's Fig. 2): what the network actually sees, with
// the true and predicted age under each image.
#include <boneage/evaluate.hpp>
#include <boneage/heatmap.hpp>

#include <fmt/format.h>
#include <opencv2/imgproc.hpp>

#include <algorithm>
#include <map>

namespace boneage {

namespace {

// `count` samples spread evenly over the age range, youngest first.
std::vector<const EvalSample*> spread_by_age(const EvalSet& set, int count) {
    std::vector<const EvalSample*> sorted;
    for (const EvalSample& s : set.samples) sorted.push_back(&s);
    std::stable_sort(sorted.begin(), sorted.end(), [](const EvalSample* a, const EvalSample* b) {
        return a->age_months < b->age_months;
    });
    std::size_t n = std::min<std::size_t>(sorted.size(), std::size_t(std::max(count, 0)));
    std::vector<const EvalSample*> picked;
    for (std::size_t k = 0; k < n; ++k) {
        std::size_t i = n == 1 ? 0 : k * (sorted.size() - 1) / (n - 1);
        picked.push_back(sorted[i]);
    }
    return picked;
}

// The largest Hershey scale, up to `preferred`, at which `text` fits `width` pixels.
double fitting_scale(const std::string& text, int width, double preferred) {
    int baseline = 0;
    cv::Size size = cv::getTextSize(text, cv::FONT_HERSHEY_SIMPLEX, preferred, 1, &baseline);
    return size.width <= width ? preferred : preferred * width / double(size.width);
}

// The sample as the network sees it, under where `model` looked when there is one.
cv::Mat tile_picture(const EvalSample& s, int tile, const LoadedModel* model) {
    if (model && s.image.cols == model->meta.preprocess.output_size)
        return overlay_heatmap(s.image, saliency(*model, s.image, s.male).map, tile);
    cv::Mat grey;
    cv::resize(s.image, grey, cv::Size(tile, tile), 0, 0, cv::INTER_AREA);
    cv::Mat picture;
    cv::cvtColor(grey, picture, cv::COLOR_GRAY2BGR);
    return picture;
}

cv::Mat caption_tile(const EvalSample& s, const ItemResult* result, int tile,
                     const LoadedModel* model) {
    cv::Mat picture = tile_picture(s, tile, model);

    std::string first = fmt::format("{} ({})  true {:.0f} m", s.id, s.male ? "M" : "F", s.age_months);
    std::string second = result ? fmt::format("pred {:.1f} m  ({:+.1f})", result->predicted_months,
                                              result->error())
                                : std::string("not predicted");
    const int margin = 6;
    const double preferred = tile / 420.0;  // about 12 px high text on a 240 px tile
    double scale = std::min(fitting_scale(first, tile - 2 * margin, preferred),
                            fitting_scale(second, tile - 2 * margin, preferred));
    int baseline = 0;
    const int height = cv::getTextSize(first, cv::FONT_HERSHEY_SIMPLEX, scale, 1, &baseline).height;
    const int line = height + baseline + 4;
    cv::Mat strip(2 * line + margin, tile, CV_8UC3, cv::Scalar(255, 255, 255));
    const int font = cv::FONT_HERSHEY_SIMPLEX;
    cv::putText(strip, first, {margin, line - baseline}, font, scale, cv::Scalar(20, 20, 20), 1,
                cv::LINE_AA);
    // Green within a year of the truth, red beyond.
    cv::Scalar colour = !result                          ? cv::Scalar(120, 120, 120)
                        : std::abs(result->error()) <= 12 ? cv::Scalar(30, 130, 30)
                                                          : cv::Scalar(30, 30, 200);
    cv::putText(strip, second, {margin, 2 * line - baseline}, font, scale, colour, 1, cv::LINE_AA);
    cv::Mat out;
    cv::vconcat(picture, strip, out);
    // A thin white border separates the tiles.
    cv::copyMakeBorder(out, out, 2, 2, 2, 2, cv::BORDER_CONSTANT, cv::Scalar(255, 255, 255));
    return out;
}

}  // namespace

cv::Mat sample_sheet(const EvalSet& set, const Evaluation* eval, int count, int tile,
                     const LoadedModel* heatmap_model) {
    std::map<std::string, const ItemResult*> by_id;
    if (eval)
        for (const ItemResult& r : eval->items) by_id[r.id] = &r;
    std::vector<cv::Mat> tiles;
    for (const EvalSample* s : spread_by_age(set, count)) {
        auto it = by_id.find(s->id);
        tiles.push_back(
            caption_tile(*s, it == by_id.end() ? nullptr : it->second, tile, heatmap_model));
    }
    if (tiles.empty()) return {};
    const int columns = std::min<int>(4, int(tiles.size()));
    const int rows = (int(tiles.size()) + columns - 1) / columns;
    while (int(tiles.size()) < rows * columns)
        tiles.emplace_back(tiles.front().size(), CV_8UC3, cv::Scalar(255, 255, 255));
    std::vector<cv::Mat> lines;
    for (int r = 0; r < rows; ++r) {
        cv::Mat line;
        cv::hconcat(std::vector<cv::Mat>(tiles.begin() + r * columns,
                                         tiles.begin() + (r + 1) * columns),
                    line);
        lines.push_back(line);
    }
    cv::Mat sheet;
    cv::vconcat(lines, sheet);
    return sheet;
}

}  // namespace boneage
