#include "synth/outline.hpp"

#include <opencv2/imgproc.hpp>

#include <algorithm>
#include <cmath>

namespace boneage::synth {

namespace {
constexpr double kPi = 3.14159265358979323846;

// Half width at t in [0, 1] along the bone: the ends flare over their outer third.
double half_width(const BoneProfile& p, double t) {
    double near_proximal = std::max(0.0, 1.0 - t / 0.35);
    double near_distal = std::max(0.0, (t - 0.65) / 0.35);
    return p.waist + (p.proximal - p.waist) * near_proximal * near_proximal +
           (p.distal - p.waist) * near_distal * near_distal;
}
}  // namespace

cv::Point2d ray_direction(double angle) { return {std::sin(angle), -std::cos(angle)}; }

Outline long_outline(cv::Point2d a, cv::Point2d b, const BoneProfile& p) {
    cv::Point2d axis = b - a;
    double length = std::hypot(axis.x, axis.y);
    if (length <= 0.0) return {};
    cv::Point2d u = axis / length;
    cv::Point2d n(-u.y, u.x);
    // The caps take part of the length, so the outline spans exactly a..b.
    double cap_a = std::min(p.roundness * p.proximal, 0.45 * length);
    double cap_b = std::min(p.roundness * p.distal, 0.45 * length);
    cv::Point2d start = a + u * cap_a;
    double straight = length - cap_a - cap_b;
    const int sides = 14, cap = 9;
    Outline out;
    out.reserve(2 * (sides + cap));
    for (int i = 0; i <= sides; ++i) {
        double t = double(i) / sides;
        out.push_back(start + u * (t * straight) + n * half_width(p, t));
    }
    cv::Point2d end = start + u * straight;
    for (int i = 1; i < cap; ++i) {
        double th = kPi * i / cap;
        out.push_back(end + n * (p.distal * std::cos(th)) + u * (cap_b * std::sin(th)));
    }
    for (int i = sides; i >= 0; --i) {
        double t = double(i) / sides;
        out.push_back(start + u * (t * straight) - n * half_width(p, t));
    }
    for (int i = 1; i < cap; ++i) {
        double th = kPi * i / cap;
        out.push_back(start - n * (p.proximal * std::cos(th)) - u * (cap_a * std::sin(th)));
    }
    return out;
}

Outline blob_outline(cv::Point2d c, double rx, double ry, double axis_angle, double power) {
    const int steps = 36;
    double ca = std::cos(axis_angle), sa = std::sin(axis_angle);
    double e = 2.0 / power;
    Outline out;
    out.reserve(steps);
    for (int i = 0; i < steps; ++i) {
        double th = 2.0 * kPi * i / steps;
        double cx = std::cos(th), sy = std::sin(th);
        double x = rx * std::copysign(std::pow(std::abs(cx), e), cx);
        double y = ry * std::copysign(std::pow(std::abs(sy), e), sy);
        out.emplace_back(c.x + x * ca - y * sa, c.y + x * sa + y * ca);
    }
    return out;
}

Outline hull_outline(const std::vector<cv::Point2d>& points) {
    std::vector<cv::Point2f> in(points.begin(), points.end()), hull;
    cv::convexHull(in, hull);
    return Outline(hull.begin(), hull.end());
}

}  // namespace boneage::synth
