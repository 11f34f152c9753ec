// Recognising an image file by its first bytes and reading its dimensions from the header,
// so a reader can refuse a huge or cut-off file before any pixel buffer is allocated.
#pragma once

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

namespace boneage::io {

enum class Format { Unknown, Png, Jpeg, Bmp, Tiff, Dicom };

// The lower-case name ImageInfo::format uses ("png", "jpeg", ..., "dicom").
const char* format_name(Format format);

// The format named by the magic bytes at the start of `bytes` (DICOM: "DICM" at offset 128,
// or a dataset that starts with a group 0002 or 0008 tag). Unknown when none matches.
Format sniff_format(const std::uint8_t* bytes, std::size_t size);

// What the header of a raster file (PNG, JPEG, BMP, TIFF) says, read without decoding.
struct RasterHeader {
    std::int64_t width = 0;
    std::int64_t height = 0;
    int channels = 1;         // samples per pixel in the file
    int bits = 8;             // bits per sample in the file
    std::string photometric;  // "MONOCHROME2", "RGB", "PALETTE COLOR", ...
    // TIFF only: the byte offset of the PhotometricInterpretation value (0 when absent), so a
    // WhiteIsZero file can be decoded as BlackIsZero and inverted here, the same at any depth.
    std::uint64_t photometric_at = 0;
    bool big_endian = false;
    // Empty when the file's structure is whole (PNG up to IEND, JPEG up to EOI, BMP rows and
    // TIFF strips inside the file); otherwise why it is not.
    std::string incomplete;
};

// Parses the header of a PNG, JPEG, BMP or TIFF held in `bytes`. Throws boneage::Error
// (Truncated) naming `file` when the header itself is cut off or malformed.
RasterHeader read_raster_header(Format format, const std::vector<std::uint8_t>& bytes,
                                const std::filesystem::path& file);

}  // namespace boneage::io
