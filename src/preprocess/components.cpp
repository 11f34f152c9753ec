// The hand finder's second and third steps: the foreground mask and the choice of the hand
// among its connected components.
#include "hand_finder_steps.hpp"

#include <opencv2/imgproc.hpp>

#include <algorithm>
#include <cmath>
#include <optional>

namespace boneage::hand_finder {

namespace {

int odd(int k) { return k % 2 == 1 ? k : k + 1; }

}  // namespace

TissueLevels tissue_levels(const Levelled& level, int step) {
    const double k = 4.0 * (1 << std::clamp(step, 0, 16));
    TissueLevels t;
    // Just above the film grain: keeps the thin, faint soft tissue of the fingertips.
    t.faint = level.background + k * level.noise + 1.0;
    // Twice as far above the grain: a component that never gets this bright is film texture,
    // not a hand. (Otsu's split is no guide here: a bright marker drags it far above the
    // bones of a faint hand.)
    t.strong = level.background + 2.0 * k * level.noise + 2.0;
    return t;
}

namespace {

// Fills every hole of every outer contour (the dark gaps inside a closed hand outline).
cv::Mat fill_holes(const cv::Mat& mask) {
    std::vector<std::vector<cv::Point>> contours;
    cv::findContours(mask.clone(), contours, cv::RETR_EXTERNAL, cv::CHAIN_APPROX_SIMPLE);
    cv::Mat filled = cv::Mat::zeros(mask.size(), CV_8UC1);
    cv::drawContours(filled, contours, -1, cv::Scalar(255), cv::FILLED);
    return filled;
}

struct Component {
    cv::Rect box;
    int area = 0;
    double mean = 0.0;          // mean levelled grey inside
    double peak = 0.0;          // brightest levelled grey inside
    bool edge_strip = false;    // a long thin line: a film edge or a scanner border
};

// A long thin line across much of the frame.
bool is_edge_strip(const Component& c, cv::Size frame) {
    const int short_side = std::min(frame.width, frame.height);
    const bool long_across = c.box.width > 0.4 * frame.width || c.box.height > 0.4 * frame.height;
    const double thickness = static_cast<double>(c.area) / std::max(c.box.width, c.box.height);
    return long_across && thickness < 0.03 * short_side;
}

// The 8-connected components of a mask as runs of set pixels along its rows, numbered from 1
// in the order of their first run: what cv::connectedComponentsWithStats labels, found on the
// runs (a few per row) instead of the pixels. The numbering may differ from OpenCV's (which
// scans two rows at a time); nothing here depends on it but the choice between two components
// of exactly equal weight.
struct Runs {
    struct Run {
        int y, x0, x1;  // pixels x0 .. x1 - 1 of row y
        int label;
    };
    std::vector<Run> runs;  // in raster order
    int count = 1;          // labels 0 (the background, no runs) .. count - 1
    std::vector<cv::Rect> boxes;
    std::vector<int> areas;
};

Runs run_components(const cv::Mat& mask) {
    Runs r;
    std::vector<int> parent;
    auto root = [&](int i) {
        while (parent[i] != i) i = parent[i] = parent[parent[i]];
        return i;
    };
    std::size_t previous_begin = 0, previous_end = 0;
    for (int y = 0; y < mask.rows; ++y) {
        const uchar* m = mask.ptr<uchar>(y);
        const std::size_t begin = r.runs.size();
        for (int x = 0; x < mask.cols;) {
            if (!m[x]) {
                ++x;
                continue;
            }
            const int x0 = x;
            while (x < mask.cols && m[x]) ++x;
            const int id = static_cast<int>(r.runs.size());
            r.runs.push_back({y, x0, x, id});
            parent.push_back(id);
            // Runs of the row above that touch this one, diagonally included.
            while (previous_begin < previous_end && r.runs[previous_begin].x1 < x0) ++previous_begin;
            for (std::size_t k = previous_begin; k < previous_end && r.runs[k].x0 <= x; ++k) {
                const int a = root(id), b = root(static_cast<int>(k));
                if (a != b) parent[std::max(a, b)] = std::min(a, b);
            }
        }
        previous_begin = begin;
        previous_end = r.runs.size();
    }
    // Labels in the order of each component's first run; boxes and areas.
    std::vector<int> label_of_root(r.runs.size(), 0);
    r.boxes.assign(1, cv::Rect());
    r.areas.assign(1, 0);
    for (std::size_t k = 0; k < r.runs.size(); ++k) {
        Runs::Run& run = r.runs[k];
        const int top = root(static_cast<int>(k));
        if (label_of_root[top] == 0) {
            label_of_root[top] = r.count++;
            r.boxes.emplace_back(run.x0, run.y, run.x1 - run.x0, 1);
            r.areas.push_back(0);
        }
        run.label = label_of_root[top];
        r.boxes[run.label] |= cv::Rect(run.x0, run.y, run.x1 - run.x0, 1);
        r.areas[run.label] += run.x1 - run.x0;
    }
    return r;
}

// measure() on runs: the sums taken in the same order, pixel by pixel in raster order.
std::vector<Component> measure(const Runs& r, const cv::Mat& levelled) {
    std::vector<Component> parts(r.count);
    std::vector<double> sums(r.count, 0.0);
    for (const Runs::Run& run : r.runs) {
        const float* grey = levelled.ptr<float>(run.y);
        double sum = sums[run.label], peak = parts[run.label].peak;
        for (int x = run.x0; x < run.x1; ++x) {
            sum += grey[x];
            peak = std::max<double>(peak, grey[x]);
        }
        sums[run.label] = sum;
        parts[run.label].peak = peak;
    }
    for (int i = 1; i < r.count; ++i) {
        Component& c = parts[i];
        c.box = r.boxes[i];
        c.area = r.areas[i];
        c.mean = sums[i] / c.area;
        c.edge_strip = is_edge_strip(c, levelled.size());
    }
    return parts;
}

std::vector<Component> measure(const cv::Mat& labels, const cv::Mat& stats, int count,
                               const cv::Mat& levelled) {
    std::vector<Component> parts(count);
    std::vector<double> sums(count, 0.0);
    for (int y = 0; y < labels.rows; ++y) {
        const int* label = labels.ptr<int>(y);
        const float* grey = levelled.ptr<float>(y);
        for (int x = 0; x < labels.cols; ++x) {
            sums[label[x]] += grey[x];
            parts[label[x]].peak = std::max<double>(parts[label[x]].peak, grey[x]);
        }
    }
    for (int i = 0; i < count; ++i) {
        Component& c = parts[i];
        c.box = cv::Rect(stats.at<int>(i, cv::CC_STAT_LEFT), stats.at<int>(i, cv::CC_STAT_TOP),
                         stats.at<int>(i, cv::CC_STAT_WIDTH), stats.at<int>(i, cv::CC_STAT_HEIGHT));
        c.area = stats.at<int>(i, cv::CC_STAT_AREA);
        c.mean = c.area > 0 ? sums[i] / c.area : 0.0;
        c.edge_strip = is_edge_strip(c, labels.size());
    }
    return parts;
}

// Pixels between two boxes along the larger of the two axes; 0 when they overlap.
int gap(const cv::Rect& a, const cv::Rect& b) {
    const int dx = std::max({0, b.x - (a.x + a.width), a.x - (b.x + b.width)});
    const int dy = std::max({0, b.y - (a.y + a.height), a.y - (b.y + b.height)});
    return std::max(dx, dy);
}

// How clearly the chosen region stands out: the separation of the grey levels inside and
// outside (d'), damped when the region is a sliver of the frame.
double confidence_of(const cv::Mat& chosen, const cv::Mat& mask, const Levelled& level) {
    cv::Mat outside;
    cv::bitwise_not(mask, outside);
    cv::Scalar mean_in, sd_in, mean_out, sd_out;
    cv::meanStdDev(level.image, mean_in, sd_in, chosen);
    cv::meanStdDev(level.image, mean_out, sd_out, outside);
    if (cv::countNonZero(outside) == 0) return 0.2;  // nothing but tissue: can't tell
    const double spread = std::sqrt((sd_in[0] * sd_in[0] + sd_out[0] * sd_out[0]) / 2.0) + 1.0;
    const double separation = (mean_in[0] - mean_out[0]) / spread;
    double confidence = std::clamp((separation - 0.5) / 2.5, 0.0, 1.0);
    const double fraction = static_cast<double>(cv::countNonZero(chosen)) / chosen.total();
    if (fraction < 0.02) confidence *= fraction / 0.02;
    return confidence;
}

}  // namespace

int connected_components(const cv::Mat& mask, cv::Mat& labels, cv::Mat& stats, Compute how) {
    if (how == Compute::Reference) {
        cv::Mat centroids;
        return cv::connectedComponentsWithStats(mask, labels, stats, centroids, 8, CV_32S);
    }
    const Runs r = run_components(mask);
    labels = cv::Mat::zeros(mask.size(), CV_32S);
    for (const Runs::Run& run : r.runs)
        std::fill_n(labels.ptr<int>(run.y) + run.x0, run.x1 - run.x0, run.label);
    stats = cv::Mat::zeros(r.count, cv::CC_STAT_MAX, CV_32S);
    stats.at<int>(0, cv::CC_STAT_AREA) = static_cast<int>(mask.total());
    for (int i = 1; i < r.count; ++i) {
        int* s = stats.ptr<int>(i);
        s[cv::CC_STAT_LEFT] = r.boxes[i].x;
        s[cv::CC_STAT_TOP] = r.boxes[i].y;
        s[cv::CC_STAT_WIDTH] = r.boxes[i].width;
        s[cv::CC_STAT_HEIGHT] = r.boxes[i].height;
        s[cv::CC_STAT_AREA] = r.areas[i];
        stats.at<int>(0, cv::CC_STAT_AREA) -= r.areas[i];
    }
    return r.count;
}

cv::Mat foreground_mask(const Levelled& level, const TissueLevels& levels, Compute how) {
    std::optional<StepClock> clock(std::in_place, "m1 threshold, open");
    cv::Mat mask;
    cv::compare(level.image, levels.faint, mask, cv::CMP_GT);

    // The band along the frame edge often holds the bright rim of a scanned film; it is left
    // out here, and a box reaching it is later extended to the edge.
    const int b = level.border;
    mask.rowRange(0, b).setTo(0);
    mask.rowRange(mask.rows - b, mask.rows).setTo(0);
    mask.colRange(0, b).setTo(0);
    mask.colRange(mask.cols - b, mask.cols).setTo(0);

    const int long_side = std::max(mask.cols, mask.rows);
    cv::morphologyEx(mask, mask, cv::MORPH_OPEN,
                     cv::getStructuringElement(cv::MORPH_RECT, cv::Size(3, 3)));
    const int k = odd(std::max(3, static_cast<int>(std::lround(0.015 * long_side))));
    clock.emplace("m2 close");
    const cv::Mat closed = close_ellipse(mask, k, how);
    clock.emplace("m3 fill holes");
    return fill_holes(closed);
}

Selection select_hand(const cv::Mat& mask, const Levelled& level, const TissueLevels& levels,
                      Compute how) {
    std::optional<StepClock> clock(std::in_place, "c1 components");
    // Fast: the components as runs; Reference: OpenCV's labelling, pixel by pixel.
    Runs runs;
    cv::Mat labels, stats, centroids;
    if (how == Compute::Fast)
        runs = run_components(mask);
    else
        runs.count = cv::connectedComponentsWithStats(mask, labels, stats, centroids, 8, CV_32S);
    const int count = runs.count;
    clock.emplace("c2 measure");
    std::vector<Component> parts = how == Compute::Fast
                                       ? measure(runs, level.image)
                                       : measure(labels, stats, count, level.image);
    clock.emplace("c3 choose");
    const double min_area = 0.001 * mask.total();
    // Hysteresis: the hand is a component that reaches the strong level somewhere; fainter
    // components beside it (fingers of a thin, underexposed hand) join it below.
    const double strong = levels.strong;

    // The hand is the component with the largest size times the square root of its contrast:
    // its bones make it outweigh broad, faint shading, and its size a small bright marker
    // (the root keeps a marker's brightness from counting as much as the hand's extent).
    auto weight = [&](const Component& c) {
        return c.area * std::sqrt(std::max(0.0, c.mean - level.background));
    };
    int main = -1;
    for (int i = 1; i < count; ++i)
        if (!parts[i].edge_strip && parts[i].area >= min_area && parts[i].peak >= strong &&
            (main < 0 || weight(parts[i]) > weight(parts[main])))
            main = i;
    if (main < 0) return {};

    // Lead markers and labels are small and much brighter than the hand on average; fingers
    // or a forearm cut off from the palm by the threshold look like the hand and lie beside it.
    const Component& hand = parts[main];
    const double hand_contrast = hand.mean - level.background;
    const cv::Rect inner(level.border + 1, level.border + 1, mask.cols - 2 * level.border - 2,
                         mask.rows - 2 * level.border - 2);
    auto belongs = [&](const Component& c) {
        if (c.edge_strip || c.area < 0.0025 * hand.area) return false;
        // Shading the threshold caught is much fainter than a piece of the hand.
        if (c.mean - level.background < 0.25 * hand_contrast) return false;
        // A small blob on the frame edge is a scanner or film-edge artefact, not a finger.
        const bool on_edge = (c.box & inner) != c.box;
        if (on_edge && c.area < 0.02 * hand.area) return false;
        const bool marker = c.area < 0.2 * hand.area && c.mean - level.background > 1.6 * hand_contrast;
        return !marker;
    };
    std::vector<bool> chosen(count, false);
    chosen[main] = true;
    cv::Rect box = hand.box;
    for (bool grew = true; grew;) {
        grew = false;
        const int reach = static_cast<int>(0.2 * std::max(box.width, box.height));
        for (int i = 1; i < count; ++i)
            if (!chosen[i] && belongs(parts[i]) && gap(box, parts[i].box) <= reach) {
                chosen[i] = grew = true;
                box |= parts[i].box;
            }
    }

    clock.emplace("c4 chosen mask, confidence");
    cv::Mat chosen_mask = cv::Mat::zeros(mask.size(), CV_8UC1);
    if (how == Compute::Fast) {
        for (const Runs::Run& run : runs.runs)
            if (chosen[run.label]) std::fill_n(chosen_mask.ptr<uchar>(run.y) + run.x0, run.x1 - run.x0, 255);
    } else {
        for (int y = 0; y < labels.rows; ++y) {
            const int* label = labels.ptr<int>(y);
            uchar* out = chosen_mask.ptr<uchar>(y);
            for (int x = 0; x < labels.cols; ++x) out[x] = chosen[label[x]] ? 255 : 0;
        }
    }

    // The mask ignores the band along the edge; a hand reaching the band goes on to the edge.
    const int reach_edge = level.border + 1;
    int x0 = box.x, y0 = box.y, x1 = box.x + box.width, y1 = box.y + box.height;
    if (x0 <= reach_edge) x0 = 0;
    if (y0 <= reach_edge) y0 = 0;
    if (x1 >= mask.cols - reach_edge) x1 = mask.cols;
    if (y1 >= mask.rows - reach_edge) y1 = mask.rows;

    Selection found;
    found.box = cv::Rect(cv::Point(x0, y0), cv::Point(x1, y1));
    found.confidence = confidence_of(chosen_mask, mask, level);
    const double chosen_area = cv::countNonZero(chosen_mask);
    found.frame_fraction = chosen_area / std::max(1, cv::countNonZero(level.film));
    found.box_fill = chosen_area / std::max(1, found.box.area());
    return found;
}

}  // namespace boneage::hand_finder
