// The first image file directory (IFD) of a classic or BigTIFF file: size, samples, and
// whether every strip or tile it points to lies inside the file.
#include <algorithm>
#include <map>

#include "io/bytes.hpp"
#include "io/header.hpp"

namespace boneage::io {

namespace {

enum TiffTag : std::uint16_t {
    ImageWidth = 256,
    ImageLength = 257,
    BitsPerSample = 258,
    Photometric = 262,
    StripOffsets = 273,
    SamplesPerPixel = 277,
    StripByteCounts = 279,
    TileOffsets = 324,
    TileByteCounts = 325,
};

struct Entry {
    std::uint16_t type = 0;
    std::uint64_t count = 0;
    std::uint64_t value_at = 0;  // where the value (or the offset of the values) is stored
};

int type_size(std::uint16_t type) {
    switch (type) {
        case 1:
        case 2:
        case 6:
        case 7:
            return 1;  // BYTE, ASCII, SBYTE, UNDEFINED
        case 3:
        case 8:
            return 2;  // SHORT, SSHORT
        case 4:
        case 9:
        case 11:
        case 13:
            return 4;  // LONG, SLONG, FLOAT, IFD
        case 16:
        case 17:
        case 18:
            return 8;  // LONG8, SLONG8, IFD8 (BigTIFF)
        default:
            return 0;
    }
}

class Ifd {
public:
    Ifd(const std::vector<std::uint8_t>& bytes, const std::filesystem::path& file)
        : in_(bytes, file, bytes[0] == 'M') {
        big_ = in_.u16(2) == 43;
        const std::uint64_t first = big_ ? in_.u64(8) : in_.u32(4);
        const std::uint64_t count = big_ ? in_.u64(first) : in_.u16(first);
        const int entry_size = big_ ? 20 : 12;
        if (count > in_.size()) in_.fail("TIFF directory claims too many entries");
        const std::uint64_t start = first + (big_ ? 8 : 2);
        in_.require(start, count * entry_size, "TIFF ends inside its first directory");
        for (std::uint64_t i = 0; i < count; ++i) {
            const std::uint64_t at = start + i * entry_size;
            Entry e;
            e.type = in_.u16(at + 2);
            e.count = big_ ? in_.u64(at + 4) : in_.u32(at + 4);
            e.value_at = at + (big_ ? 12 : 8);
            entries_[in_.u16(at)] = e;
        }
    }

    bool has(std::uint16_t tag) const { return entries_.count(tag) != 0; }
    // Where the inline value of a SHORT tag sits; 0 when the tag is absent or of another type.
    std::uint64_t short_at(std::uint16_t tag) const {
        const auto found = entries_.find(tag);
        return found == entries_.end() || found->second.type != 3 ? 0 : found->second.value_at;
    }

    // All values of an integer tag; throws Truncated when they lie outside the file.
    std::vector<std::uint64_t> values(std::uint16_t tag) const {
        const auto found = entries_.find(tag);
        if (found == entries_.end()) return {};
        const Entry& e = found->second;
        const int size = type_size(e.type);
        if (size == 0 || size == 1)
            in_.fail("TIFF tag " + std::to_string(tag) + " has an odd type");
        if (e.count > in_.size())
            in_.fail("TIFF tag " + std::to_string(tag) + " claims too many values");
        std::uint64_t at = e.value_at;
        const std::uint64_t inline_bytes = big_ ? 8 : 4;
        if (e.count * static_cast<std::uint64_t>(size) > inline_bytes)
            at = big_ ? in_.u64(e.value_at) : in_.u32(e.value_at);
        in_.require(at, e.count * static_cast<std::uint64_t>(size),
                    "TIFF ends inside the values of tag " + std::to_string(tag));
        std::vector<std::uint64_t> out(e.count);
        for (std::uint64_t i = 0; i < e.count; ++i) {
            const std::uint64_t p = at + i * static_cast<std::uint64_t>(size);
            out[i] = size == 2 ? in_.u16(p) : size == 4 ? in_.u32(p) : in_.u64(p);
        }
        return out;
    }

    std::uint64_t first(std::uint16_t tag, std::uint64_t fallback) const {
        const auto v = values(tag);
        return v.empty() ? fallback : v.front();
    }

    const ByteView& view() const { return in_; }

private:
    ByteView in_;
    bool big_ = false;
    std::map<std::uint16_t, Entry> entries_;
};

const char* tiff_photometric(std::uint64_t code) {
    switch (code) {
        case 0:
            return "MONOCHROME1";  // WhiteIsZero
        case 1:
            return "MONOCHROME2";  // BlackIsZero
        case 2:
            return "RGB";
        case 3:
            return "PALETTE COLOR";
        case 5:
            return "CMYK";
        case 6:
            return "YBR_FULL";
        default:
            return "OTHER";
    }
}

// Empty when every (offset, byte count) pair ends inside the file.
std::string missing_data(const Ifd& ifd, std::uint16_t offsets_tag, std::uint16_t counts_tag,
                         std::size_t file_size) {
    const auto offsets = ifd.values(offsets_tag);
    const auto counts = ifd.values(counts_tag);
    if (offsets.empty()) return "TIFF has no image data";
    for (std::size_t i = 0; i < offsets.size() && i < counts.size(); ++i) {
        if (offsets[i] > file_size || counts[i] > file_size - offsets[i])
            return "TIFF ends before its last block of pixels";
    }
    return {};
}

}  // namespace

RasterHeader read_tiff_header(const std::vector<std::uint8_t>& bytes,
                              const std::filesystem::path& file) {
    const Ifd ifd(bytes, file);
    RasterHeader h;
    h.width = static_cast<std::int64_t>(ifd.first(ImageWidth, 0));
    h.height = static_cast<std::int64_t>(ifd.first(ImageLength, 0));
    if (h.width <= 0 || h.height <= 0) ifd.view().fail("TIFF directory gives no image size");
    h.channels = static_cast<int>(std::min<std::uint64_t>(ifd.first(SamplesPerPixel, 1), 64));
    h.bits = static_cast<int>(std::min<std::uint64_t>(ifd.first(BitsPerSample, 1), 64));
    h.photometric = tiff_photometric(ifd.first(Photometric, 1));
    h.photometric_at = ifd.short_at(Photometric);
    h.big_endian = bytes[0] == 'M';
    h.incomplete = ifd.has(TileOffsets)
                       ? missing_data(ifd, TileOffsets, TileByteCounts, bytes.size())
                       : missing_data(ifd, StripOffsets, StripByteCounts, bytes.size());
    return h;
}

}  // namespace boneage::io
