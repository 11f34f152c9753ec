// libFuzzer target: labels files (lenient and strict) and prediction manifests.
#include "entry_points.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    boneage::fuzz::run_checked(boneage::fuzz::read_labels, data, size);
    return 0;
}
