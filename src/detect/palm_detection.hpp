// From the palm detector's raw outputs to palms in the image, and from a palm to the rotated
// square in which the landmark model looks for the hand: the decoding, weighted non-maximum
// suppression and region rules of MediaPipe's palm detection graph.
#pragma once

#include "detect/palm_anchors.hpp"

#include <opencv2/core.hpp>

#include <array>
#include <vector>

namespace boneage::detect {

// A palm, in fractions of the image (or of the network's input before remove_letterbox).
// Keypoints: 0 the wrist's centre, 1 the index finger's base, 2 the middle finger's base,
// 3 the ring finger's base, 4 the little finger's base, 5 and 6 the thumb.
struct PalmDetection {
    float xmin = 0, ymin = 0, width = 0, height = 0;
    float score = 0;  // after the sigmoid, 0..1
    std::array<cv::Point2f, 7> keypoints{};
};

struct PalmDecoding {
    float scale = 192;        // the raw offsets are in input pixels
    float score_clip = 100;   // logits are clipped to +-this before the sigmoid
    float min_score = 0.5f;   // palms below are dropped
};

// `boxes`: anchors.size() rows of 18 values (box centre x, y, width, height, then 7 keypoints
// x, y, all in input pixels relative to the anchor); `logits`: one per anchor.
std::vector<PalmDetection> decode_palms(const float* boxes, const float* logits,
                                        const std::vector<Anchor>& anchors,
                                        const PalmDecoding& decoding = {});

// Intersection over union of two palms' boxes; 0 when either is empty.
float box_iou(const PalmDetection& a, const PalmDetection& b);

// MediaPipe's weighted suppression: the best palm left takes every palm overlapping it by
// more than `iou_threshold` and becomes their score-weighted mean box and keypoints (its own
// score kept). Best first.
std::vector<PalmDetection> weighted_nms(std::vector<PalmDetection> palms, float iou_threshold = 0.3f);

// The fractions of the network's input that were padding on each side when the image was
// letterboxed into it.
struct Letterbox {
    float left = 0, top = 0, right = 0, bottom = 0;
};

// The padding of an image of `size` fitted, centred, into a square input.
Letterbox square_letterbox(cv::Size size);

// A palm found on the letterboxed input, in fractions of the image itself.
PalmDetection remove_letterbox(PalmDetection palm, const Letterbox& padding);

// A rotated rectangle in fractions of the image; rotation in radians, counter-clockwise on
// screen being negative as in MediaPipe (y grows downwards).
struct HandRegion {
    float x_center = 0, y_center = 0, width = 0, height = 0, rotation = 0;
};

// The region the landmark model sees: the palm's box turned so that the wrist-to-middle-finger
// line points up, moved half its height towards the fingers, made square on its longer side
// (in pixels) and enlarged 2.6 times.
HandRegion hand_region(const PalmDetection& palm, cv::Size image);

// The four corners of `region` in pixels of an image of `size`, in the order OpenCV's
// cv::boxPoints gives: bottom-left, top-left, top-right, bottom-right of the turned square.
std::array<cv::Point2f, 4> region_corners(const HandRegion& region, cv::Size size);

}  // namespace boneage::detect
