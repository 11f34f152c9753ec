// The preprocessing chain after the hand finder: crop, CLAHE, letterbox (paper, Section IV).
#include <boneage/error.hpp>
#include <boneage/preprocess.hpp>

#include <opencv2/imgproc.hpp>

#include <algorithm>
#include <cmath>

namespace boneage {

cv::Rect crop_box(const cv::Rect& hand, cv::Size image_size, double margin) {
    const cv::Rect frame(0, 0, image_size.width, image_size.height);
    const int pad = static_cast<int>(std::ceil(margin * std::max(hand.width, hand.height)));
    cv::Rect grown(hand.x - pad, hand.y - pad, hand.width + 2 * pad, hand.height + 2 * pad);
    cv::Rect clamped = grown & frame;
    return clamped.empty() ? frame : clamped;
}

cv::Mat apply_clahe(const cv::Mat& grey8, const PreprocessSettings& settings) {
    cv::Mat grey = to_grey8(grey8, "apply_clahe");
    cv::Ptr<cv::CLAHE> clahe = cv::createCLAHE(
        settings.clahe_clip_limit, cv::Size(settings.clahe_tile_grid, settings.clahe_tile_grid));
    cv::Mat out;
    clahe->apply(grey, out);
    return out;
}

// The content is round(w * scale) x round(h * scale), at least 1 and at most `size` per side,
// placed at ((size - content_w) / 2, (size - content_h) / 2) rounded down, so a 100x300 image
// becomes 107x320 at x = 106 in a 320 square. The bars are exact zeros.
cv::Mat letterbox(const cv::Mat& grey8, int size) {
    if (size < 1) throw Error(ErrorKind::Usage, "letterbox: size must be positive");
    cv::Mat grey = to_grey8(grey8, "letterbox");
    const double scale =
        std::min(static_cast<double>(size) / grey.cols, static_cast<double>(size) / grey.rows);
    const int w = std::clamp(static_cast<int>(std::lround(grey.cols * scale)), 1, size);
    const int h = std::clamp(static_cast<int>(std::lround(grey.rows * scale)), 1, size);
    cv::Mat content;
    // INTER_AREA averages when shrinking (no aliasing of trabecular texture); enlarging a
    // small crop interpolates instead.
    const int interpolation = scale < 1.0 ? cv::INTER_AREA : cv::INTER_LINEAR;
    cv::resize(grey, content, cv::Size(w, h), 0, 0, interpolation);
    cv::Mat square = cv::Mat::zeros(size, size, CV_8UC1);
    content.copyTo(square(cv::Rect((size - w) / 2, (size - h) / 2, w, h)));
    return square;
}

Preprocessed preprocess(const Radiograph& radiograph, const PreprocessSettings& settings) {
    validate(settings);
    cv::Mat grey = to_grey8(radiograph.pixels, "preprocess");
    Preprocessed out;
    if (settings.crop_hand) {
        out.hand = find_hand(grey, settings);
    } else {
        out.hand.box = cv::Rect(0, 0, grey.cols, grey.rows);
        out.hand.method = "full-frame";
        out.hand.confidence = 0.0;
    }
    const cv::Rect crop = settings.crop_hand
                              ? crop_box(out.hand.box, grey.size(), settings.crop_margin)
                              : out.hand.box;
    // CLAHE runs on the crop, so the background it removed no longer weighs on the tiles.
    out.image = letterbox(apply_clahe(grey(crop), settings), settings.output_size);
    return out;
}

}  // namespace boneage
