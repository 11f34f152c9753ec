// Morphology by OpenCV's elliptic structuring element, the same pixels as cv::dilate and
// cv::erode give, at a fraction of their cost. OpenCV applies a non-rectangular element
// pixel by pixel over its whole area (31 x 31 for the background's growth on a 512-pixel copy);
// an ellipse is a stack of centred horizontal runs, so the result is the maximum (minimum) over
// its rows of the image dilated (eroded) along x by that row's run, shifted by the row's
// offset: one pass per distinct run length and one per row, each a vectorised whole-row max.
#include "hand_finder_steps.hpp"

#include <opencv2/imgproc.hpp>

#include <algorithm>
#include <vector>

namespace boneage::hand_finder {

namespace {

void combine(const cv::Mat& a, const cv::Mat& b, cv::Mat& out, bool dilate) {
    if (dilate)
        cv::max(a, b, out);
    else
        cv::min(a, b, out);
}

// The half-width of each row's run of `element`, or an empty vector when a row is not one
// centred run (then the fast path does not apply). A row without any pixel has half-width -1.
std::vector<int> run_half_widths(const cv::Mat& element) {
    const int centre = element.cols / 2;
    std::vector<int> half(element.rows, -1);
    for (int y = 0; y < element.rows; ++y) {
        const uchar* row = element.ptr<uchar>(y);
        int first = -1, last = -1, count = 0;
        for (int x = 0; x < element.cols; ++x)
            if (row[x]) {
                if (first < 0) first = x;
                last = x;
                ++count;
            }
        if (count == 0) continue;
        if (count != last - first + 1 || centre - first != last - centre) return {};
        half[y] = centre - first;
    }
    return half;
}

// runs[h]: `src` dilated (eroded) along x by a run of 2h + 1 pixels, each from the one before
// by one pixel on either side. Pixels beyond the frame take no part, as with OpenCV's default
// border for morphology.
std::vector<cv::Mat> horizontal_runs(const cv::Mat& src, int widest, bool dilate) {
    std::vector<cv::Mat> runs{src};
    const int w = src.cols;
    for (int h = 1; h <= widest; ++h) {
        const cv::Mat& previous = runs.back();
        cv::Mat next(src.size(), CV_8UC1);
        for (int y = 0; y < src.rows; ++y) {
            const uchar* p = previous.ptr<uchar>(y);
            uchar* n = next.ptr<uchar>(y);
            n[0] = p[0];
            n[w - 1] = p[w - 1];
            for (int x = 1; x < w - 1; ++x)  // the compiler vectorises this
                n[x] = dilate ? std::max({p[x - 1], p[x], p[x + 1]})
                              : std::min({p[x - 1], p[x], p[x + 1]});
            if (w > 1) {
                n[0] = dilate ? std::max(p[0], p[1]) : std::min(p[0], p[1]);
                n[w - 1] = dilate ? std::max(p[w - 2], p[w - 1]) : std::min(p[w - 2], p[w - 1]);
            }
        }
        runs.push_back(next);
    }
    return runs;
}

cv::Mat ellipse_morphology(const cv::Mat& src, int size, bool dilate) {
    CV_Assert(src.type() == CV_8UC1);
    const cv::Mat element = cv::getStructuringElement(cv::MORPH_ELLIPSE, cv::Size(size, size));
    const std::vector<int> half = run_half_widths(element);
    if (half.empty() || src.empty()) {  // not a stack of centred runs: OpenCV's own way
        cv::Mat out;
        if (dilate)
            cv::dilate(src, out, element);
        else
            cv::erode(src, out, element);
        return out;
    }
    const std::vector<cv::Mat> runs =
        horizontal_runs(src, *std::max_element(half.begin(), half.end()), dilate);
    const int centre = element.rows / 2;
    cv::Mat out = runs[half[centre]].clone();
    for (int i = 0; i < element.rows; ++i) {
        const int dy = i - centre;
        if (dy == 0 || half[i] < 0) continue;
        // Output row y takes the run of row y + dy, where that row is inside the frame.
        const int y0 = std::max(0, -dy), y1 = std::min(src.rows, src.rows - dy);
        if (y0 >= y1) continue;
        cv::Mat target = out.rowRange(y0, y1);
        combine(target, runs[half[i]].rowRange(y0 + dy, y1 + dy), target, dilate);
    }
    return out;
}

}  // namespace

cv::Mat dilate_ellipse(const cv::Mat& mask, int size, Compute how) {
    if (how == Compute::Reference) {
        cv::Mat out;
        cv::dilate(mask, out, cv::getStructuringElement(cv::MORPH_ELLIPSE, cv::Size(size, size)));
        return out;
    }
    return ellipse_morphology(mask, size, true);
}

cv::Mat close_ellipse(const cv::Mat& mask, int size, Compute how) {
    if (how == Compute::Reference) {
        cv::Mat out;
        cv::morphologyEx(mask, out, cv::MORPH_CLOSE,
                         cv::getStructuringElement(cv::MORPH_ELLIPSE, cv::Size(size, size)));
        return out;
    }
    return ellipse_morphology(ellipse_morphology(mask, size, true), size, false);
}

}  // namespace boneage::hand_finder
