#include "io/header.hpp"

#include <cstring>

#include "io/bytes.hpp"

namespace boneage::io {

// TIFF lives in its own file; it needs more than a handful of fixed offsets.
RasterHeader read_tiff_header(const std::vector<std::uint8_t>& bytes,
                              const std::filesystem::path& file);

const char* format_name(Format format) {
    switch (format) {
        case Format::Png:
            return "png";
        case Format::Jpeg:
            return "jpeg";
        case Format::Bmp:
            return "bmp";
        case Format::Tiff:
            return "tiff";
        case Format::Dicom:
            return "dicom";
        case Format::Unknown:
            break;
    }
    return "unknown";
}

Format sniff_format(const std::uint8_t* b, std::size_t size) {
    auto starts = [&](const char* magic, std::size_t n) {
        return size >= n && std::memcmp(b, magic, n) == 0;
    };
    if (starts("\x89PNG\r\n\x1a\n", 8)) return Format::Png;
    if (starts("\xff\xd8\xff", 3)) return Format::Jpeg;
    if (starts("BM", 2) && size >= 26) return Format::Bmp;
    if (starts("II*\0", 4) || starts("MM\0*", 4) || starts("II+\0", 4) || starts("MM\0+", 4))
        return Format::Tiff;
    if (size >= 132 && std::memcmp(b + 128, "DICM", 4) == 0) return Format::Dicom;
    // A DICOM dataset written without the preamble starts with a little-endian tag of the
    // meta header (0002,xxxx) or the identifying group (0008,xxxx).
    if (size >= 8 && b[1] == 0 && (b[0] == 0x02 || b[0] == 0x08) && b[3] == 0) return Format::Dicom;
    return Format::Unknown;
}

namespace {

RasterHeader read_png_header(const std::vector<std::uint8_t>& bytes,
                             const std::filesystem::path& file) {
    const ByteView in(bytes, file, true);
    in.require(8, 25, "PNG ends inside its IHDR chunk");
    if (in.u32(8) != 13 || std::memcmp(&bytes[12], "IHDR", 4) != 0)
        in.fail("PNG does not start with an IHDR chunk");
    RasterHeader h;
    h.width = in.u32(16);
    h.height = in.u32(20);
    if (h.width == 0 || h.height == 0) in.fail("PNG header gives a zero size");
    h.bits = in.u8(24);
    switch (in.u8(25)) {
        case 0:
            h.channels = 1;
            h.photometric = "MONOCHROME2";
            break;
        case 2:
            h.channels = 3;
            h.photometric = "RGB";
            break;
        case 3:
            h.channels = 1;
            h.photometric = "PALETTE COLOR";
            break;
        case 4:
            h.channels = 2;
            h.photometric = "MONOCHROME2";
            break;
        case 6:
            h.channels = 4;
            h.photometric = "RGBA";
            break;
        default:
            in.fail("PNG header has an invalid colour type");
    }
    // Walk the chunks: libpng hands back a partly filled image when the data stops early, so
    // the only dependable sign of a whole file is reaching IEND inside it.
    std::uint64_t pos = 8;
    while (in.has(pos, 12)) {
        const std::uint64_t length = in.u32(pos);
        const bool end = std::memcmp(&bytes[pos + 4], "IEND", 4) == 0;
        pos += 12 + length;
        if (pos > bytes.size()) break;
        if (end) return h;
    }
    h.incomplete = "PNG ends before its IEND chunk";
    return h;
}

bool is_jpeg_frame_marker(std::uint8_t m) {
    return m >= 0xc0 && m <= 0xcf && m != 0xc4 && m != 0xc8 && m != 0xcc;
}

// Skips entropy-coded data from `pos` to the next marker that is not a restart marker or a
// stuffed 0xff; returns its position, or the file size when there is none.
std::uint64_t skip_entropy_data(const std::vector<std::uint8_t>& bytes, std::uint64_t pos) {
    for (; pos + 1 < bytes.size(); ++pos) {
        if (bytes[pos] != 0xff) continue;
        const std::uint8_t next = bytes[pos + 1];
        if (next == 0x00 || next == 0xff || (next >= 0xd0 && next <= 0xd7)) continue;
        return pos;
    }
    return bytes.size();
}

RasterHeader read_jpeg_header(const std::vector<std::uint8_t>& bytes,
                              const std::filesystem::path& file) {
    const ByteView in(bytes, file, true);
    RasterHeader h;
    bool have_frame = false;
    std::uint64_t pos = 2;
    while (true) {
        if (!in.has(pos, 2)) {
            if (!have_frame) in.fail("JPEG ends before its frame header");
            h.incomplete = "JPEG ends before its end-of-image marker";
            return h;
        }
        if (bytes[pos] != 0xff) in.fail("JPEG marker expected but not found");
        const std::uint8_t marker = bytes[pos + 1];
        if (marker == 0xff) {
            ++pos;
            continue;
        }  // fill byte
        if (marker == 0xd9) {
            if (!have_frame) in.fail("JPEG ends before its frame header");
            return h;
        }
        if (marker == 0x01 || (marker >= 0xd0 && marker <= 0xd8)) {
            pos += 2;
            continue;
        }
        if (!in.has(pos + 2, 2)) {  // reported at the top of the loop
            pos = bytes.size();
            continue;
        }
        const std::uint64_t length = in.u16(pos + 2);
        if (length < 2) in.fail("JPEG segment has an invalid length");
        if (is_jpeg_frame_marker(marker) && !have_frame) {
            in.require(pos + 4, 6, "JPEG ends inside its frame header");
            h.bits = in.u8(pos + 4);
            h.height = in.u16(pos + 5);
            h.width = in.u16(pos + 7);
            h.channels = in.u8(pos + 9);
            h.photometric = h.channels == 1 ? "MONOCHROME2" : h.channels == 4 ? "CMYK" : "RGB";
            if (h.width == 0 || h.height == 0) in.fail("JPEG frame header gives a zero size");
            have_frame = true;
        }
        if (marker == 0xda && !have_frame) in.fail("JPEG scan comes before its frame header");
        pos += 2 + length;
        if (marker == 0xda) pos = skip_entropy_data(bytes, pos);
        if (pos > bytes.size()) pos = bytes.size();
    }
}

RasterHeader read_bmp_header(const std::vector<std::uint8_t>& bytes,
                             const std::filesystem::path& file) {
    const ByteView in(bytes, file, false);
    const std::uint64_t data_offset = in.u32(10);
    const std::uint32_t info_size = in.u32(14);
    RasterHeader h;
    std::uint32_t compression = 0;
    if (info_size == 12) {  // the old OS/2 core header
        h.width = in.u16(18);
        h.height = in.u16(20);
        h.bits = in.u16(24);
    } else if (info_size >= 16) {
        h.width = static_cast<std::int32_t>(in.u32(18));
        h.height = static_cast<std::int32_t>(in.u32(22));
        h.bits = in.u16(28);
        if (info_size >= 20) compression = in.u32(30);
    } else {
        in.fail("BMP has an invalid info header");
    }
    if (h.height < 0) h.height = -h.height;  // negative height means rows stored top-down
    if (h.width <= 0 || h.height == 0) in.fail("BMP header gives an invalid size");
    h.channels = h.bits <= 8 ? 1 : h.bits == 32 ? 4 : 3;
    h.photometric = h.bits <= 8 ? "PALETTE COLOR" : "RGB";
    h.bits = 8;
    // Uncompressed rows (plain or with bit fields) have a known size; check they are all there.
    const int bits_per_pixel = in.u16(info_size == 12 ? 24 : 28);
    if (compression == 0 || compression == 3 || compression == 6) {
        const double row = static_cast<double>((h.width * bits_per_pixel + 31) / 32 * 4);
        if (static_cast<double>(data_offset) + row * static_cast<double>(h.height) >
            static_cast<double>(bytes.size()))
            h.incomplete = "BMP ends before its last row of pixels";
    }
    return h;
}

}  // namespace

RasterHeader read_raster_header(Format format, const std::vector<std::uint8_t>& bytes,
                                const std::filesystem::path& file) {
    switch (format) {
        case Format::Png:
            return read_png_header(bytes, file);
        case Format::Jpeg:
            return read_jpeg_header(bytes, file);
        case Format::Bmp:
            return read_bmp_header(bytes, file);
        case Format::Tiff:
            return read_tiff_header(bytes, file);
        default:
            break;
    }
    throw Error(ErrorKind::Internal, file, "not a raster format");
}

}  // namespace boneage::io
