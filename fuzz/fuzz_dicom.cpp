// libFuzzer target: the DICOM reader (DCMTK behind read_radiograph), from DICOM seeds.
#include "entry_points.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    boneage::fuzz::run_checked(boneage::fuzz::read_dicom, data, size);
    return 0;
}
