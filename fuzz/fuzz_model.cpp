// libFuzzer target: model files (header, metadata JSON, LibTorch weights archive).
#include "entry_points.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    boneage::fuzz::run_checked(boneage::fuzz::load_model_file, data, size);
    return 0;
}
