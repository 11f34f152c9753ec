// libFuzzer target: one connection's bytes to the HTTP intake, httplib's parser and a
// multipart upload route.
#include "entry_points.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    boneage::fuzz::run_checked(boneage::fuzz::serve_http, data, size);
    return 0;
}
