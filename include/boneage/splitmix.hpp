// SplitMix64 (Steele, Lea, Flood 2014): a well-mixed 64-bit hash. Seeds derived from nearby
// numbers (1, 2, 3 ...; or (seed, epoch, index) triples) pass through it so their random
// streams are unrelated. Phantoms and training augmentation both draw their seeds this way.
#pragma once

#include <cstdint>

namespace boneage {

inline std::uint64_t splitmix64(std::uint64_t x) {
    x += 0x9e3779b97f4a7c15ULL;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
    return x ^ (x >> 31);
}

}  // namespace boneage
