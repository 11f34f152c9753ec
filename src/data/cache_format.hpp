// The on-disk layout of the prepared cache, shared by the writer (prepare.cpp) and the reader
// (prepared_cache.cpp). See PreparedCache in include/boneage/dataset.hpp.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>

namespace boneage::cache_format {

// 16 bytes: the name, then NULs, so `head -c 13` of a cache reads "BONEAGE-CACHE".
inline constexpr char kMagic[16] = {'B', 'O', 'N', 'E', 'A', 'G', 'E', '-',
                                    'C', 'A', 'C', 'H', 'E', '\0', '\0', '\0'};
inline constexpr std::size_t kMagicBytes = sizeof kMagic;

// magic, u32 version, u32 header_bytes; the header JSON follows.
inline constexpr std::size_t kPreambleBytes = kMagicBytes + 4 + 4;

// The preamble's numbers are little-endian whatever the host's byte order: written with
// put_u32 and read with get_u32, the only two places that know it.
inline std::array<std::uint8_t, 4> put_u32(std::uint32_t v) {
    return {std::uint8_t(v), std::uint8_t(v >> 8), std::uint8_t(v >> 16), std::uint8_t(v >> 24)};
}
inline std::uint32_t get_u32(const std::uint8_t* p) {
    return std::uint32_t(p[0]) | std::uint32_t(p[1]) << 8 | std::uint32_t(p[2]) << 16 |
           std::uint32_t(p[3]) << 24;
}

// Pixels start on a 64-byte boundary so rows can be read with aligned vector loads.
inline constexpr std::size_t kPixelAlignment = 64;

inline constexpr std::size_t align_up(std::size_t n, std::size_t alignment) {
    return (n + alignment - 1) / alignment * alignment;
}

// Where the pixels start for a header of `header_bytes`.
inline constexpr std::size_t pixel_offset(std::size_t header_bytes) {
    return align_up(kPreambleBytes + header_bytes, kPixelAlignment);
}

}  // namespace boneage::cache_format
