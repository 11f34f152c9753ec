// A prepared cache of phantoms, the fixture of the training tests.
#pragma once

#include <gtest/gtest.h>

#include <boneage/dataset.hpp>
#include <boneage/synth.hpp>
#include <cstdint>
#include <filesystem>
#include <string>

#include "support.hpp"

namespace boneage::test {

// A prepared cache of `count` phantoms drawn with `seed`, at `size` pixels.
// Clean phantoms are upright and centred, without markers, noise or exposure changes.
inline std::filesystem::path phantom_cache(const ScratchDir& dir, const std::string& name,
                                           int count, std::uint64_t seed, int size,
                                           bool clean = false) {
    SynthOptions synth;
    synth.width = 320;
    synth.height = 400;
    synth.nuisances = !clean;
    const std::filesystem::path images = dir / (name + "-images");
    write_phantom_set(images, count, seed, synth);
    PrepareOptions p;
    p.images_dir = images;
    p.labels_csv = images / "labels.csv";
    p.out = dir / (name + ".bin");
    p.settings.output_size = size;
    const PrepareReport report = prepare_dataset(p);
    EXPECT_EQ(report.written, static_cast<std::size_t>(count));
    return p.out;
}

}  // namespace boneage::test
