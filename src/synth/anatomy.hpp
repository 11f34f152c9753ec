// The skeleton and soft tissue of a left hand seen postero-anteriorly (thumb on the right),
// at a given maturity, as outlines in hand units: the wrist joint at the origin, fingers
// towards -y, the thumb side at +x, an adult hand about 0.95 long.
#pragma once

#include "synth/maturity.hpp"
#include "synth/outline.hpp"

#include <array>
#include <vector>

namespace boneage::synth {

// One filled outline and its value: soft-tissue thickness (drawn over each other in order,
// the later one wins) or bone attenuation (added; negative for marrow cavities).
struct Layer {
    Outline outline;
    double value = 0.0;
};

struct HandModel {
    std::vector<Layer> tissue;
    std::vector<Layer> bones;
};

// What differs between two hands of the same maturity.
struct HandShape {
    double spread = 1.5;                           // how far the fingers fan out
    double forearm = 0.32;                         // visible forearm, hand units
    double bone_width = 1.0;                       // all bones wider or slimmer
    double tissue = 1.0;                           // soft tissue thicker or thinner
    std::array<double, 5> finger_length{1, 1, 1, 1, 1};  // thumb .. little finger
    std::array<double, 5> finger_bend{0, 0, 0, 0, 0};    // extra angle per finger, radians
};

// Builds the hand: soft tissue of forearm, palm, thenar and fingers; radius and ulna,
// carpal bones present at this maturity, metacarpals and phalanges with their epiphyses.
HandModel build_hand(const Maturity& maturity, const HandShape& shape);

}  // namespace boneage::synth
