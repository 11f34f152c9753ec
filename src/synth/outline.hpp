// Closed outlines of the shapes a phantom is drawn from (bones, soft tissue), in hand units
// (the length of an adult hand from wrist to fingertip is about 1).
#pragma once

#include <opencv2/core.hpp>

#include <vector>

namespace boneage::synth {

using Outline = std::vector<cv::Point2d>;

// Half widths of a long bone along its axis: at the proximal end, the waist and the distal end.
struct BoneProfile {
    double proximal = 0.0;
    double waist = 0.0;
    double distal = 0.0;
    double roundness = 0.5;  // length of the end caps, as a fraction of the end's half width
};

// A long bone (or finger) from `a` to `b`: flared ends, a narrower waist, rounded caps.
Outline long_outline(cv::Point2d a, cv::Point2d b, const BoneProfile& profile);

// A superellipse centred at `c` with half axes (rx along `axis_angle`, ry across it);
// `power` 2 is an ellipse, larger values square it off like a wafer or a carpal bone.
Outline blob_outline(cv::Point2d c, double rx, double ry, double axis_angle, double power = 2.0);

// The convex hull of a point set, as an outline.
Outline hull_outline(const std::vector<cv::Point2d>& points);

// Unit vector at `angle` radians from the hand's long axis (towards the fingers), positive
// angles leaning to the thumb side (+x); y grows towards the wrist.
cv::Point2d ray_direction(double angle);

}  // namespace boneage::synth
