#include "synth/scene.hpp"

#include <cmath>

namespace boneage::synth {

namespace {
const char kLabelChars[] = "ABCDEFGHJKLMNPRSTUVWXYZ0123456789";

double uniform(std::mt19937_64& rng, double lo, double hi) {
    return std::uniform_real_distribution<double>(lo, hi)(rng);
}
bool chance(std::mt19937_64& rng, double p) { return uniform(rng, 0.0, 1.0) < p; }

HandShape sample_shape(std::mt19937_64& rng) {
    HandShape s;
    s.spread = uniform(rng, 1.0, 2.1);
    s.forearm = uniform(rng, 0.22, 0.45);
    s.bone_width = uniform(rng, 0.92, 1.08);
    s.tissue = uniform(rng, 0.85, 1.2);
    double overall = uniform(rng, 0.96, 1.04);
    for (double& f : s.finger_length) f = overall * uniform(rng, 0.98, 1.02);
    for (double& b : s.finger_bend) b = uniform(rng, -0.06, 0.06);
    return s;
}

MarkerSpec sample_marker(std::mt19937_64& rng) {
    MarkerSpec m;
    m.label = chance(rng, 0.3);
    if (m.label) {
        int n = std::uniform_int_distribution<int>(2, 4)(rng);
        std::uniform_int_distribution<int> pick(0, int(sizeof kLabelChars) - 2);
        for (int i = 0; i < n; ++i) m.text += kLabelChars[pick(rng)];
        m.height = uniform(rng, 0.035, 0.06);
        m.value = uniform(rng, 0.75, 0.95);
    } else {
        m.text = chance(rng, 0.75) ? "L" : "R";
        m.height = uniform(rng, 0.03, 0.06);
        m.value = uniform(rng, 0.9, 1.0);
    }
    return m;
}
}  // namespace

Scene sample_scene(std::mt19937_64& rng, bool nuisances) {
    Scene s;
    // Every draw happens in both modes, so a seed names the same hand either way.
    HandShape shape = sample_shape(rng);
    Scene n;
    n.rotation_deg = uniform(rng, -25.0, 25.0);
    n.scale = uniform(rng, 0.7, 1.1);
    n.mirror = chance(rng, 0.1);
    n.placement = {uniform(rng, 0.0, 1.0), uniform(rng, 0.0, 1.0)};
    bool grey = chance(rng, 0.35);  // a scanned film: grey where nothing attenuates
    n.background = grey ? uniform(rng, 0.22, 0.42) : uniform(rng, 0.0, 0.14);
    n.gradient = uniform(rng, 0.0, 0.12);
    n.gradient_angle = uniform(rng, 0.0, 6.2832);
    n.blobs = uniform(rng, 0.0, 0.08);
    n.film = chance(rng, 0.3);
    n.film_outside = chance(rng, 0.6) ? n.background + uniform(rng, 0.12, 0.3)
                                      : std::max(0.0, n.background - uniform(rng, 0.05, 0.15));
    n.film_angle_deg = uniform(rng, -4.0, 4.0);
    n.film_margin = uniform(rng, 0.03, 0.12);
    n.tissue = grey ? uniform(rng, 0.16, 0.26) : uniform(rng, 0.24, 0.36);
    n.bone = uniform(rng, 0.28, 0.42);
    n.gain = uniform(rng, 0.85, 1.15);
    n.offset = uniform(rng, -0.03, 0.05);
    n.gamma = std::exp(uniform(rng, -0.35, 0.35));
    n.noise = uniform(rng, 0.002, 0.02);
    n.shot_noise = uniform(rng, 0.0, 0.03);
    n.blur = uniform(rng, 0.3, 1.8);
    int markers = chance(rng, 0.6) ? 1 : 2;
    for (int i = 0; i < markers; ++i) n.markers.push_back(sample_marker(rng));
    std::uint64_t texture = rng();

    if (nuisances) {
        s = n;
        s.shape = shape;
    } else {
        // Canonical pose, the same individual hand.
        s.shape = shape;
        s.shape.spread = 1.5;
        s.shape.forearm = 0.32;
    }
    s.texture_seed = texture;
    return s;
}

}  // namespace boneage::synth
