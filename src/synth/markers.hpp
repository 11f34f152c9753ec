// Lead markers and film labels: bright text placed beside, never on, the hand.
#pragma once

#include "synth/scene.hpp"

#include <opencv2/core.hpp>

#include <optional>
#include <random>
#include <vector>

namespace boneage::synth {

// The size in pixels a marker takes in a frame.
cv::Size marker_size(const MarkerSpec& marker, cv::Size frame);

// A spot for a marker of `size` inside the frame that keeps a margin from the hand box and
// from markers already placed; nothing when there is no room.
std::optional<cv::Rect> place_marker(cv::Size size, cv::Size frame, const cv::Rect& hand_box,
                                     const std::vector<cv::Rect>& taken, std::mt19937_64& rng);

// Draws the marker into `where` of a float image (0..1), brighter than anything beneath; the
// image may be a reduced copy of the frame the marker was placed in.
void draw_marker(cv::Mat& image, const MarkerSpec& marker, const cv::Rect& where);

}  // namespace boneage::synth
