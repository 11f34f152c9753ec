// Images that are not whole hand radiographs, of the kinds a reading room drops by mistake:
// the negatives the hand gate (hand_gate.hpp) learns to refuse and is tested on. Every kind is
// drawn from a seed, so a set is rebuilt exactly; only close-ups of part of a hand need a real
// or synthetic radiograph to cut from.
//
//   cv::Mat page = boneage::make_negative(boneage::NegativeKind::Document, 7);
//   cv::Mat finger = boneage::make_negative(boneage::NegativeKind::PartialHand, 7, radiograph);
#pragma once

#include <array>
#include <cstdint>
#include <opencv2/core.hpp>
#include <optional>
#include <string>

namespace boneage {

enum class NegativeKind {
    Blank,          // an even grey level, a gradient or a vignette; sometimes a lone lead marker
    Noise,          // Gaussian, uniform, salt-and-pepper or smoothed (cloudy) noise
    Document,       // a page or slide (text, coloured shapes), or flat art on black as icons are
    Chart,          // a plot: axes, grid, centile-like curves and numbers (half in colour)
    PartialHand,    // a close-up cut from a hand radiograph: a finger, a few bones, the forearm
    OtherBodyPart,  // a synthetic radiograph of a forearm or leg, a chest, a skull or a knee
};

constexpr std::array<NegativeKind, 6> kNegativeKinds = {
    NegativeKind::Blank, NegativeKind::Noise,       NegativeKind::Document,
    NegativeKind::Chart, NegativeKind::PartialHand, NegativeKind::OtherBodyPart};

// "blank", "noise", "document", "chart", "partial-hand", "other-body-part".
std::string to_string(NegativeKind kind);
// The kind named as to_string names it; nullopt for any other text.
std::optional<NegativeKind> parse_negative_kind(const std::string& name);

// One image of `kind`, 8-bit, grey (CV_8UC1) or colour (CV_8UC3, Document and Chart only),
// between 160 and 1024 pixels a side. The same (kind, seed, source) gives the same image.
// PartialHand cuts a window of 3 to 30 per cent of the tissue's extent on `source` (a grey
// radiograph, 8-bit, at least 64 pixels a side) and throws UsageError without one.
cv::Mat make_negative(NegativeKind kind, std::uint64_t seed, const cv::Mat& source = {});

}  // namespace boneage
