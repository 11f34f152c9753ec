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
#include <vector>

namespace boneage::hand_finder {

namespace {

// Canny's thresholds, in grey levels per pixel: above the film grain (a multiple of the median
// gradient, which the background's grain sets) and never below half a grey level per pixel,
// far above what the broadest shading reaches.
constexpr double kGrainMultiple = 4.0;
constexpr double kLeastGradient = 0.5;

cv::Mat edge_map(const cv::Mat& grey) {
    cv::Mat dx, dy, magnitude;
    cv::Sobel(grey, dx, CV_32F, 1, 0, 3);
    cv::Sobel(grey, dy, CV_32F, 0, 1, 3);
    cv::magnitude(dx, dy, magnitude);
    std::vector<float> values(magnitude.begin<float>(), magnitude.end<float>());
    std::nth_element(values.begin(), values.begin() + values.size() / 2, values.end());
    // A 3x3 Sobel kernel reads a ramp of one grey level per pixel as 8.
    const double low = std::max(8.0 * kLeastGradient, kGrainMultiple * values[values.size() / 2]);
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
void erase_long_lines(cv::Mat& edges) {
    const int length = std::max(edges.cols, edges.rows) / 4;
    std::vector<cv::Vec4i> lines;
    cv::HoughLinesP(edges, lines, 1, CV_PI / 360, length / 2, length, 3);
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
    cv::Mat centroids;
    const cv::Mat closed = close_ellipse(edges, closing, how);
    c.count = cv::connectedComponentsWithStats(closed, c.labels, c.stats, centroids, 8, CV_32S);
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
    core.smoothed = smoothed_copy(small);
    cv::Mat edges = edge_map(core.smoothed);
    erase_long_lines(edges);
    const int closing = std::max(3, static_cast<int>(0.012 * long_side)) | 1;
    Clusters c = cluster(edges, closing, how);
    if (strip_rims(edges, c, closing)) c = cluster(edges, closing, how);
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
