// The decoders behind read_radiograph, one per family of formats.
#pragma once

#include <boneage/image.hpp>
#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include "io/header.hpp"

namespace boneage::io {

// Throws TooLarge naming `file` when width x height or either side exceeds `limits`, and
// Unsupported when the shorter side is below limits.min_side or the aspect ratio above
// limits.max_aspect.
void check_limits(std::int64_t width, std::int64_t height, const ReadLimits& limits,
                  const std::filesystem::path& file);

// Decodes a PNG, JPEG, BMP or TIFF held in `bytes` with OpenCV into one grey channel.
Radiograph decode_raster(Format format, const std::vector<std::uint8_t>& bytes,
                         const std::filesystem::path& file, const ReadLimits& limits);

// Decodes a baseline or progressive JPEG with libjpeg into CV_8UC1 (grey) or CV_8UC3 (BGR; CMYK
// converted), as OpenCV would. Damaged data libjpeg decodes past adds one line to `warnings`.
// Returns an empty image, with libjpeg's message in `error`, when it cannot be decoded.
cv::Mat decode_jpeg(const std::vector<std::uint8_t>& bytes, std::vector<std::string>& warnings,
                    std::string& error);

// Decodes a PNG with libpng into what OpenCV's IMREAD_UNCHANGED gives: one grey channel, BGR,
// or BGRA where the file has alpha or transparency; 8 or 16 bits. A damaged ancillary chunk
// libpng reads past adds one line to `warnings`. Returns an empty image, with libpng's message
// in `error`, when it cannot be decoded.
cv::Mat decode_png(const std::vector<std::uint8_t>& bytes, std::vector<std::string>& warnings,
                   std::string& error);

// Reads a DICOM file with DCMTK: modality LUT, VOI window or LUT, MONOCHROME1 inverted.
Radiograph read_dicom(const std::filesystem::path& file, const ReadLimits& limits);

// Registers the DCMTK decoders and silences DCMTK's console logging; safe to call often.
void prepare_dcmtk();

}  // namespace boneage::io
