// Everything random about one phantom besides its label: the hand's individual shape, its pose
// in the frame and the nuisances of the exposure. Drawn from one generator, in a fixed order,
// so a seed gives the same hand with nuisances on or off.
#pragma once

#include "synth/anatomy.hpp"

#include <boneage/synth.hpp>

#include <cstdint>
#include <random>
#include <string>
#include <vector>

namespace boneage::synth {

// A lead marker ("L", "R") or a film label (a bright box with dark text).
struct MarkerSpec {
    std::string text;
    bool label = false;     // a box with text rather than a bare letter
    double height = 0.05;   // as a fraction of the frame's height
    double value = 1.0;     // brightness, 0..1
};

struct Scene {
    HandShape shape;
    // Pose.
    double rotation_deg = 0.0;
    double scale = 1.0;
    bool mirror = false;                  // a right hand
    cv::Point2d placement{0.5, 0.5};      // where the hand sits in the free space, 0..1 each
    // Background: a level, a linear gradient, low-frequency blobs, maybe a film edge.
    double background = 0.06;
    double gradient = 0.0;
    double gradient_angle = 0.0;
    double blobs = 0.0;
    bool film = false;
    double film_outside = 0.0;            // level outside the film
    double film_angle_deg = 0.0;
    double film_margin = 0.1;             // film border beyond the hand, fraction of the frame
    // Contrast of the hand.
    double tissue = 0.30;
    double bone = 0.36;
    // Exposure and detector.
    double gain = 1.0;
    double offset = 0.0;
    double gamma = 1.0;
    double noise = 0.0;                   // Gaussian sigma
    double shot_noise = 0.0;              // sigma per sqrt(intensity)
    double blur = 0.5;                    // Gaussian sigma in pixels of a 512-pixel frame
    std::vector<MarkerSpec> markers;
    std::uint64_t texture_seed = 0;       // noise, blobs and marker placement
};

// Draws a scene; with `nuisances` off the pose is upright and centred, the background flat,
// with no markers, noise or exposure changes (the hand's own shape still varies).
Scene sample_scene(std::mt19937_64& rng, bool nuisances);

// Renders a labelled hand in a scene at the options' size and depth.
Phantom render_phantom(const PhantomLabel& label, const Scene& scene, const SynthOptions& options);

}  // namespace boneage::synth
