// SSD anchor generation as MediaPipe's palm detection graph configures it.
#include "detect/palm_anchors.hpp"

#include <cmath>
#include <cstddef>

namespace boneage::detect {

namespace {

// Anchor scales rise linearly from min_scale to max_scale over the layers.
float layer_scale(const SsdAnchorOptions& o, std::size_t layer) {
    const std::size_t n = o.strides.size();
    if (n == 1) return (o.min_scale + o.max_scale) / 2;
    return o.min_scale + (o.max_scale - o.min_scale) * static_cast<float>(layer) / (n - 1);
}

}  // namespace

std::vector<Anchor> ssd_anchors(const SsdAnchorOptions& o) {
    std::vector<Anchor> anchors;
    const std::size_t layers = o.strides.size();
    std::size_t layer = 0;
    while (layer < layers) {
        // The sizes of every anchor of the layers that share this stride.
        std::vector<float> widths, heights;
        std::size_t last = layer;
        for (; last < layers && o.strides[last] == o.strides[layer]; ++last) {
            const float scale = layer_scale(o, last);
            auto add = [&](float s, float ratio) {
                widths.push_back(s * std::sqrt(ratio));
                heights.push_back(s / std::sqrt(ratio));
            };
            for (float ratio : o.aspect_ratios) add(scale, ratio);
            if (o.interpolated_scale_aspect_ratio > 0) {
                const float next = last + 1 == layers ? 1.0f : layer_scale(o, last + 1);
                add(std::sqrt(scale * next), o.interpolated_scale_aspect_ratio);
            }
        }
        const int stride = o.strides[layer];
        const int rows = static_cast<int>(std::ceil(static_cast<float>(o.input_height) / stride));
        const int cols = static_cast<int>(std::ceil(static_cast<float>(o.input_width) / stride));
        for (int y = 0; y < rows; ++y)
            for (int x = 0; x < cols; ++x)
                for (std::size_t a = 0; a < widths.size(); ++a) {
                    Anchor anchor;
                    anchor.x_center = (x + o.offset_x) / cols;
                    anchor.y_center = (y + o.offset_y) / rows;
                    if (!o.fixed_anchor_size) {
                        anchor.width = widths[a];
                        anchor.height = heights[a];
                    }
                    anchors.push_back(anchor);
                }
        layer = last;
    }
    return anchors;
}

}  // namespace boneage::detect
