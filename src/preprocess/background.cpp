// The hand finder's first step: find the grey level of the background of the detection copy.
#include "hand_finder_steps.hpp"

#include <opencv2/imgproc.hpp>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <optional>

namespace boneage::hand_finder {

namespace {

using Histogram = std::array<double, 256>;

// Grey levels 0-2 are black padding around a scanned film (or a black background, the same
// for the threshold); 253-255 are burnt-out film and saturated markers. Neither says what the
// film's background level is near the hand, so they never weigh on the background surface.
constexpr int kLowest = 3, kHighest = 252;

Histogram histogram_of(const cv::Mat& image8) {
    // Counted in integers (four tallies, so that runs of one grey level do not wait on each
    // other), the same whole numbers as counting in doubles.
    std::array<std::array<std::uint32_t, 256>, 4> tally{};
    for (int y = 0; y < image8.rows; ++y) {
        const uchar* row = image8.ptr<uchar>(y);
        int x = 0;
        for (; x + 4 <= image8.cols; x += 4) {
            ++tally[0][row[x]];
            ++tally[1][row[x + 1]];
            ++tally[2][row[x + 2]];
            ++tally[3][row[x + 3]];
        }
        for (; x < image8.cols; ++x) ++tally[0][row[x]];
    }
    Histogram h{};
    for (int v = 0; v <= kHighest; ++v)
        h[v] = static_cast<double>(tally[0][v] + tally[1][v] + tally[2][v] + tally[3][v]);
    return h;
}

// The histogram smoothed over +-2 grey levels, so a comb left by contrast stretching does not
// decide the mode.
Histogram smoothed(const Histogram& h) {
    Histogram s{};
    for (int v = 0; v < 256; ++v)
        for (int d = -2; d <= 2; ++d)
            if (v + d >= 0 && v + d < 256) s[v] += h[v + d] / 5.0;
    return s;
}

int mode_of(const Histogram& h) {
    return static_cast<int>(std::max_element(h.begin(), h.end()) - h.begin());
}

double mass(const Histogram& h, int from, int to) {
    double m = 0.0;
    for (int v = std::max(0, from); v <= std::min(255, to); ++v) m += h[v];
    return m;
}

// The spread of the background peak: its half width at half maximum on the side away from
// the tissue (the other side merges with the soft tissue), as a Gaussian sigma.
double peak_sigma(const Histogram& h, int mode) {
    const double half = h[mode] / 2.0;
    int below = mode;
    while (below > kLowest && h[below] > half) --below;
    int above = mode;
    while (above < kHighest && h[above] > half) ++above;
    int width = below > kLowest ? mode - below : above - mode;
    return std::max(1.0, width / 1.1774);
}

// The film's background grey level, pixel by pixel: the grey levels of `image` where `weight`
// is 1, spread by a wide Gaussian and divided by the spread weights (normalised convolution),
// so the hand's region is filled in from the film around it. Done on a copy about 64 pixels
// long, which is all the detail a background has.
cv::Mat background_surface(const cv::Mat& image, const cv::Mat& weight, double fallback) {
    const StepClock clock("l4 surface");
    const double shrink = 64.0 / std::max(image.cols, image.rows);
    const cv::Size coarse(std::max(4, static_cast<int>(std::lround(image.cols * shrink))),
                          std::max(4, static_cast<int>(std::lround(image.rows * shrink))));
    cv::Mat weighted = image.mul(weight), small_value, small_weight;
    cv::resize(weighted, small_value, coarse, 0, 0, cv::INTER_AREA);
    cv::resize(weight, small_weight, coarse, 0, 0, cv::INTER_AREA);
    const double sigma = 4.0;  // a sixteenth of the frame
    cv::GaussianBlur(small_value, small_value, cv::Size(), sigma, sigma, cv::BORDER_REFLECT);
    cv::GaussianBlur(small_weight, small_weight, cv::Size(), sigma, sigma, cv::BORDER_REFLECT);
    // Far from any background the global level takes over.
    const float floor_weight = 1e-3f;
    cv::Mat surface = (small_value + floor_weight * static_cast<float>(fallback)) /
                      (small_weight + floor_weight);
    cv::resize(surface, surface, image.size(), 0, 0, cv::INTER_LINEAR);
    return surface;
}

double median_of(std::vector<float>& v) {
    if (v.empty()) return 0.0;
    auto mid = v.begin() + v.size() / 2;
    std::nth_element(v.begin(), mid, v.end());
    return *mid;
}

// The bits of a float of at most zero, as an unsigned key that orders as its magnitude does.
std::uint32_t magnitude_key(float value) {
    std::uint32_t bits;
    std::memcpy(&bits, &value, sizeof bits);
    return bits & 0x7fffffffu;
}

// Magnitudes are bucketed by their top bits: 65,536 buckets over the 31 bits of a magnitude.
constexpr int kNoiseBucketShift = 15;
constexpr std::size_t kNoiseBuckets = std::size_t{1} << (31 - kNoiseBucketShift);

std::uint32_t noise_bucket(float deviation) {
    return magnitude_key(deviation) >> kNoiseBucketShift;
}

// The robust noise (1.4826 x the median deviation, at least 0.25) from `counts` of `n`
// deviations per bucket: the bucket holding the element nth_element puts at n / 2, then a
// partial sort of that bucket alone, whose deviations `each_in_bucket(bucket, push)` lists.
template <class EachInBucket>
double noise_from_buckets(const std::vector<std::uint32_t>& counts, std::size_t n,
                          EachInBucket each_in_bucket) {
    if (n == 0) return 0.25;
    std::size_t rank = n / 2, bucket = 0;
    while (rank >= counts[bucket]) rank -= counts[bucket++];
    std::vector<float> within;
    within.reserve(counts[bucket]);
    each_in_bucket(bucket, [&](float deviation) { within.push_back(deviation); });
    std::nth_element(within.begin(), within.begin() + rank, within.end());
    return std::max(0.25, 1.4826 * within[rank]);
}

// Robust sigma (1.4826 x median absolute deviation) of `residual` where `weight` is 1, from
// the negative residuals only: faint tissue left among the background pixels only adds
// positive ones. The median is the one nth_element gives over all the deviations, found
// without collecting them: a histogram of their top bits finds the bucket that holds it, and
// only that bucket's values are collected and ordered.
double residual_noise(const cv::Mat& residual, const cv::Mat& weight, Compute how) {
    const StepClock clock("l5 noise");
    auto for_each_deviation = [&](auto&& visit) {
        for (int y = 0; y < residual.rows; ++y) {
            const float* r = residual.ptr<float>(y);
            const float* w = weight.ptr<float>(y);
            for (int x = 0; x < residual.cols; ++x)
                if (w[x] > 0.5f && r[x] <= 0.0f) visit(r[x]);
        }
    };
    if (how == Compute::Reference) {
        std::vector<float> deviations;
        for_each_deviation([&](float r) { deviations.push_back(-r); });
        return std::max(0.25, 1.4826 * median_of(deviations));
    }
    std::vector<std::uint32_t> counts(kNoiseBuckets, 0);
    std::size_t n = 0;
    for_each_deviation([&](float r) {
        ++counts[noise_bucket(r)];
        ++n;
    });
    return noise_from_buckets(counts, n, [&](std::size_t bucket, auto push) {
        for_each_deviation([&](float r) {
            if (noise_bucket(r) == bucket) push(-r);
        });
    });
}

// residual_noise of one residual under the several weights of the smooth surface's rounds.
// The pixels that can count (on the film, residual at most zero) are listed once with their
// deviation and its bucket, so each round reads that list, not the whole frame twice.
class FixedResidualNoise {
public:
    FixedResidualNoise(const cv::Mat& residual, const cv::Mat& film) {
        pixels_.reserve(residual.total());
        for (int y = 0; y < residual.rows; ++y) {
            const float* r = residual.ptr<float>(y);
            const uchar* f = film.ptr<uchar>(y);
            for (int x = 0; x < residual.cols; ++x)
                if (f[x] && r[x] <= 0.0f)
                    pixels_.push_back({y * residual.cols + x, noise_bucket(r[x]), -r[x]});
        }
    }

