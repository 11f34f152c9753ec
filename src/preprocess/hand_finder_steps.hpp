// The steps of the hand finder (hand_finder.cpp), on the downscaled detection copy.
#pragma once

#include <boneage/preprocess.hpp>

#include <opencv2/core.hpp>

#include <map>
#include <string>
#include <vector>

namespace boneage::hand_finder {

// The calling thread's CPU time in ms (CLOCK_THREAD_CPUTIME_ID): other work sharing the core
// does not count in it.
double thread_cpu_ms();

// Where find_hand's time goes: the calling thread's CPU time per named step, summed over every
// call made while a StepClock::Recording is alive on that thread (bench/preprocess_stages.cpp).
// Without one, a step's timer costs the test of a null pointer.
class StepClock {
public:
    using Totals = std::map<std::string, double>;  // step -> milliseconds

    // Collects into `totals` until destroyed.
    class Recording {
    public:
        explicit Recording(Totals& totals);
        ~Recording();
        Recording(const Recording&) = delete;
        Recording& operator=(const Recording&) = delete;

    private:
        Totals* previous_;
    };

    // Adds the time from here to destruction to `step`, when a recording is on.
    explicit StepClock(const char* step);
    ~StepClock();
    StepClock(const StepClock&) = delete;
    StepClock& operator=(const StepClock&) = delete;

private:
    const char* step_;
    double start_ms_ = 0.0;
};

// How the steps compute what they compute. Fast: what find_hand runs (the ellipse morphology
// below, connected components on runs of pixels, the Hough transform's cheaper bookkeeping,
// intermediates shared between steps and between the background's rounds). Reference: the
// finder as first written (OpenCV's own morphology, components and Hough transform, each step
// computing everything itself), kept to check the fast one against (find_hand_reference,
// tests/test_preprocess.cpp, bench/hand_box_agreement.cpp). Both give the same answers.
enum class Compute { Fast, Reference };

// `mask` (CV_8UC1) dilated, or closed (dilated then eroded), by OpenCV's elliptic structuring
// element of size x size: the same pixels as cv::dilate and cv::morphologyEx (default border),
// computed row run by row run (morphology.cpp) unless `how` is Reference.
cv::Mat dilate_ellipse(const cv::Mat& mask, int size, Compute how = Compute::Fast);
cv::Mat close_ellipse(const cv::Mat& mask, int size, Compute how = Compute::Fast);

// find_hand with every step computed as Compute::Reference: the reference the fast finder is
// checked against. The same boxes, at several times the cost.
HandBox find_hand_reference(const cv::Mat& grey8, const PreprocessSettings& settings = {});

// The detection copy and the grey level of its background.
struct Levelled {
    cv::Mat image;              // CV_32F: the smoothed copy, bone bright
    double background = 0.0;    // the commonest grey level of the film: its background
    double noise = 1.0;         // spread of the background grey level (sigma), >= 0.25
    cv::Mat film;               // CV_8UC1, 255 where the film is (not padding)
    int border = 2;             // width of the band along the frame edge ignored by the mask
    bool contrast_too_low = false;
};

// How the background's grey level is estimated pixel by pixel. Smooth: a wide weighted mean
// of the pixels outside the tissue found so far, refined over a few rounds; follows gentle
// shading and lets a hand fill most of the frame. Median: a median over a quarter of the frame;
// keeps the straight edges of exposed fields and films, and blotchy shading, out of the tissue.
enum class Surface { Smooth, Median };

// Smooths `small` (CV_8UC1), finds the film's commonest grey level (leaving out black padding
// and saturated pixels) and subtracts a background surface of the given kind. Inverts the
// image when the background is brighter than what lies on it, and says so in `warnings`.
Levelled level_background(const cv::Mat& small, std::vector<std::string>& warnings,
                          Surface kind = Surface::Smooth, Compute how = Compute::Fast);

// Two thresholds on the levelled copy (hysteresis): `faint` pixels are tissue when they are
// connected to a `strong` one. `step` climbs a ladder: 0 sits just above the film grain, and
// each step doubles the distance, for backgrounds whose shading the levelling did not remove.
struct TissueLevels {
    double faint = 0.0;
    double strong = 0.0;
};
TissueLevels tissue_levels(const Levelled& level, int step = 0);

// CV_8UC1 mask (255 = tissue) of the levelled copy above `levels.faint`: speckle and thin
// lines removed, gaps between fingers closed, holes filled.
cv::Mat foreground_mask(const Levelled& level, const TissueLevels& levels,
                        Compute how = Compute::Fast);

// cv::connectedComponentsWithStats(mask, labels, stats, centroids, 8, CV_32S) less the
// centroids: the same components with the same boxes and areas, found on runs of pixels along
// the rows (components.cpp) unless `how` is Reference. Components are numbered in the order of
// their first pixel; OpenCV's numbering can differ (it scans two rows at a time). The
// background's row of `stats` holds only its area.
int connected_components(const cv::Mat& mask, cv::Mat& labels, cv::Mat& stats,
                         Compute how = Compute::Fast);

struct Selection {
    cv::Rect box;               // on the detection copy; empty when nothing plausible was found
    double confidence = 0.0;
    double frame_fraction = 0.0;  // the chosen components' area over the film's area
    double box_fill = 0.0;        // the chosen components' area over the box's area
};

// Picks the hand among the mask's components: the largest one that is not a film edge, plus
// every nearby component of some size that is not a lead marker or label.
Selection select_hand(const cv::Mat& mask, const Levelled& level, const TissueLevels& levels,
                      Compute how = Compute::Fast);

}  // namespace boneage::hand_finder

namespace boneage::hand_finder {

// The hand's outline and bones as an edge cluster: what shading, however blotchy, lacks.
struct EdgeCore {
    cv::Rect box;               // on the detection copy; empty when no cluster was found
    cv::Mat chosen;             // CV_8UC1, 255 on the chosen cluster (edges closed into a region)
    cv::Mat smoothed;           // CV_32F: the copy smoothed as the edges were found, which the
                                // soft tissue's growth reads too (empty for Compute::Reference)
    double strength = 0.0;      // the cluster's edge pixels over the copy's longer side
    // The other clusters with at least a tenth of the chosen one's edges: the rest of a hand
    // that the closing did not join, or a large label. Boxes, and edges as a share of the chosen.
    std::vector<std::pair<cv::Rect, double>> rivals;
};

// cv::HoughLinesP(edges, lines, 1, theta_step, threshold, min_length, max_gap): the same
// segments in the same order (OpenCV 4's algorithm, random visiting order included), at a
// fraction of the cost (edges.cpp).
std::vector<cv::Vec4i> hough_segments(const cv::Mat& edges, double theta_step, int threshold,
                                      int min_length, int max_gap);

// `small` (CV_8UC1) as CV_32F, smoothed as the edge finder and the soft tissue's growth read it.
cv::Mat smoothed_copy(const cv::Mat& small);

// Edges of `small` (CV_8UC1) above the film grain, with the straight rims of films and
// exposed fields removed; the cluster with the most edge pixels.
EdgeCore find_edge_core(const cv::Mat& small, Compute how = Compute::Fast);

// The hand's box grown from `core` into the soft tissue around it: pixels brighter than a
// plane fitted to a ring of background just outside the core, joined to the core.
cv::Rect grow_soft_tissue(const cv::Mat& small, const EdgeCore& core,
                          Compute how = Compute::Fast);

}  // namespace boneage::hand_finder
