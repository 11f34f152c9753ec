// libFuzzer target: prepared caches, opened and every image read.
#include "entry_points.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    boneage::fuzz::run_checked(boneage::fuzz::open_prepared_cache, data, size);
    return 0;
}
