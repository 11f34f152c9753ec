// The public face of the phantom generator: one phantom from a label and a seed, and the
// labels of a set.
#include "synth/scene.hpp"

#include <boneage/error.hpp>
#include <boneage/splitmix.hpp>
#include <boneage/synth.hpp>

#include <algorithm>
#include <numeric>
#include <random>

namespace boneage {


std::uint64_t phantom_seed(std::uint64_t seed, int index) {
    return splitmix64(splitmix64(seed) ^ (0x5BD1E995ULL + std::uint64_t(index)));
}

Phantom make_phantom(const PhantomLabel& label, std::uint64_t seed, const SynthOptions& options) {
    std::mt19937_64 rng(splitmix64(seed));
    synth::Scene scene = synth::sample_scene(rng, options.nuisances);
    return synth::render_phantom(label, scene, options);
}

std::vector<PhantomLabel> phantom_labels(int count, std::uint64_t seed) {
    if (count < 0) throw UsageError("phantom count must be >= 0, got " + std::to_string(count));
    std::mt19937_64 rng(splitmix64(seed ^ 0x6C6162656C73ULL));
    // Stratified ages: one per equal slice of 1..228 months, in shuffled order, so even a small
    // set covers the range; sexes alternate over a second shuffle, so half are boys.
    std::vector<int> age_slot(count), sex_slot(count);
    std::iota(age_slot.begin(), age_slot.end(), 0);
    std::iota(sex_slot.begin(), sex_slot.end(), 0);
    std::shuffle(age_slot.begin(), age_slot.end(), rng);
    std::shuffle(sex_slot.begin(), sex_slot.end(), rng);
    std::uniform_real_distribution<double> within(0.0, 1.0);
    std::vector<PhantomLabel> labels(count);
    for (int i = 0; i < count; ++i) {
        double age = 1.0 + 227.0 * (age_slot[i] + within(rng)) / count;
        labels[i].id = std::to_string(1000 + i);
        labels[i].age_months = std::clamp(std::round(age), 1.0, 228.0);
        labels[i].male = sex_slot[i] % 2 == 0;
    }
    return labels;
}

}  // namespace boneage
