// libFuzzer target: images of every format read_radiograph takes (PNG, JPEG, BMP, TIFF, DICOM),
// the format chosen by content.
#include "entry_points.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    boneage::fuzz::run_checked(boneage::fuzz::read_image, data, size);
    return 0;
}
