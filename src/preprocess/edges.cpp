// The hand as an edge cluster. The outline of the soft tissue and of every bone gives sharp
// edges; shading (a gradient, blotches the size of the hand) gives none, so an edge map sees
// through the background that defeats a threshold. What else has sharp edges is either long
// and straight (the rim of a film or of an exposed field, the scanner's bed) and removed, or
// small (lead markers, labels) and outweighed by the hand's many edges.
#include "hand_finder_steps.hpp"

#include <opencv2/imgproc.hpp>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <optional>
#include <vector>

#if defined(__SSE2__)
#include <emmintrin.h>
#endif

namespace boneage::hand_finder {

namespace {

// Canny's thresholds, in grey levels per pixel: above the film grain (a multiple of the median
// gradient, which the background's grain sets) and never below half a grey level per pixel,
// far above what the broadest shading reaches.
constexpr double kGrainMultiple = 4.0;
constexpr double kLeastGradient = 0.5;

// The value std::nth_element puts at `rank` among the pixels of `values` (CV_32F, none
// negative), found without sorting them: a histogram of the values' top bits (a non-negative
// float's bits order as the float does) finds the bucket that holds the rank, and only that
// bucket's values are collected and ordered.
float nth_smallest(const cv::Mat& values, std::size_t rank, Compute how) {
    if (how == Compute::Reference) {
        std::vector<float> all(values.begin<float>(), values.end<float>());
        std::nth_element(all.begin(), all.begin() + rank, all.end());
        return all[rank];
    }
    constexpr int kShift = 18;  // 8,192 buckets over the 31 bits below the sign: 1/32 octave each
    auto key = [](float v) {
        std::uint32_t bits;
        std::memcpy(&bits, &v, sizeof bits);
        return (bits & 0x7fffffffu) >> kShift;
    };
    std::vector<std::uint32_t> counts(std::size_t{1} << (31 - kShift), 0);
    for (int y = 0; y < values.rows; ++y) {
        const float* v = values.ptr<float>(y);
        for (int x = 0; x < values.cols; ++x) ++counts[key(v[x])];
    }
    std::size_t bucket = 0;
    while (rank >= counts[bucket]) rank -= counts[bucket++];
    std::vector<float> within;
    within.reserve(counts[bucket]);
    for (int y = 0; y < values.rows; ++y) {
        const float* v = values.ptr<float>(y);
        for (int x = 0; x < values.cols; ++x)
            if (key(v[x]) == bucket) within.push_back(v[x]);
    }
    std::nth_element(within.begin(), within.begin() + rank, within.end());
    return within[rank];
}

cv::Mat edge_map(const cv::Mat& grey, Compute how) {
    cv::Mat dx, dy, magnitude;
    cv::Sobel(grey, dx, CV_32F, 1, 0, 3);
    cv::Sobel(grey, dy, CV_32F, 0, 1, 3);
    cv::magnitude(dx, dy, magnitude);
    const float median = nth_smallest(magnitude, magnitude.total() / 2, how);
    // A 3x3 Sobel kernel reads a ramp of one grey level per pixel as 8.
    const double low = std::max(8.0 * kLeastGradient, kGrainMultiple * median);
    // Canny wants 16-bit derivatives; a factor of 4 keeps sub-grey-level precision.
    cv::Mat dx16, dy16, edges;
    dx.convertTo(dx16, CV_16S, 4.0);
    dy.convertTo(dy16, CV_16S, 4.0);
    cv::Canny(dx16, dy16, edges, 4.0 * low, 8.0 * low, true);
    // The frame's own edge is not the hand's.
    const int b = 2;
    edges.rowRange(0, b).setTo(0);
    edges.rowRange(edges.rows - b, edges.rows).setTo(0);
    edges.colRange(0, b).setTo(0);
    edges.colRange(edges.cols - b, edges.cols).setTo(0);
    return edges;
}

// Erases straight edges longer than a quarter of the frame: film and field rims, scanner
// beds, rulers. No edge of a hand is that long and that straight.
void erase_long_lines(cv::Mat& edges, Compute how) {
    const int length = std::max(edges.cols, edges.rows) / 4;
    std::vector<cv::Vec4i> lines;
    if (how == Compute::Reference)
        cv::HoughLinesP(edges, lines, 1, CV_PI / 360, length / 2, length, 3);
    else
        lines = hough_segments(edges, CV_PI / 360, length / 2, length, 3);
    for (const cv::Vec4i& l : lines)
        cv::line(edges, {l[0], l[1]}, {l[2], l[3]}, cv::Scalar(0), 3);
}

struct Clusters {
    cv::Mat labels, stats;
    int count = 0;
    std::vector<int> edge_pixels;   // per cluster
    std::vector<bool> rim;          // a film's or field's rim (maybe with the hand inside)
};

// Whether the edges of cluster `i` run along at least two sides of its own box, the way a
// rectangle's rim does; a hand touches its box only at a few extreme points.
bool runs_along_box(const Clusters& c, const cv::Mat& edges, int i) {
    const cv::Rect box(c.stats.at<int>(i, cv::CC_STAT_LEFT), c.stats.at<int>(i, cv::CC_STAT_TOP),
                       c.stats.at<int>(i, cv::CC_STAT_WIDTH), c.stats.at<int>(i, cv::CC_STAT_HEIGHT));
    const int band = std::max(3, static_cast<int>(0.03 * std::max(box.width, box.height)));
    std::array<std::vector<char>, 4> covered = {std::vector<char>(box.width, 0),
                                                std::vector<char>(box.width, 0),
                                                std::vector<char>(box.height, 0),
                                                std::vector<char>(box.height, 0)};
    for (int y = box.y; y < box.br().y; ++y) {
        const int* label = c.labels.ptr<int>(y);
        const uchar* edge = edges.ptr<uchar>(y);
        for (int x = box.x; x < box.br().x; ++x) {
            if (label[x] != i || !edge[x]) continue;
            if (y - box.y < band) covered[0][x - box.x] = 1;
            if (box.br().y - 1 - y < band) covered[1][x - box.x] = 1;
            if (x - box.x < band) covered[2][y - box.y] = 1;
            if (box.br().x - 1 - x < band) covered[3][y - box.y] = 1;
        }
    }
    int sides = 0;
    for (const std::vector<char>& side : covered)
        if (std::count(side.begin(), side.end(), 1) > 0.7 * side.size()) ++sides;
    return sides >= 2;
}

// Clusters of edges, closed over the gaps of a joint or a faint stretch of outline.
Clusters cluster(const cv::Mat& edges, int closing, Compute how) {
    Clusters c;
    const cv::Mat closed = close_ellipse(edges, closing, how);
    c.count = connected_components(closed, c.labels, c.stats, how);
    c.edge_pixels.assign(c.count, 0);
    for (int y = 0; y < edges.rows; ++y) {
        const int* label = c.labels.ptr<int>(y);
        const uchar* edge = edges.ptr<uchar>(y);
        for (int x = 0; x < edges.cols; ++x)
            if (edge[x]) ++c.edge_pixels[label[x]];
    }
    c.rim.assign(c.count, false);
    for (int i = 1; i < c.count; ++i) {
        const bool large = c.stats.at<int>(i, cv::CC_STAT_WIDTH) > 0.3 * edges.cols ||
                           c.stats.at<int>(i, cv::CC_STAT_HEIGHT) > 0.3 * edges.rows;
        c.rim[i] = large && runs_along_box(c, edges, i);
    }
    return c;
}

// Removes the edges of each rim cluster that lie in the band along its box: the rim itself,
// and what closed onto it. A hand lying on the film stays, now apart from the rim.
bool strip_rims(cv::Mat& edges, const Clusters& c, int closing) {
    bool stripped = false;
    for (int i = 1; i < c.count; ++i) {
        if (!c.rim[i]) continue;
        const cv::Rect box(c.stats.at<int>(i, cv::CC_STAT_LEFT), c.stats.at<int>(i, cv::CC_STAT_TOP),
                           c.stats.at<int>(i, cv::CC_STAT_WIDTH), c.stats.at<int>(i, cv::CC_STAT_HEIGHT));
        const int band = std::max(3, static_cast<int>(0.03 * std::max(box.width, box.height))) + closing;
        cv::Mat rim = c.labels == i;
        const cv::Rect inner(box.x + band, box.y + band, box.width - 2 * band, box.height - 2 * band);
        if (inner.width > 0 && inner.height > 0) rim(inner).setTo(0);
        edges.setTo(0, rim);
        stripped = true;
    }
    return stripped;
}

}  // namespace

// OpenCV's probabilistic Hough transform (HoughLinesProbabilistic in imgproc/src/hough.cpp,
// 4.x) visits the edge pixels in the order of an RNG seeded with ~0; each pixel still on the
// mask votes in all its (angle, distance) cells, and when one of them reaches `threshold` the
// line through it is walked, its pixels leave the mask and, for a long enough segment, their
// votes are withdrawn. Its cost is the voting: one cell per angle per pixel, each in another
// row of an accumulator megabytes large.
//
// Here the same votes are cast in the same order and the same walks taken, so the segments are
// OpenCV's to the pixel; what differs is the bookkeeping. The counts are 16-bit and stored so
// that neighbouring angles share cache lines (half the memory, and far fewer lines, to miss
// in), a pixel's 360 cells are computed four at a time with the same float arithmetic
// (products and a sum in float, each rounded as OpenCV's plain SSE2 build rounds them: no
// fused multiply-add), and the highest count is looked for after all of its votes.
std::vector<cv::Vec4i> hough_segments(const cv::Mat& edges, double theta_step, int threshold,
                                      int min_length, int max_gap) {
    CV_Assert(edges.type() == CV_8UC1);
    const int width = edges.cols, height = edges.rows;
    const float theta = static_cast<float>(theta_step);  // cv::HoughLinesP passes it as float
    const double step = theta;                           // OpenCV's computeNumangle(0, pi, theta)
    int numangle = cvFloor(CV_PI / step) + 1;
    if (numangle > 1 && std::fabs(CV_PI - (numangle - 1) * step) < step / 2) --numangle;
    const int numrho = cvRound((width + height) * 2 + 1);
    const int offset = (numrho - 1) / 2;
    std::vector<float> cosines(numangle), sines(numangle);
    for (int n = 0; n < numangle; ++n) {
        cosines[n] = static_cast<float>(std::cos(static_cast<double>(n) * theta));
        sines[n] = static_cast<float>(std::sin(static_cast<double>(n) * theta));
    }

    // The edge pixels in row order, as OpenCV collects them; `mask` says which are still free.
    std::vector<cv::Point> points;
    cv::Mat mask(height, width, CV_8UC1);
    for (int y = 0; y < height; ++y) {
        const uchar* e = edges.ptr<uchar>(y);
        uchar* m = mask.ptr<uchar>(y);
        for (int x = 0; x < width; ++x) {
            m[x] = e[x] ? 1 : 0;
            if (e[x]) points.emplace_back(x, y);
        }
    }
    const int count = static_cast<int>(points.size());
    std::vector<cv::Vec4i> lines;
    if (count < threshold) return lines;  // no cell can reach the threshold

    // The accumulator in 16 bits: a cell holds at most the edge pixels on one line, far fewer
    // than 32,767.
    const int padded = (numangle + 3) / 4 * 4;
    std::vector<float> cos_pad(padded, 0.0f), sin_pad(padded, 0.0f);
    std::copy(cosines.begin(), cosines.end(), cos_pad.begin());
    std::copy(sines.begin(), sines.end(), sin_pad.begin());
    // Cell (n, r) lies at ((n / 8) * numrho + r) * 8 + n % 8: a pixel's distances change by a
    // few cells from one angle to the next, so its votes at eight neighbouring angles fall in
    // a few cache lines instead of eight.
    constexpr int kGroupShift = 3;
    constexpr int kGroup = 1 << kGroupShift;
    std::vector<std::int16_t> accum(static_cast<std::size_t>(numangle + kGroup) * numrho, 0);
    std::vector<int> cell(padded), row_offset(padded, 0);
    for (int n = 0; n < numangle; ++n)
        row_offset[n] = ((n / kGroup) * numrho + offset) * kGroup + n % kGroup;
    // cell[n]: the pixel's cell at angle n, as an index into `accum`.
    auto cells_of = [&](int x, int y) {
        const float fx = static_cast<float>(x), fy = static_cast<float>(y);
        int n = 0;
#if defined(__SSE2__)
        const __m128 vx = _mm_set1_ps(fx), vy = _mm_set1_ps(fy);
        for (; n + 4 <= padded; n += 4) {
            const __m128 rho = _mm_add_ps(_mm_mul_ps(vx, _mm_loadu_ps(&cos_pad[n])),
                                          _mm_mul_ps(vy, _mm_loadu_ps(&sin_pad[n])));
            const __m128i base = _mm_loadu_si128(reinterpret_cast<const __m128i*>(&row_offset[n]));
            _mm_storeu_si128(reinterpret_cast<__m128i*>(&cell[n]),
                             _mm_add_epi32(_mm_slli_epi32(_mm_cvtps_epi32(rho), kGroupShift), base));
        }
#endif
        for (; n < numangle; ++n)
            cell[n] = cvRound(fx * cosines[n] + fy * sines[n]) * kGroup + row_offset[n];
    };

    std::vector<int> order(count);
    for (int i = 0; i < count; ++i) order[i] = i;
    cv::RNG rng(static_cast<uint64>(-1));
    uchar* mdata0 = mask.ptr<uchar>();
    const int shift = 16;
    for (int left = count; left > 0; --left) {
        const int idx = rng.uniform(0, left);
        const int index = order[idx];
        order[idx] = order[left - 1];
        const int i = points[index].y, j = points[index].x;
        if (!mdata0[i * width + j]) continue;

        cells_of(j, i);
        int top = 0;
        for (int n = 0; n < numangle; ++n) top = std::max(top, static_cast<int>(++accum[cell[n]]));
        if (top < threshold) continue;
        // OpenCV keeps the first angle whose count beats all before it and the threshold.
        int max_n = 0;
        while (accum[cell[max_n]] != top) ++max_n;

        // From here on OpenCV's walk, step for step.
        const float a = -sines[max_n], b = cosines[max_n];
        int x0 = j, y0 = i, dx0, dy0;
        bool xflag;
        if (std::fabs(a) > std::fabs(b)) {
            xflag = true;
            dx0 = a > 0 ? 1 : -1;
            dy0 = cvRound(b * (1 << shift) / std::fabs(a));
            y0 = (y0 << shift) + (1 << (shift - 1));
        } else {
            xflag = false;
            dy0 = b > 0 ? 1 : -1;
            dx0 = cvRound(a * (1 << shift) / std::fabs(b));
            x0 = (x0 << shift) + (1 << (shift - 1));
        }
        cv::Point line_end[2];
        for (int k = 0; k < 2; ++k) {
            int gap = 0, x = x0, y = y0, dx = k > 0 ? -dx0 : dx0, dy = k > 0 ? -dy0 : dy0;
            for (;; x += dx, y += dy) {
                const int j1 = xflag ? x : x >> shift, i1 = xflag ? y >> shift : y;
                if (j1 < 0 || j1 >= width || i1 < 0 || i1 >= height) break;
                if (mdata0[i1 * width + j1]) {
                    gap = 0;
                    line_end[k] = cv::Point(j1, i1);
                } else if (++gap > max_gap) {
                    break;
                }
            }
        }
        const bool good_line = std::abs(line_end[1].x - line_end[0].x) >= min_length ||
                               std::abs(line_end[1].y - line_end[0].y) >= min_length;
        for (int k = 0; k < 2; ++k) {
            int x = x0, y = y0, dx = k > 0 ? -dx0 : dx0, dy = k > 0 ? -dy0 : dy0;
            for (;; x += dx, y += dy) {
                const int j1 = xflag ? x : x >> shift, i1 = xflag ? y >> shift : y;
                uchar* m = mdata0 + i1 * width + j1;
                if (*m) {
                    if (good_line) {
                        cells_of(j1, i1);
                        for (int n = 0; n < numangle; ++n) --accum[cell[n]];
                    }
                    *m = 0;
                }
                if (i1 == line_end[k].y && j1 == line_end[k].x) break;
            }
        }
        if (good_line)
            lines.emplace_back(line_end[0].x, line_end[0].y, line_end[1].x, line_end[1].y);
    }
    return lines;
}


// A Gaussian of 0.3% of the longer side: the film grain averaged out, the hand's outline kept.
cv::Mat smoothed_copy(const cv::Mat& small) {
    cv::Mat grey;
    small.convertTo(grey, CV_32F);
    const double sigma = std::max(1.0, 0.003 * std::max(small.cols, small.rows));
    cv::GaussianBlur(grey, grey, cv::Size(), sigma, sigma, cv::BORDER_REPLICATE);
    return grey;
}

EdgeCore find_edge_core(const cv::Mat& small, Compute how) {
    const int long_side = std::max(small.cols, small.rows);
    EdgeCore core;
    std::optional<StepClock> clock(std::in_place, "e1 smoothed copy");
    core.smoothed = smoothed_copy(small);
    clock.emplace("e2 edge map");
    cv::Mat edges = edge_map(core.smoothed, how);
    clock.emplace("e3 long lines (Hough)");
    erase_long_lines(edges, how);
    clock.emplace("e4 clusters");
    const int closing = std::max(3, static_cast<int>(0.012 * long_side)) | 1;
    Clusters c = cluster(edges, closing, how);
    if (strip_rims(edges, c, closing)) c = cluster(edges, closing, how);
    clock.emplace("e5 choose");
    if (how == Compute::Reference) core.smoothed.release();

    int best = -1;
    for (int i = 1; i < c.count; ++i)
        if (!c.rim[i] && (best < 0 || c.edge_pixels[i] > c.edge_pixels[best])) best = i;
    if (best < 0) return core;
    core.box = cv::Rect(c.stats.at<int>(best, cv::CC_STAT_LEFT), c.stats.at<int>(best, cv::CC_STAT_TOP),
                        c.stats.at<int>(best, cv::CC_STAT_WIDTH),
                        c.stats.at<int>(best, cv::CC_STAT_HEIGHT));
    core.chosen = c.labels == best;
    core.strength = static_cast<double>(c.edge_pixels[best]) / long_side;
    for (int i = 1; i < c.count; ++i) {
        const double share = static_cast<double>(c.edge_pixels[i]) / c.edge_pixels[best];
        if (i != best && !c.rim[i] && share >= 0.1)
            core.rivals.emplace_back(
                cv::Rect(c.stats.at<int>(i, cv::CC_STAT_LEFT), c.stats.at<int>(i, cv::CC_STAT_TOP),
                         c.stats.at<int>(i, cv::CC_STAT_WIDTH), c.stats.at<int>(i, cv::CC_STAT_HEIGHT)),
                share);
    }
    return core;
}

}  // namespace boneage::hand_finder
