// Reading radiographs: PNG, JPEG, BMP, TIFF (8 or 16 bits; grey, RGB, RGBA or palette) and
// DICOM (modality LUT, then VOI LUT or window; MONOCHROME1 inverted; any bit depth).
// The format is chosen by content, not by the file name.
//
//   boneage::Radiograph r = boneage::read_radiograph("hand.dcm");
//   cv::Mat grey = r.pixels;                 // CV_8UC1 or CV_16UC1, original size
//   if (r.info.pixel_spacing_mm) ...         // from DICOM, when present
#pragma once

#include <boneage/error.hpp>

#include <opencv2/core.hpp>

#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>

namespace boneage {

// Refusal thresholds checked on the header, before any pixel is decoded.
struct ReadLimits {
    std::int64_t max_pixels = 100'000'000;  // width x height; a 1500x2000 film is 3 M
    int max_side = 30'000;                  // longest side in pixels
};

// What was learned about the file while reading it.
struct ImageInfo {
    std::string format;          // "png", "jpeg", "bmp", "tiff" or "dicom"
    int width = 0;
    int height = 0;
    int bits_stored = 8;         // bits per sample in the file (DICOM BitsStored; 8 or 16 otherwise)
    int channels = 1;            // samples per pixel in the file, before conversion to grey
    std::string photometric;     // "MONOCHROME1", "MONOCHROME2", "RGB", "PALETTE COLOR", ...
    bool inverted = false;       // true when MONOCHROME1 was inverted so bone is bright
    std::optional<double> pixel_spacing_mm;  // row spacing from DICOM PixelSpacing, when given
};

// One grey radiograph at its original size: CV_8UC1 for 8-bit sources, CV_16UC1 for deeper
// ones (DICOM values after the LUTs are rescaled to the full 16-bit range). Bone is bright.
struct Radiograph {
    cv::Mat pixels;
    ImageInfo info;
};

// Reads a radiograph. Throws boneage::Error naming the file and the reason (ErrorKind tells
// NotFound, Empty, NotAnImage, Truncated, TooLarge, Unsupported, NoPixelData).
Radiograph read_radiograph(const std::filesystem::path& file, const ReadLimits& limits = {});

// Converts a grey image of either depth to 8 bits, stretching 16-bit data over its own range.
cv::Mat to_8bit(const cv::Mat& grey);

// Writes a grey 8- or 16-bit image as an uncompressed DICOM secondary capture (for phantoms
// and tests). With `monochrome1`, the stored values are inverted and the photometric
// interpretation says so. `pixel_spacing_mm` > 0 is written as PixelSpacing.
void write_dicom(const std::filesystem::path& file, const cv::Mat& grey, bool monochrome1 = false,
                 double pixel_spacing_mm = 0.0);

// Writes an image with OpenCV; the format follows the extension. Throws boneage::Error.
void write_image(const std::filesystem::path& file, const cv::Mat& image);

}  // namespace boneage
