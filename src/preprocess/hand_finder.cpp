// The classical hand finder. On a downscaled copy: level the background (a smooth surface
// fitted around the tissue), threshold just above the film grain, close the gaps between
// fingers, and keep the largest component that is neither a lead marker nor a film edge, with
// the pieces of hand beside it. A ladder of higher thresholds handles shading the levelling
// missed; a rectangular result (an exposed field, a film on a scanner bed) is searched again
// inside; a median-levelled second opinion is asked when nothing hand-like was found. It errs
// on the large side: a box with some background costs a little resolution, a box that cuts
// off a fingertip or the wrist loses bones the age is read from.
//
// Blotchy shading and films on a scanner bed make that box far too large, so an edge finder
// (edges.cpp, soft_tissue.cpp) gives a second, tight box: the hand's edge cluster grown into
// the soft tissue above the background just around it. It is taken only when it looks like a
// whole hand and lies inside the threshold box, with no large cluster of edges (fingers, a
// thumb) left out of it; otherwise the threshold box stands.
#include "hand_finder_steps.hpp"

#include <boneage/error.hpp>
#include <boneage/preprocess.hpp>

#include <opencv2/imgproc.hpp>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <optional>

namespace boneage {

namespace hand_finder {

namespace {

thread_local StepClock::Totals* recording = nullptr;

}  // namespace

double thread_cpu_ms() {
    timespec t{};
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
    return t.tv_sec * 1e3 + t.tv_nsec * 1e-6;
}

StepClock::Recording::Recording(Totals& totals) : previous_(recording) { recording = &totals; }
StepClock::Recording::~Recording() { recording = previous_; }

StepClock::StepClock(const char* step) : step_(step) {
    if (recording) start_ms_ = thread_cpu_ms();
}

StepClock::~StepClock() {
    if (recording) (*recording)[step_] += thread_cpu_ms() - start_ms_;
}

}  // namespace hand_finder

namespace {

using namespace hand_finder;

HandBox full_frame(const cv::Mat& grey, std::vector<std::string> warnings) {
    HandBox hand;
    hand.box = cv::Rect(0, 0, grey.cols, grey.rows);
    hand.method = "full-frame";
    hand.confidence = 0.0;
    warnings.emplace_back("no hand found; kept the whole image");
    hand.warnings = std::move(warnings);
    return hand;
}

// `box` on the detection copy, back in original pixels, rounded outwards.
cv::Rect to_original(const cv::Rect& box, double scale, cv::Size original) {
    const int x0 = static_cast<int>(std::floor(box.x / scale));
    const int y0 = static_cast<int>(std::floor(box.y / scale));
    const int x1 = static_cast<int>(std::ceil((box.x + box.width) / scale));
    const int y1 = static_cast<int>(std::ceil((box.y + box.height) / scale));
    return cv::Rect(cv::Point(x0, y0), cv::Point(x1, y1)) &
           cv::Rect(0, 0, original.width, original.height);
}

// Chosen regions filling more of their box than this are rectangles (fields, films), not
// hands: an open hand with its forearm fills about half of its box.
constexpr double kRectangular = 0.8;

// The smallest box, as a fraction of the frame, that can hold a whole hand.
constexpr double kSmallestHand = 0.05;

bool plausible(const Selection& s) {
    return !s.box.empty() && s.frame_fraction < 0.55 && s.box_fill <= kRectangular;
}

cv::Rect grow(const cv::Rect& r, double fraction, cv::Size frame) {
    const int d = static_cast<int>(std::ceil(fraction * std::max(frame.width, frame.height)));
    return cv::Rect(r.x - d, r.y - d, r.width + 2 * d, r.height + 2 * d) &
           cv::Rect(0, 0, frame.width, frame.height);
}

cv::Rect shrink(const cv::Rect& r, double fraction) {
    const int dx = static_cast<int>(fraction * r.width), dy = static_cast<int>(fraction * r.height);
    return cv::Rect(r.x + dx, r.y + dy, r.width - 2 * dx, r.height - 2 * dy);
}

// The hand on the detection copy: the lowest rung of the threshold ladder whose selection
// looks like a hand (not most of the film, not a rectangle), or, when none does, the lowest
// rung's selection, which holds the most and so cuts off the least. A flat, nearly
// rectangular selection is an exposed field or a film on a scanner bed: the hand lies inside
// it, so the search runs again within it (once).
Selection search(const cv::Mat& small, std::vector<std::string>& warnings, Surface kind,
                 Compute how, bool nested = false) {
    if (std::min(small.cols, small.rows) < 16) return {};
    std::optional<StepClock> level_clock(std::in_place, "s1 level background");
    Levelled level = level_background(small, warnings, kind, how);
    level_clock.reset();
    if (level.contrast_too_low) return {};
    Selection lowest;
    for (int step = 0; step < 5; ++step) {
        const TissueLevels levels = tissue_levels(level, step);
        std::optional<StepClock> rung_clock(std::in_place, "s2 rung: mask");
        const cv::Mat mask = foreground_mask(level, levels, how);
        rung_clock.emplace("s3 rung: select");
        Selection s = select_hand(mask, level, levels, how);
        rung_clock.reset();
        if (step == 0) lowest = s;
        // Climbing further than this leaves a marker or a few bones, not a hand.
        if (s.box.empty() || s.box.area() < 0.1 * lowest.box.area()) break;
        if (!nested && s.box_fill > kRectangular) {
            const cv::Rect field = shrink(s.box, 0.03);
            std::vector<std::string> unused;
            Selection within = search(small(field), unused, kind, how, true);
            if (plausible(within) && within.box.area() < 0.85 * field.area()) {
                within.box += field.tl();
                return within;
            }
        }
        if (plausible(s)) return s;
    }
    return lowest;
}

// The edge finder's box replaces the threshold finder's when the edge cluster is a hand's
// (enough edges for a whole hand, not a marker's few), the box is of a hand's size, and it
// lies inside the threshold finder's box, which errs on the large side but keeps the hand.
constexpr double kHandEdges = 1.5;  // edge pixels per pixel of the copy's longer side

// Whether a cluster the edge box left out looks like a piece of the hand (fingers or a thumb
// the closing did not join): it has half the chosen cluster's edges, or a fifth of them over
// an eighth of the box's area without being a thin strip (a stretch of film rim). A label
// or a lead letter has fewer edges, over a smaller area.
bool is_hand_piece(const cv::Rect& piece, double edges, const cv::Rect& edge_box) {
    const double aspect = static_cast<double>(std::max(piece.width, piece.height)) /
                          std::max(1, std::min(piece.width, piece.height));
    return edges >= 0.5 || (edges >= 0.2 && piece.area() >= 0.12 * edge_box.area() && aspect <= 6.0);
}

bool trust_edges(const EdgeCore& core, const cv::Rect& edge_box, const Selection& threshold,
                 cv::Size frame) {
    if (core.box.empty() || core.strength < kHandEdges) return false;
    if (edge_box.area() < kSmallestHand * 0.6 * frame.area()) return false;
    const cv::Rect around = grow(edge_box, 0.02, frame);
    for (const auto& [box, edges] : core.rivals)
        if ((box & around).area() < 0.5 * box.area() && is_hand_piece(box, edges, edge_box))
            return false;
    if (threshold.box.empty()) return true;
    if ((edge_box & grow(threshold.box, 0.02, frame)) != edge_box) return false;
    return true;
}

// find_hand, its steps computed `how`.
HandBox find_hand_computed(const cv::Mat& grey8, const PreprocessSettings& settings, Compute how) {
    const StepClock clock("0 find_hand, whole");
    std::optional<StepClock> copy_clock(std::in_place, "1 detection copy");
    const cv::Mat grey = to_grey8(grey8, "find_hand");
    const double scale =
        std::min(1.0, static_cast<double>(settings.detect_size) / std::max(grey.cols, grey.rows));
    cv::Mat small;
    if (scale < 1.0)
        cv::resize(grey, small, cv::Size(), scale, scale, cv::INTER_AREA);
    else
        small = grey.clone();
    copy_clock.reset();

    std::vector<std::string> warnings;
    std::optional<StepClock> search_clock(std::in_place, "2 search, smooth background");
    Selection found = search(small, warnings, Surface::Smooth, how);
    search_clock.reset();
    // The median background sees through fields and blotchy shading that the smooth one takes
    // for tissue, but it can lose a faint hand that fills the frame, or a forearm. It is asked
    // only when the smooth search found nothing hand-like, and its box is taken only when it
    // lies inside the smooth one's and is of a hand's size.
    if (!found.box.empty() && !plausible(found)) {
        std::vector<std::string> unused;
        const StepClock median_clock("3 search, median background");
        const Selection sharp = search(small, unused, Surface::Median, how);
        const cv::Rect tolerance = grow(found.box, 0.02, small.size());
        if (plausible(sharp) && (sharp.box & tolerance) == sharp.box &&
            sharp.box.area() >= kSmallestHand * small.total())
            found = sharp;
    }
    std::optional<StepClock> edge_clock(std::in_place, "4 edge core");
    const EdgeCore core = find_edge_core(small, how);
    edge_clock.emplace("5 soft tissue");
    const cv::Rect edge_box = core.box.empty() ? cv::Rect() : grow_soft_tissue(small, core, how);
    edge_clock.reset();
    const bool edges_ok = trust_edges(core, edge_box, found, small.size());
    if (edges_ok) {
        found.box = edge_box;
        found.confidence = std::max(found.confidence, 0.5);
    }
    // A box this small holds a marker or a label, not a hand (a child's hand on a large
    // film still covers several per cent of it): keeping the whole frame is the safe answer.
    if (!edges_ok && found.box.area() < kSmallestHand * small.total())
        return full_frame(grey, warnings);

    HandBox hand;
    hand.box = to_original(found.box, scale, grey.size());
    hand.method = "threshold";
    hand.confidence = found.confidence;
    if (found.confidence < 0.3) warnings.emplace_back("the hand separates poorly from the background");
    hand.warnings = std::move(warnings);
    return hand;
}

}  // namespace

HandBox find_hand(const cv::Mat& grey8, const PreprocessSettings& settings) {
    return find_hand_computed(grey8, settings, Compute::Fast);
}

namespace hand_finder {

HandBox find_hand_reference(const cv::Mat& grey8, const PreprocessSettings& settings) {
    return find_hand_computed(grey8, settings, Compute::Reference);
}

}  // namespace hand_finder

}  // namespace boneage
