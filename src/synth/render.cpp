// Rendering a scene: the hand's outlines go from hand units to pixels, soft tissue and bone
// are drawn as attenuation over a background, then markers, blur, exposure and noise.
#include "synth/markers.hpp"
#include "synth/scene.hpp"

#include <boneage/error.hpp>

#include <opencv2/imgproc.hpp>

#include <algorithm>
#include <cmath>

namespace boneage::synth {

namespace {
constexpr double kPi = 3.14159265358979323846;
constexpr int kShift = 4;  // sub-pixel bits when filling outlines
constexpr double kSubPixel = 1 << kShift;
constexpr int kInside = 64;          // tissue map level that counts as hand
constexpr int kWorkingSide = 1024;   // longest side drawn at full detail

// Hand units to pixels: mirror, rotate, scale, shift.
struct Placement {
    double scale = 1.0;  // pixels per hand unit
    double cos_t = 1.0, sin_t = 0.0;
    bool mirror = false;
    cv::Point2d shift;

    cv::Point2d map(cv::Point2d p) const {
        double x = mirror ? -p.x : p.x;
        return {shift.x + scale * (x * cos_t - p.y * sin_t), shift.y + scale * (x * sin_t + p.y * cos_t)};
    }
};

// Scales the hand for its age and the scene, shrinks it further if it would not fit (a large,
// strongly rotated hand), and puts its outline inside the frame with a margin.
Placement place_hand(const HandModel& hand, const Scene& scene, const Maturity& m, cv::Size frame) {
    Placement p;
    double reference = std::min(double(frame.height), 1.25 * frame.width);
    // An adult hand (about 0.95 hand units long) spans 0.55 of the reference side.
    p.scale = reference * 0.55 / 0.95 * m.size * scene.scale;
    p.cos_t = std::cos(scene.rotation_deg * kPi / 180.0);
    p.sin_t = std::sin(scene.rotation_deg * kPi / 180.0);
    p.mirror = scene.mirror;
    cv::Point2d lo(1e300, 1e300), hi(-1e300, -1e300);
    for (const Layer& layer : hand.tissue)
        for (const cv::Point2d& q : layer.outline) {
            cv::Point2d r = p.map(q);
            lo = {std::min(lo.x, r.x), std::min(lo.y, r.y)};
            hi = {std::max(hi.x, r.x), std::max(hi.y, r.y)};
        }
    double margin = 0.02 * std::min(frame.width, frame.height) + 2.0;
    double room_w = frame.width - 2 * margin, room_h = frame.height - 2 * margin;
    double fit = std::min({1.0, room_w / (hi.x - lo.x), room_h / (hi.y - lo.y)});
    p.scale *= fit;
    lo *= fit;
    hi *= fit;
    p.shift.x = margin - lo.x + scene.placement.x * (room_w - (hi.x - lo.x));
    p.shift.y = margin - lo.y + scene.placement.y * (room_h - (hi.y - lo.y));
    return p;
}

std::vector<std::vector<cv::Point>> to_pixels(const Outline& outline, const Placement& p,
                                              cv::Point2d origin = {}) {
    std::vector<cv::Point> pts;
    pts.reserve(outline.size());
    for (const cv::Point2d& q : outline) {
        cv::Point2d r = (p.map(q) - origin) * kSubPixel;
        pts.emplace_back(int(std::lround(r.x)), int(std::lround(r.y)));
    }
    return {pts};
}

// Adds `value` inside an outline; only the outline's bounding box is touched.
void add_outline(cv::Mat& canvas, const Outline& outline, double value, const Placement& p) {
    if (outline.empty()) return;
    cv::Point2d lo(1e300, 1e300), hi(-1e300, -1e300);
    for (const cv::Point2d& q : outline) {
        cv::Point2d r = p.map(q);
        lo = {std::min(lo.x, r.x), std::min(lo.y, r.y)};
        hi = {std::max(hi.x, r.x), std::max(hi.y, r.y)};
    }
    cv::Rect box(cv::Point(int(std::floor(lo.x)) - 2, int(std::floor(lo.y)) - 2),
                 cv::Point(int(std::ceil(hi.x)) + 3, int(std::ceil(hi.y)) + 3));
    box &= cv::Rect({0, 0}, canvas.size());
    if (box.area() == 0) return;
    cv::Mat ink(box.size(), CV_8UC1, cv::Scalar(0));
    cv::fillPoly(ink, to_pixels(outline, p, box.tl()), cv::Scalar(255), cv::LINE_AA, kShift);
    cv::Mat roi = canvas(box);
    cv::addWeighted(roi, 1.0, ink, value / 255.0, 0.0, roi, CV_32F);
}

// Soft tissue as an 8-bit thickness map (later outlines cover earlier ones).
cv::Mat tissue_map(const HandModel& hand, const Placement& p, cv::Size frame) {
    cv::Mat map(frame, CV_8UC1, cv::Scalar(0));
    for (const Layer& layer : hand.tissue)
        cv::fillPoly(map, to_pixels(layer.outline, p), cv::Scalar(255.0 * layer.value), cv::LINE_AA,
                     kShift);
    return map;
}

cv::Mat background(const Scene& scene, cv::Size frame, const cv::Rect& hand_box, cv::RNG& rng) {
    cv::Mat bg(frame, CV_32F, cv::Scalar(scene.background));
    if (scene.gradient > 0) {
        double diag = std::hypot(frame.width, frame.height);
        float gx = float(scene.gradient * std::cos(scene.gradient_angle) / diag);
        float gy = float(scene.gradient * std::sin(scene.gradient_angle) / diag);
        for (int y = 0; y < frame.height; ++y) {
            float* row = bg.ptr<float>(y);
            float base = gy * y;
            for (int x = 0; x < frame.width; ++x) row[x] += base + gx * x;
        }
    }
    if (scene.blobs > 0) {
        cv::Mat coarse(5, 4, CV_32F), smooth;
        rng.fill(coarse, cv::RNG::UNIFORM, -scene.blobs, scene.blobs);
        cv::resize(coarse, smooth, frame, 0, 0, cv::INTER_CUBIC);
        bg += smooth;
    }
    if (scene.film) {
        // The film's edge: a rectangle around the hand, a different level outside it and a
        // bright rim, as when a film is photographed on a light box.
        double grow = scene.film_margin * std::min(frame.width, frame.height);
        cv::RotatedRect film({hand_box.x + hand_box.width / 2.0f, hand_box.y + hand_box.height / 2.0f},
                             cv::Size2f(float(hand_box.width + 2 * grow), float(hand_box.height + 2 * grow)),
                             float(scene.film_angle_deg));
        cv::Point2f corners[4];
        film.points(corners);
        std::vector<std::vector<cv::Point>> poly(1);
        for (const auto& c : corners) poly[0].emplace_back(int(std::lround(c.x)), int(std::lround(c.y)));
        cv::Mat inside(frame, CV_8UC1, cv::Scalar(0)), weight;
        cv::fillPoly(inside, poly, cv::Scalar(255), cv::LINE_AA);
        inside.convertTo(weight, CV_32F, 1.0 / 255.0);
        bg = bg.mul(weight) + (1.0 - weight) * scene.film_outside;
        cv::Mat rim(frame, CV_8UC1, cv::Scalar(0));
        int thickness = std::max(2, int(0.006 * std::min(frame.width, frame.height)));
        cv::polylines(rim, poly, true, cv::Scalar(255), thickness, cv::LINE_AA);
        cv::GaussianBlur(rim, rim, cv::Size(), thickness);
        cv::addWeighted(bg, 1.0, rim, 0.25 / 255.0, 0.0, bg, CV_32F);
    }
    return bg;
}

// Soft tissue attenuation: the thickness levels, rounded off towards the outline the way a
// limb's cross-section thins at its edges.
cv::Mat soft_tissue(const cv::Mat& thickness, double contrast, double pixels_per_unit) {
    cv::Mat inside = thickness >= kInside, depth, level;
    cv::distanceTransform(inside, depth, cv::DIST_L2, cv::DIST_MASK_3);
    float edge = float(std::max(1.0, 0.025 * pixels_per_unit));
    // A circular profile: depth d under an edge of radius r is sqrt(1 - (1 - d/r)^2).
    depth.forEach<float>([edge](float& d, const int*) {
        float t = std::min(d / edge, 1.0f);
        d = std::sqrt(t * (2.0f - t));
    });
    thickness.convertTo(level, CV_32F, contrast / 255.0);
    cv::GaussianBlur(level, level, cv::Size(), std::max(1.0, 0.006 * pixels_per_unit));
    cv::Mat tissue = level.mul(depth);
    cv::GaussianBlur(tissue, tissue, cv::Size(), std::max(0.5, 0.0015 * pixels_per_unit));
    return tissue;
}

cv::Rect scaled_rect(const cv::Rect& r, double k) {
    if (k == 1.0) return r;
    cv::Point tl(int(std::lround(r.x * k)), int(std::lround(r.y * k)));
    cv::Point br(int(std::lround(r.br().x * k)), int(std::lround(r.br().y * k)));
    return {tl, br};
}

// Detector noise: Gaussian, plus a part that grows with the signal like photon noise. Normal
// deviates come from a table picked by a xorshift generator: a full-size frame has millions
// of pixels, and this is many times faster than drawing each deviate.
void add_noise(cv::Mat& image, const Scene& scene, cv::RNG& rng) {
    constexpr int kTableBits = 16;
    cv::Mat table(1, 1 << kTableBits, CV_32F);
    rng.fill(table, cv::RNG::NORMAL, 0.0, 1.0);
    const float* normal = table.ptr<float>();
    std::uint64_t state = (std::uint64_t(rng.next()) << 32 | rng.next()) | 1;
    const float flat = float(scene.noise), shot = float(scene.shot_noise);
    for (int y = 0; y < image.rows; ++y) {
        float* row = image.ptr<float>(y);
        for (int x = 0; x < image.cols; ++x) {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            float v = row[x];
            row[x] = v + normal[state >> (64 - kTableBits)] * (flat + shot * std::sqrt(std::max(v, 0.0f)));
        }
    }
}

void check_request(const PhantomLabel& label, const SynthOptions& options) {
    if (options.width < 64 || options.height < 64 || options.width > 16384 || options.height > 16384)
        throw UsageError("phantom size must be 64..16384 pixels per side, got " +
                         std::to_string(options.width) + "x" + std::to_string(options.height));
    if (!std::isfinite(label.age_months) || label.age_months < 0 || label.age_months > 300)
        throw UsageError("phantom age must be 0..300 months, got " + std::to_string(label.age_months));
}
}  // namespace

Phantom render_phantom(const PhantomLabel& label, const Scene& scene, const SynthOptions& options) {
    check_request(label, options);
    cv::Size frame(options.width, options.height);
    Maturity maturity = maturity_at(label.age_months, label.male);
    HandModel hand = build_hand(maturity, scene.shape);
    Placement place = place_hand(hand, scene, maturity, frame);

    Phantom out;
    out.label = label;
    cv::Mat thickness = tissue_map(hand, place, frame);
    // The hand box comes from what was drawn, not from the outlines' formula.
    out.hand_box = cv::boundingRect(thickness >= kInside);

    // Large frames are drawn at a working size and enlarged: a film's unsharpness spans
    // several of their pixels anyway, and this keeps a 1500x2000 phantom fast. Only the
    // detector noise is added at the full size.
    double k = std::min(1.0, double(kWorkingSide) / std::max(frame.width, frame.height));
    cv::Size work_frame = frame;
    Placement work = place;
    if (k < 1.0) {
        work_frame = {int(std::lround(frame.width * k)), int(std::lround(frame.height * k))};
        work.scale *= k;
        work.shift *= k;
        thickness = tissue_map(hand, work, work_frame);
    }

    cv::RNG texture(scene.texture_seed);
    cv::Mat image = background(scene, work_frame, scaled_rect(out.hand_box, k), texture);
    image += soft_tissue(thickness, scene.tissue, work.scale);
    for (const Layer& layer : hand.bones) add_outline(image, layer.outline, scene.bone * layer.value, work);

    std::mt19937_64 spots(scene.texture_seed ^ 0x6d61726b657273ULL);
    for (const MarkerSpec& marker : scene.markers) {
        auto where = place_marker(marker_size(marker, frame), frame, out.hand_box, out.markers, spots);
        if (!where) continue;
        draw_marker(image, marker, scaled_rect(*where, k));
        out.markers.push_back(*where);
    }

    double pixel = std::min(work_frame.width, work_frame.height) / 512.0;
    if (scene.blur > 0) cv::GaussianBlur(image, image, cv::Size(), scene.blur * pixel);
    if (scene.gain != 1.0 || scene.offset != 0.0) image = image * scene.gain + scene.offset;
    if (scene.gamma != 1.0) {
        cv::max(image, 0.0, image);
        cv::pow(image, scene.gamma, image);
    }
    if (k < 1.0) cv::resize(image, image, frame, 0, 0, cv::INTER_LINEAR);
    if (scene.noise > 0 || scene.shot_noise > 0) add_noise(image, scene, texture);
    if (options.bits16)
        image.convertTo(out.image, CV_16UC1, 65535.0);
    else
        image.convertTo(out.image, CV_8UC1, 255.0);
    return out;
}

}  // namespace boneage::synth
