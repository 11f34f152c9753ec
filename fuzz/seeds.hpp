// The starting inputs of each fuzz target, made from phantoms and small hand-written files:
// what a well-formed input of each kind looks like, so the fuzzer starts inside the parsers
// rather than at their first check. fuzz/make_seeds writes them for the fuzzers;
// tests/test_fuzz_regressions.cpp feeds them to the entry points directly.
#pragma once

#include <string>
#include <vector>

namespace boneage::fuzz {

struct Seed {
    std::string name;   // a file name, unique within its target
    std::string bytes;
};

// The seeds of the target named `target` (entry_points.hpp's names). Throws boneage::Error
// when a seed that needs a file (DICOM, a model, a cache) cannot be written.
std::vector<Seed> make_seeds(const std::string& target);

}  // namespace boneage::fuzz
