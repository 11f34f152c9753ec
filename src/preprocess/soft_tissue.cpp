// From the hand's edge cluster to its whole extent. The edges miss stretches of faint soft
// tissue (a fingertip beyond its last bone, a thin palm edge); the tissue is found instead as
// what stands above the background right around the hand. That background is a plane fitted
// to a ring just outside the cluster: near enough that blotchy shading is nearly flat across
// it, and robust to the markers and film rims that fall in it.
#include "hand_finder_steps.hpp"

#include <opencv2/imgproc.hpp>

#include <algorithm>
#include <cmath>
#include <optional>
#include <vector>

namespace boneage::hand_finder {

namespace {

// The ring spans 3% to 8% of the cluster's longer side beyond its box; the tissue is looked
// for up to 25% beyond it.
constexpr double kRingInner = 0.03, kRingOuter = 0.08, kWindow = 0.25;

// Tissue stands above the background plane by 30% of the cluster's median height above it
// (the cluster holds bone and the tissue around it) and by three times the ring's spread.
constexpr double kTissueShare = 0.3, kSpreads = 3.0;

cv::Rect grown(const cv::Rect& r, double fraction, cv::Size frame) {
    const int d = static_cast<int>(std::ceil(fraction * std::max(r.width, r.height)));
    return cv::Rect(r.x - d, r.y - d, r.width + 2 * d, r.height + 2 * d) &
           cv::Rect(0, 0, frame.width, frame.height);
}

double median_of(std::vector<float> v) {
    if (v.empty()) return 0.0;
    std::nth_element(v.begin(), v.begin() + v.size() / 2, v.end());
    return v[v.size() / 2];
}

// A plane a + b x + c y, coordinates relative to `origin` and in units of `scale` pixels.
struct Plane {
    cv::Point origin;
    double scale = 1.0;
    double a = 0.0, b = 0.0, c = 0.0;
    double spread = 1.0;  // robust sigma of the fitted pixels about the plane

    double at(int x, int y) const {
        return a + b * (x - origin.x) / scale + c * (y - origin.y) / scale;
    }
};

// Least squares on the ring's pixels, refitted without those more than 2.5 sigma away (a
// marker, a film rim, a finger that reached the ring).
Plane fit_ring(const cv::Mat& grey, const cv::Rect& inner, const cv::Rect& outer, Plane plane) {
    std::vector<cv::Point> points;
    for (int y = outer.y; y < outer.br().y; y += 2)
        for (int x = outer.x; x < outer.br().x; x += 2)
            if (!inner.contains({x, y})) points.emplace_back(x, y);
    std::vector<bool> kept(points.size(), true);
    for (int round = 0; round < 4; ++round) {
        // The kept points' rows written in place (appending row by row cost more than the solve).
        const int rows = static_cast<int>(std::count(kept.begin(), kept.end(), true));
        cv::Mat a(rows, 3, CV_64F), b(rows, 1, CV_64F);
        int row = 0;
        for (std::size_t i = 0; i < points.size(); ++i) {
            if (!kept[i]) continue;
            const cv::Point& p = points[i];
            double* r = a.ptr<double>(row);
            r[0] = 1.0;
            r[1] = (p.x - plane.origin.x) / plane.scale;
            r[2] = (p.y - plane.origin.y) / plane.scale;
            b.at<double>(row) = static_cast<double>(grey.at<float>(p));
            ++row;
        }
        if (a.rows < 10) break;
        cv::Mat coefficients;
        cv::solve(a, b, coefficients, cv::DECOMP_SVD);
        plane.a = coefficients.at<double>(0);
        plane.b = coefficients.at<double>(1);
        plane.c = coefficients.at<double>(2);
        std::vector<float> deviations(points.size());
        for (std::size_t i = 0; i < points.size(); ++i)
            deviations[i] = static_cast<float>(
                std::abs(grey.at<float>(points[i]) - plane.at(points[i].x, points[i].y)));
        plane.spread = std::max(0.5, 1.4826 * median_of(deviations));
        for (std::size_t i = 0; i < points.size(); ++i)
            kept[i] = deviations[i] < 2.5 * plane.spread;
    }
    return plane;
}

}  // namespace

cv::Rect grow_soft_tissue(const cv::Mat& small, const EdgeCore& core, Compute how) {
    const int long_side = std::max(small.cols, small.rows);
    // The edge finder smoothed the copy the same way: its copy is read, not made again.
    const cv::Mat grey = how == Compute::Fast && !core.smoothed.empty() ? core.smoothed
                                                                       : smoothed_copy(small);

    std::optional<StepClock> clock(std::in_place, "t1 ring plane");
    Plane plane;
    plane.origin = core.box.tl();
    plane.scale = long_side;
    plane = fit_ring(grey, grown(core.box, kRingInner, small.size()),
                     grown(core.box, kRingOuter, small.size()), plane);

    clock.emplace("t2 above the plane");
    const cv::Rect window = grown(core.box, kWindow, small.size());
    cv::Mat above(small.size(), CV_32F, cv::Scalar(0));
    if (how == Compute::Fast) {
        // plane.at(x, y) is a + x's term + y's term, added in that order: the terms are worked
        // out once per column and once per row, not once per pixel.
        std::vector<double> along_x(window.width);
        for (int x = window.x; x < window.br().x; ++x)
            along_x[x - window.x] = plane.b * (x - plane.origin.x) / plane.scale;
        for (int y = window.y; y < window.br().y; ++y) {
            const double along_y = plane.c * (y - plane.origin.y) / plane.scale;
            const float* g = grey.ptr<float>(y) + window.x;
            float* out = above.ptr<float>(y) + window.x;
            for (int i = 0; i < window.width; ++i)
                out[i] = g[i] - static_cast<float>(plane.a + along_x[i] + along_y);
        }
    } else {
        for (int y = window.y; y < window.br().y; ++y)
            for (int x = window.x; x < window.br().x; ++x)
                above.at<float>(y, x) = grey.at<float>(y, x) - static_cast<float>(plane.at(x, y));
    }
    std::vector<float> cluster;
    for (int y = core.box.y; y < core.box.br().y; ++y)
        for (int x = core.box.x; x < core.box.br().x; ++x)
            if (core.chosen.at<uchar>(y, x)) cluster.push_back(above.at<float>(y, x));
    const double level = std::max(kSpreads * plane.spread, kTissueShare * median_of(cluster));

    clock.emplace("t3 tissue components");
    const int closing = std::max(3, static_cast<int>(0.012 * long_side)) | 1;
    const cv::Mat tissue = close_ellipse((above > level) | core.chosen, closing, how);
    cv::Mat labels, stats;
    const int count = connected_components(tissue, labels, stats, how);
    std::vector<bool> joined(count, false);
    for (int y = core.box.y; y < core.box.br().y; ++y)
        for (int x = core.box.x; x < core.box.br().x; ++x)
            if (core.chosen.at<uchar>(y, x)) joined[labels.at<int>(y, x)] = true;
    cv::Rect box = core.box;
    for (int i = 1; i < count; ++i)
        if (joined[i])
            box |= cv::Rect(stats.at<int>(i, cv::CC_STAT_LEFT), stats.at<int>(i, cv::CC_STAT_TOP),
                            stats.at<int>(i, cv::CC_STAT_WIDTH), stats.at<int>(i, cv::CC_STAT_HEIGHT));
    return box;
}

}  // namespace boneage::hand_finder
