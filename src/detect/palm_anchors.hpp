// The SSD anchors of MediaPipe's palm detector: one per output row of the model, in the order
// the model emits them.
#pragma once

#include <vector>

namespace boneage::detect {

// An anchor's centre and size, as fractions of the network's input square.
struct Anchor {
    float x_center = 0, y_center = 0, width = 1, height = 1;
};

// The options of MediaPipe's SsdAnchorsCalculator, with the palm detector's values (192 px
// input; layers of stride 8, 16, 16, 16; two anchors per layer and cell).
struct SsdAnchorOptions {
    int input_width = 192, input_height = 192;
    float min_scale = 0.1484375f, max_scale = 0.75f;
    float offset_x = 0.5f, offset_y = 0.5f;
    std::vector<int> strides{8, 16, 16, 16};
    std::vector<float> aspect_ratios{1.0f};
    float interpolated_scale_aspect_ratio = 1.0f;  // > 0 adds one anchor between two scales
    bool fixed_anchor_size = true;                 // every anchor 1 x 1 (the model regresses sizes)
};

// Layers that share a stride share a feature map: for each such group, each cell of its map
// (row-major), each of the group's anchors. 2016 for the defaults.
std::vector<Anchor> ssd_anchors(const SsdAnchorOptions& options = {});

}  // namespace boneage::detect
