// Random changes to a preprocessed image: the augmentation that training draws for each
// sample, and the fixed views of test-time augmentation. Pure image operations on uint8
// pixels, below both training and inference.
//
//   boneage::Augmentation a = boneage::draw_augmentation(seed, epoch, index, settings);
//   boneage::augment_image(src, size, a, dst);  // size x size bytes in, size x size out
#pragma once

#include <cstdint>

namespace boneage {

// The ranges of the random changes; each is drawn uniformly in [-max, +max].
struct AugmentSettings {
    double rotation_deg = 10.0;  // rotation about the centre, degrees
    double shift = 0.05;         // shift in x and in y, fraction of the side
    double scale = 0.05;         // zoom, fraction (0.05: 0.95x .. 1.05x)
    double contrast = 0.10;      // gain about mid-grey, fraction
    double brightness = 0.10;    // offset, fraction of full scale (255)
};

// One draw of the changes above.
struct Augmentation {
    double rotation_deg = 0.0, shift_x = 0.0, shift_y = 0.0, scale = 1.0;
    double contrast = 1.0,
           brightness = 0.0;  // out = contrast x (in - 128) + 128 + 255 x brightness
};

// The changes for sample `index` of `epoch` in a run seeded with `seed`: a pure function of
// the three numbers, so data order and threads never change what an image receives.
Augmentation draw_augmentation(std::uint64_t seed, int epoch, std::uint64_t index,
                               const AugmentSettings& settings = {});

// Applies `a` to the size x size image `src` and writes size x size bytes to `dst` (bilinear,
// black where the image moved away from the frame).
void augment_image(const std::uint8_t* src, int size, const Augmentation& a, std::uint8_t* dst);

}  // namespace boneage
