// Palm decoding, weighted suppression and the hand region, as MediaPipe's palm detection
// graph configures its calculators (TensorsToDetections, NonMaxSuppression, DetectionLetterbox-
// Removal, DetectionsToRects, RectTransformation).
#include "detect/palm_detection.hpp"

#include <opencv2/imgproc.hpp>

#include <algorithm>
#include <cmath>
#include <cstddef>

namespace boneage::detect {

namespace {

constexpr int kValuesPerAnchor = 18;
constexpr float kPi = 3.14159265358979f;

float sigmoid(float x) { return 1.0f / (1.0f + std::exp(-x)); }

float normalize_radians(float angle) {
    return angle - 2 * kPi * std::floor((angle + kPi) / (2 * kPi));
}

}  // namespace

std::vector<PalmDetection> decode_palms(const float* boxes, const float* logits,
                                        const std::vector<Anchor>& anchors,
                                        const PalmDecoding& d) {
    std::vector<PalmDetection> palms;
    for (std::size_t i = 0; i < anchors.size(); ++i) {
        const float logit = std::clamp(logits[i], -d.score_clip, d.score_clip);
        const float score = sigmoid(logit);
        if (score < d.min_score) continue;
        const Anchor& a = anchors[i];
        const float* raw = boxes + i * kValuesPerAnchor;
        const float cx = raw[0] / d.scale * a.width + a.x_center;
        const float cy = raw[1] / d.scale * a.height + a.y_center;
        const float w = raw[2] / d.scale * a.width;
        const float h = raw[3] / d.scale * a.height;
        PalmDetection palm;
        palm.xmin = cx - w / 2;
        palm.ymin = cy - h / 2;
        palm.width = w;
        palm.height = h;
        palm.score = score;
        for (int k = 0; k < 7; ++k)
            palm.keypoints[k] = {raw[4 + 2 * k] / d.scale * a.width + a.x_center,
                                 raw[5 + 2 * k] / d.scale * a.height + a.y_center};
        palms.push_back(palm);
    }
    return palms;
}

float box_iou(const PalmDetection& a, const PalmDetection& b) {
    const float x0 = std::max(a.xmin, b.xmin), y0 = std::max(a.ymin, b.ymin);
    const float x1 = std::min(a.xmin + a.width, b.xmin + b.width);
    const float y1 = std::min(a.ymin + a.height, b.ymin + b.height);
    if (a.width <= 0 || a.height <= 0 || b.width <= 0 || b.height <= 0) return 0;
    if (x1 <= x0 || y1 <= y0) return 0;
    const float inter = (x1 - x0) * (y1 - y0);
    return inter / (a.width * a.height + b.width * b.height - inter);
}

std::vector<PalmDetection> weighted_nms(std::vector<PalmDetection> palms, float iou_threshold) {
    std::stable_sort(palms.begin(), palms.end(),
                     [](const PalmDetection& a, const PalmDetection& b) { return a.score > b.score; });
    std::vector<PalmDetection> kept;
    while (!palms.empty()) {
        const PalmDetection best = palms.front();
        std::vector<PalmDetection> rest;
        float total = 0, xmin = 0, ymin = 0, xmax = 0, ymax = 0;
        std::array<cv::Point2f, 7> keypoints{};
        for (const PalmDetection& p : palms) {
            if (box_iou(best, p) <= iou_threshold) {
                rest.push_back(p);
                continue;
            }
            total += p.score;
            xmin += p.xmin * p.score;
            ymin += p.ymin * p.score;
            xmax += (p.xmin + p.width) * p.score;
            ymax += (p.ymin + p.height) * p.score;
            for (int k = 0; k < 7; ++k) keypoints[k] += p.keypoints[k] * p.score;
        }
        PalmDetection merged = best;
        if (total > 0) {
            merged.xmin = xmin / total;
            merged.ymin = ymin / total;
            merged.width = xmax / total - merged.xmin;
            merged.height = ymax / total - merged.ymin;
            for (int k = 0; k < 7; ++k) merged.keypoints[k] = keypoints[k] / total;
        }
        kept.push_back(merged);
        // A palm that overlaps nothing (an empty box) would otherwise stay forever.
        if (rest.size() == palms.size()) rest.erase(rest.begin());
        palms = std::move(rest);
    }
    return kept;
}

Letterbox square_letterbox(cv::Size size) {
    Letterbox l;
    if (size.width <= 0 || size.height <= 0) return l;
    const float aspect = static_cast<float>(size.height) / size.width;
    if (aspect < 1)
        l.top = l.bottom = (1 - aspect) / 2;  // wider than tall: bars above and below
    else
        l.left = l.right = (1 - 1 / aspect) / 2;
    return l;
}

PalmDetection remove_letterbox(PalmDetection p, const Letterbox& l) {
    const float sx = 1 - l.left - l.right, sy = 1 - l.top - l.bottom;
    p.xmin = (p.xmin - l.left) / sx;
    p.ymin = (p.ymin - l.top) / sy;
    p.width /= sx;
    p.height /= sy;
    for (cv::Point2f& k : p.keypoints) k = {(k.x - l.left) / sx, (k.y - l.top) / sy};
    return p;
}

HandRegion hand_region(const PalmDetection& palm, cv::Size image) {
    const float W = static_cast<float>(image.width), H = static_cast<float>(image.height);
    HandRegion r;
    r.x_center = palm.xmin + palm.width / 2;
    r.y_center = palm.ymin + palm.height / 2;
    r.width = palm.width;
    r.height = palm.height;
    const cv::Point2f wrist = palm.keypoints[0], middle = palm.keypoints[2];
    r.rotation = normalize_radians(
        kPi / 2 - std::atan2(-(middle.y - wrist.y) * H, (middle.x - wrist.x) * W));
    // Half the palm's height towards the fingers, along the turned axis.
    const float shift_y = -0.5f;
    r.x_center += -H * r.height * shift_y * std::sin(r.rotation) / W;
    r.y_center += H * r.height * shift_y * std::cos(r.rotation) / H;
    const float side = std::max(r.width * W, r.height * H);
    r.width = side / W * 2.6f;
    r.height = side / H * 2.6f;
    return r;
}

std::array<cv::Point2f, 4> region_corners(const HandRegion& region, cv::Size size) {
    const cv::RotatedRect rect({region.x_center * size.width, region.y_center * size.height},
                               {region.width * size.width, region.height * size.height},
                               region.rotation * 180.0f / kPi);
    std::array<cv::Point2f, 4> corners;
    rect.points(corners.data());
    return corners;
}

}  // namespace boneage::detect