    // residual_noise(residual, weight, Compute::Fast), for a weight that is 0 off the film.
    double operator()(const cv::Mat& weight) {
        const StepClock clock("l5 noise");
        CV_Assert(weight.isContinuous() && weight.type() == CV_32F);
        const float* w = weight.ptr<float>();
        counts_.assign(kNoiseBuckets, 0);
        std::size_t n = 0;
        for (const Pixel& p : pixels_)
            if (w[p.offset] > 0.5f) {
                ++counts_[p.bucket];
                ++n;
            }
        return noise_from_buckets(counts_, n, [&](std::size_t bucket, auto push) {
            for (const Pixel& p : pixels_)
                if (p.bucket == bucket && w[p.offset] > 0.5f) push(p.deviation);
        });
    }

private:
    struct Pixel {
        int offset;
        std::uint32_t bucket;
        float deviation;
    };
    std::vector<Pixel> pixels_;
    std::vector<std::uint32_t> counts_;
};

// Background pixels: not tissue (outside `tissue` grown by a few per cent of the frame, so
// the faint rim of soft tissue does not count), not saturated, and not well below the film's
// commonest grey (`darkest`): beside a grey film, black or dark grey is the scanner's frame or
// padding, which says nothing about the film's level next to the hand.
cv::Mat background_weight(const cv::Mat& smooth8, const cv::Mat& tissue, double darkest,
                          Compute how) {
    const StepClock clock("l3 weight");
    const int grow = std::max(3, static_cast<int>(0.03 * std::max(smooth8.cols, smooth8.rows)));
    const cv::Mat grown = dilate_ellipse(tissue, 2 * grow + 1, how);
    cv::Mat film = (smooth8 <= kHighest) & (smooth8 >= darkest) & (grown == 0);
    cv::Mat weight;
    film.convertTo(weight, CV_32F, 1.0 / 255.0);
    return weight;
}

// background_weight with its film part, (smooth8 <= kHighest) & (smooth8 >= darkest), made
// once by the caller; without any tissue yet there is nothing to grow.
cv::Mat background_weight(const cv::Mat& film, const cv::Mat& tissue) {
    const StepClock clock("l3 weight");
    const int grow = std::max(3, static_cast<int>(0.03 * std::max(film.cols, film.rows)));
    cv::Mat weight;
    if (cv::countNonZero(tissue) == 0) {
        film.convertTo(weight, CV_32F, 1.0 / 255.0);
    } else {
        cv::Mat background;
        cv::bitwise_and(film, dilate_ellipse(tissue, 2 * grow + 1) == 0, background);
        background.convertTo(weight, CV_32F, 1.0 / 255.0);
    }
    return weight;
}

bool same_pixels(const cv::Mat& a, const cv::Mat& b) {
    CV_Assert(a.isContinuous() && b.isContinuous() && a.size() == b.size() && a.type() == b.type());
    return std::memcmp(a.data, b.data, a.total() * a.elemSize()) == 0;
}

// A median of `smooth8` over a window a quarter of its longer side, computed on a copy about
// 128 pixels long and brought back to full size.
cv::Mat median_surface(const cv::Mat& smooth8) {
    const StepClock clock("l7 median surface");
    const double shrink = std::min(1.0, 128.0 / std::max(smooth8.cols, smooth8.rows));
    cv::Mat coarse;
    cv::resize(smooth8, coarse, cv::Size(), shrink, shrink, cv::INTER_AREA);
    int k = std::max(3, std::max(coarse.cols, coarse.rows) / 4) | 1;
    cv::Mat median;
    cv::medianBlur(coarse, median, k);
    cv::Mat surface;
    median.convertTo(surface, CV_32F);
    cv::resize(surface, surface, smooth8.size(), 0, 0, cv::INTER_LINEAR);
    return surface;
}

}  // namespace

Levelled level_background(const cv::Mat& small, std::vector<std::string>& warnings,
                          Surface kind, Compute how) {
    Levelled level;
    std::optional<StepClock> clock(std::in_place, "l1 median blur, histogram");
    const int short_side = std::min(small.cols, small.rows);
    cv::Mat smooth;
    cv::medianBlur(small, smooth, short_side >= 200 ? 5 : 3);
    level.border = std::max(2, static_cast<int>(std::lround(0.015 * short_side)));

    Histogram h = smoothed(histogram_of(smooth));
    const double total = mass(h, 0, 255);
    if (total < 0.05 * smooth.total()) {  // nothing but padding and saturation
        level.contrast_too_low = true;
        warnings.emplace_back("too little contrast to find the hand");
        return level;
    }
    int mode = mode_of(h);
    // Bone is bright. When far more film lies well below the commonest grey than above it,
    // the grey scale is reversed (an uninverted MONOCHROME1 film, a negative scan).
    const double margin = 4.0 * peak_sigma(h, mode) + 4.0;
    // Black padding around a grey film is not "darker film"; it starts above it.
    const double darker = mass(h, 8, mode - static_cast<int>(margin));
    const double brighter = mass(h, mode + static_cast<int>(margin), 255);
    if (darker > 3.0 * brighter && darker > 0.1 * total) {
        cv::bitwise_not(smooth, smooth);
        std::reverse(h.begin(), h.end());
        mode = 255 - mode;
        warnings.emplace_back("the background is brighter than the hand; searched the inverted image");
    }

    clock.emplace("l2 blurs");
    cv::Mat grey;
    smooth.convertTo(grey, CV_32F);
    // Averaging in floating point gets below the 8-bit step: the soft tissue of a thin,
    // underexposed hand can lie only one or two grey levels above the film.
    const double blur = std::max(1.0, 0.004 * std::max(smooth.cols, smooth.rows));
    cv::GaussianBlur(grey, grey, cv::Size(), blur, blur, cv::BORDER_REPLICATE);
    // Black padding beside a grey film is never background, however wide the film's peak.
    const double darkest = mode >= 8 ? std::max<double>(kLowest, mode - margin) : 0.0;
    // The grain is measured on the fine scale (the copy minus a local mean), so a background
    // estimate still pulled up by faint tissue does not pass for noise and hide that tissue.
    cv::Mat local_mean;
    const double local = std::max(2.0, 0.01 * std::max(smooth.cols, smooth.rows));
    cv::GaussianBlur(grey, local_mean, cv::Size(), local, local, cv::BORDER_REPLICATE);
    const cv::Mat fine = grey - local_mean;
    clock.reset();
    cv::Mat residual;
    if (kind == Surface::Median) {
        // A median over a window a quarter of the frame wide keeps the straight edges of an
        // exposed field or a film, which a mean smears into "tissue"; at the hand's
        // extremities (what decides the box) most of the window is background.
        residual = grey - median_surface(smooth);
        cv::Mat weight, quiet = (smooth >= darkest) & (smooth <= kHighest) & (residual <= 2.0f);
        quiet.convertTo(weight, CV_32F, 1.0 / 255.0);
        level.noise = residual_noise(fine, weight, how);
    } else {
        // The first round takes every film pixel as background, so the surface follows broad
        // shading; the hand stands out of its residual, and each round's residual keeps more
        // of the hand (a wide palm, a forearm) out of the next round's background.
        //
        // Each round depends on the round before only through `tissue`: when a round gives the
        // tissue it was given, the rounds left would repeat it, and the fast finder stops.
        cv::Mat tissue = cv::Mat::zeros(smooth.size(), CV_8UC1);
        const int film_pixels = cv::countNonZero(smooth >= darkest);
        const cv::Mat film = how == Compute::Fast
                                 ? cv::Mat((smooth <= kHighest) & (smooth >= darkest))
                                 : cv::Mat();
        std::optional<FixedResidualNoise> fine_noise;
        if (how == Compute::Fast) fine_noise.emplace(fine, film);
        for (int round = 0; round < 4; ++round) {
            const cv::Mat weight = how == Compute::Fast
                                       ? background_weight(film, tissue)
                                       : background_weight(smooth, tissue, darkest, how);
            const cv::Mat given = tissue.clone();  // `tissue = ...` below may write in place
            residual = grey - background_surface(grey, weight, mode);
            level.noise = fine_noise ? (*fine_noise)(weight) : residual_noise(fine, weight, how);
            const StepClock threshold_clock("l6 tissue threshold");
            tissue = residual > static_cast<float>(4.0 * level.noise + 1.0);
            // Most of the film "tissue": the background is not flat at the scale the surface
            // follows (a steep exposure gradient). Then the residual's own spread is the noise.
            if (cv::countNonZero(tissue) > 0.6 * film_pixels) {
                level.noise = std::max(level.noise, residual_noise(residual, weight, how));
                tissue = residual > static_cast<float>(4.0 * level.noise + 1.0);
            }
            if (how == Compute::Fast && same_pixels(tissue, given)) break;
        }
    }
    clock.emplace("l8 finish");
    // Padding is never tissue, whatever the surface next to it.
    residual.setTo(0.0f, smooth < kLowest);
    level.film = smooth >= darkest;
    level.image = residual;
    level.background = 0.0;

    double lowest, brightest;
    cv::minMaxLoc(level.image, &lowest, &brightest);
    if (brightest - level.background < std::max(8.0, 4.0 * level.noise)) {
        level.contrast_too_low = true;
        warnings.emplace_back("too little contrast to find the hand");
    }
    return level;
}

}  // namespace boneage::hand_finder
