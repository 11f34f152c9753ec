// The preprocessing chain after the hand finder: crop, CLAHE, letterbox (paper, Section IV).
#include <boneage/error.hpp>
#include <boneage/preprocess.hpp>

#include <fmt/format.h>
#include <opencv2/imgproc.hpp>

#include <algorithm>
#include <cmath>
#include <optional>

namespace boneage {

cv::Rect crop_box(const cv::Rect& hand, cv::Size image_size, double margin) {
    const cv::Rect frame(0, 0, image_size.width, image_size.height);
    const int pad = static_cast<int>(std::ceil(margin * std::max(hand.width, hand.height)));
    cv::Rect grown(hand.x - pad, hand.y - pad, hand.width + 2 * pad, hand.height + 2 * pad);
    cv::Rect clamped = grown & frame;
    return clamped.empty() ? frame : clamped;
}

namespace {

class ClassicalFinder final : public HandFinder {
public:
    HandBox find(const cv::Mat& grey8, const PreprocessSettings& settings) const override {
        return find_hand(grey8, settings);
    }
};

}  // namespace

const HandFinder& classical_hand_finder() {
    static const ClassicalFinder finder;
    return finder;
}

double crop_margin_for(const std::string& method, const PreprocessSettings& settings) {
    return method == "mediapipe" ? settings.landmark_margin : settings.crop_margin;
}

cv::Mat apply_clahe(const cv::Mat& grey8, const PreprocessSettings& settings) {
    cv::Mat grey = to_grey8(grey8, "apply_clahe");
    cv::Ptr<cv::CLAHE> clahe = cv::createCLAHE(
        settings.clahe_clip_limit, cv::Size(settings.clahe_tile_grid, settings.clahe_tile_grid));
    cv::Mat out;
    clahe->apply(grey, out);
    return out;
}

namespace {

// The content of a size x size letterbox: `grey` scaled by min(size/w, size/h) to
// round(w * scale) x round(h * scale), each side in [1, size].
cv::Mat fit(const cv::Mat& grey, int size) {
    const double scale =
        std::min(static_cast<double>(size) / grey.cols, static_cast<double>(size) / grey.rows);
    const int w = std::clamp(static_cast<int>(std::lround(grey.cols * scale)), 1, size);
    const int h = std::clamp(static_cast<int>(std::lround(grey.rows * scale)), 1, size);
    if (w == grey.cols && h == grey.rows) return grey.clone();
    cv::Mat content;
    // INTER_AREA averages when shrinking (no aliasing of trabecular texture); enlarging a
    // small crop interpolates instead.
    const int interpolation = scale < 1.0 ? cv::INTER_AREA : cv::INTER_LINEAR;
    cv::resize(grey, content, cv::Size(w, h), 0, 0, interpolation);
    return content;
}

// `content` (at most size x size) centred on a black square.
cv::Mat centre(const cv::Mat& content, int size) {
    cv::Mat square = cv::Mat::zeros(size, size, CV_8UC1);
    content.copyTo(square(cv::Rect((size - content.cols) / 2, (size - content.rows) / 2,
                                   content.cols, content.rows)));
    return square;
}

// Where the content lies when `radiograph` is already preprocess()'s output at `size`: a size x
// size square from a lossless 8-bit grey source (what boneage preprocess writes) whose non-zero
// pixels span one axis and lie on the other between bars of exact zeros, placed as centre()
// places them. Nothing when it is not.
std::optional<cv::Rect> letterboxed_content(const Radiograph& radiograph, int size) {
    const cv::Mat& grey = radiograph.pixels;
    const ImageInfo& info = radiograph.info;
    if (grey.type() != CV_8UC1 || grey.rows != size || grey.cols != size) return std::nullopt;
    if (info.bits_stored != 8 || info.channels != 1 || info.format == "jpeg" ||
        info.format == "dicom")
        return std::nullopt;
    const cv::Rect content = cv::boundingRect(grey);  // of the non-zero pixels
    const bool side_bars = content.height == size && content.width <= size - 2 &&
                           content.x == (size - content.width) / 2;
    const bool top_and_bottom_bars = content.width == size && content.height <= size - 2 &&
                                     content.y == (size - content.height) / 2;
    if (!side_bars && !top_and_bottom_bars) return std::nullopt;
    return content;
}

}  // namespace

// The content is round(w * scale) x round(h * scale), at least 1 and at most `size` per side,
// placed at ((size - content_w) / 2, (size - content_h) / 2) rounded down, so a 100x300 image
// becomes 107x320 at x = 106 in a 320 square. The bars are exact zeros.
cv::Mat letterbox(const cv::Mat& grey8, int size) {
    if (size < 1) throw Error(ErrorKind::Usage, "letterbox: size must be positive");
    return centre(fit(to_grey8(grey8, "letterbox"), size), size);
}

Preprocessed preprocess(const Radiograph& radiograph, const PreprocessSettings& settings) {
    if (settings.crop_hand && settings.detector != CropDetector::classical)
        throw UsageError(fmt::format(
            "preprocessing settings ask for the {} crop, which needs MediaPipe's hand detector: "
            "call preprocess() with hand_finder_for(settings) (boneage/hand_detector.hpp)",
            to_string(settings.detector)));
    return preprocess(radiograph, settings, classical_hand_finder());
}

Preprocessed preprocess(const Radiograph& radiograph, const PreprocessSettings& settings,
                        const HandFinder& finder) {
    validate(settings);
    Preprocessed out;
    // Damage met while reading (a cut-short JPEG) comes first: it bears on everything after.
    out.hand.warnings = radiograph.info.warnings;
    // An image that is already this chain's output is the network's input itself: it is used
    // as it is rather than refused, so it gets exactly the bone age of the radiograph it came
    // from and preprocessing is idempotent, where a second pass would crop and equalise it
    // again. Its signature (letterboxed_content) is not one a radiograph carries by chance;
    // the settings that made it cannot be read back, which the warning says.
    if (const std::optional<cv::Rect> content =
            letterboxed_content(radiograph, settings.output_size)) {
        out.image = radiograph.pixels.clone();
        out.hand.box = *content;
        out.hand.method = "preprocessed";
        out.hand.warnings.push_back(fmt::format(
            "already a boneage preprocessing output ({0}x{0}, letterboxed on black): read as it "
            "is, without a second crop and CLAHE; the settings that made it cannot be checked",
            settings.output_size));
        return out;
    }
    cv::Mat grey = to_grey8(radiograph.pixels, "preprocess");
    if (settings.crop_hand) {
        HandBox found = finder.find(grey, settings);
        found.warnings.insert(found.warnings.begin(), out.hand.warnings.begin(),
                              out.hand.warnings.end());
        out.hand = std::move(found);
    } else {
        out.hand.box = cv::Rect(0, 0, grey.cols, grey.rows);
        out.hand.method = "full-frame";
        out.hand.confidence = 0.0;
    }
    const cv::Rect crop = settings.crop_hand
                              ? crop_box(out.hand.box, grey.size(),
                                         crop_margin_for(out.hand.method, settings))
                              : out.hand.box;
    // CLAHE runs on the crop, so the background it removed no longer weighs on the tiles, and
    // after the crop is brought to the size the network sees: its tiles then hold the same
    // detail whatever the film's resolution (at the film's own size, a 2,000-pixel scan gave
    // each tile grain and texture that a 500-pixel one has lost, and the two equalised
    // differently).
    out.image = centre(apply_clahe(fit(grey(crop), settings.output_size), settings),
                       settings.output_size);
    return out;
}

}  // namespace boneage
