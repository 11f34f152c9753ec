// The heatmap as a picture: the preprocessed hand in grey, the saliency over it in a colour
// map, a colour bar and a caption.
#include <fmt/format.h>

#include <algorithm>
#include <boneage/error.hpp>
#include <boneage/heatmap.hpp>
#include <opencv2/imgproc.hpp>

namespace boneage {

namespace {

void check_inputs(const cv::Mat& image, const cv::Mat& map, int size) {
    if (image.empty() || image.type() != CV_8UC1)
        throw UsageError("a heatmap picture needs an 8-bit grey image");
    if (map.empty() || map.type() != CV_32FC1)
        throw UsageError("a heatmap picture needs a float saliency map");
    if (size < 8) throw UsageError(fmt::format("a heatmap picture of {} px is too small", size));
}

cv::Mat scaled(const cv::Mat& m, int size) {
    cv::Mat out;
    const bool shrinking = m.cols > size;
    cv::resize(m, out, cv::Size(size, size), 0, 0, shrinking ? cv::INTER_AREA : cv::INTER_LINEAR);
    return out;
}

// INFERNO runs from black through red to pale yellow: the hot places stand out on a grey
// radiograph, and it reads in greyscale print and to colour-blind eyes, unlike JET.
cv::Mat coloured(const cv::Mat& heat01) {
    cv::Mat heat8, colour;
    heat01.convertTo(heat8, CV_8U, 255.0);
    cv::applyColorMap(heat8, colour, cv::COLORMAP_INFERNO);
    return colour;
}

// Hot at the top, cold at the bottom, on white.
cv::Mat colour_bar(int height) {
    cv::Mat ramp(height, 1, CV_32FC1);
    for (int y = 0; y < height; ++y) ramp.at<float>(y) = 1.0f - float(y) / float(height - 1);
    cv::Mat bar = coloured(ramp);
    cv::resize(bar, bar, cv::Size(kHeatmapBarWidth / 2, height), 0, 0, cv::INTER_NEAREST);
    cv::Mat out(height, kHeatmapBarWidth, CV_8UC3, cv::Scalar(255, 255, 255));
    bar.copyTo(out(cv::Rect(kHeatmapBarWidth / 4, 0, bar.cols, height)));
    return out;
}

cv::Mat caption_strip(const std::string& caption, int width) {
    cv::Mat strip(kHeatmapCaptionHeight, width, CV_8UC3, cv::Scalar(255, 255, 255));
    const int font = cv::FONT_HERSHEY_SIMPLEX;
    int baseline = 0;
    double scale = 0.5;
    const cv::Size text = cv::getTextSize(caption, font, scale, 1, &baseline);
    if (text.width > width - 8) scale *= double(width - 8) / text.width;
    cv::putText(strip, caption, {4, kHeatmapCaptionHeight - 8}, font, scale, cv::Scalar(20, 20, 20),
                1, cv::LINE_AA);
    return strip;
}

}  // namespace

cv::Mat overlay_heatmap(const cv::Mat& image, const cv::Mat& map, int size) {
    check_inputs(image, map, size);
    cv::Mat heat = scaled(map, size);
    cv::min(cv::max(heat, 0.0), 1.0, heat);
    cv::Mat grey, picture;
    cv::cvtColor(scaled(image, size), grey, cv::COLOR_GRAY2BGR);
    grey.convertTo(grey, CV_32FC3);
    cv::Mat colour;
    coloured(heat).convertTo(colour, CV_32FC3);
    // The colour covers the hand from a fifth of the peak heat up, at most 75 %: where the
    // network hardly looked, the radiograph shows through unchanged, not darkened by the
    // colour map's dark end.
    cv::Mat weight = cv::max(heat - 0.2, 0.0) * (0.75 / 0.8);
    cv::Mat alpha;
    cv::cvtColor(weight, alpha, cv::COLOR_GRAY2BGR);
    cv::Mat blended = grey.mul(cv::Scalar::all(1.0) - alpha) + colour.mul(alpha);
    blended.convertTo(picture, CV_8UC3);
    return picture;
}

cv::Mat render_heatmap(const cv::Mat& image, const cv::Mat& map, const std::string& caption,
                       int size) {
    cv::Mat picture;
    cv::hconcat(overlay_heatmap(image, map, size), colour_bar(size), picture);
    if (caption.empty()) return picture;
    cv::vconcat(picture, caption_strip(caption, picture.cols), picture);
    return picture;
}

}  // namespace boneage
