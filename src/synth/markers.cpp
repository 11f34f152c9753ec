#include "synth/markers.hpp"

#include <opencv2/imgproc.hpp>

#include <algorithm>
#include <cmath>

namespace boneage::synth {

namespace {
constexpr int kFont = cv::FONT_HERSHEY_DUPLEX;

struct TextGeometry {
    double scale;
    int thickness;
    cv::Size text;  // size of the inked glyphs, thickness included
    int pad;        // room around the text inside the marker
};

TextGeometry text_geometry(const MarkerSpec& marker, cv::Size frame) {
    double want = std::max(6.0, marker.height * frame.height);
    int baseline = 0;
    cv::Size unit = cv::getTextSize(marker.text, kFont, 1.0, 1, &baseline);
    TextGeometry g;
    // Label text is smaller than its box; a bare lead letter fills its own height.
    double glyph = marker.label ? 0.6 * want : want;
    g.scale = glyph / std::max(1, unit.height);
    g.thickness = std::max(1, int(std::lround(glyph / (marker.label ? 10.0 : 6.0))));
    g.text = cv::getTextSize(marker.text, kFont, g.scale, g.thickness, &baseline);
    g.text.height += g.thickness;
    g.text.width += g.thickness;
    g.pad = marker.label ? int(std::lround(0.2 * want)) : g.thickness;
    return g;
}

int padding(cv::Size frame) { return std::max(4, int(0.02 * std::min(frame.width, frame.height))); }

cv::Rect grown(const cv::Rect& r, int by) { return {r.x - by, r.y - by, r.width + 2 * by, r.height + 2 * by}; }
}  // namespace

cv::Size marker_size(const MarkerSpec& marker, cv::Size frame) {
    TextGeometry g = text_geometry(marker, frame);
    return {g.text.width + 2 * g.pad, g.text.height + 2 * g.pad};
}

std::optional<cv::Rect> place_marker(cv::Size size, cv::Size frame, const cv::Rect& hand_box,
                                     const std::vector<cv::Rect>& taken, std::mt19937_64& rng) {
    if (size.width >= frame.width || size.height >= frame.height) return std::nullopt;
    int pad = padding(frame);
    cv::Rect keep_out = grown(hand_box, pad);
    std::uniform_int_distribution<int> x(0, frame.width - size.width);
    std::uniform_int_distribution<int> y(0, frame.height - size.height);
    for (int attempt = 0; attempt < 400; ++attempt) {
        cv::Rect r({x(rng), y(rng)}, size);
        if ((r & keep_out).area() > 0) continue;
        bool clear = std::none_of(taken.begin(), taken.end(),
                                  [&](const cv::Rect& t) { return (grown(t, pad) & r).area() > 0; });
        if (clear) return r;
    }
    return std::nullopt;
}

void draw_marker(cv::Mat& image, const MarkerSpec& marker, const cv::Rect& where) {
    cv::Rect roi = where & cv::Rect({0, 0}, image.size());
    if (roi.area() == 0) return;
    // Ink the glyphs into a mask the size of the marker, so nothing spills outside it (the
    // image may be a reduced copy of the frame the marker was placed in).
    TextGeometry g = text_geometry(marker, image.size());
    cv::Mat ink(where.size(), CV_8UC1, cv::Scalar(0));
    cv::Point origin(g.pad + g.thickness / 2, where.height - g.pad - g.thickness / 2);
    cv::putText(ink, marker.text, origin, kFont, g.scale, cv::Scalar(255), g.thickness, cv::LINE_AA);
    cv::Mat alpha;
    ink(roi - where.tl()).convertTo(alpha, CV_32F, 1.0 / 255.0);
    cv::Mat area = image(roi);
    if (marker.label) {
        // A bright card with dark lettering.
        cv::max(area, marker.value, area);
        cv::Mat dark = area.mul(1.0 - alpha) + alpha * (0.3 * marker.value);
        dark.copyTo(area);
    } else {
        cv::Mat lead = alpha * marker.value;
        cv::max(area, lead, area);
    }
}

}  // namespace boneage::synth
