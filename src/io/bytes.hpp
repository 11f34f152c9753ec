// Bounds-checked reads of big- and little-endian integers from a file held in memory, for
// the header parsers. Every read past the end throws, so a cut-off header can never be read
// out of bounds.
#pragma once

#include <boneage/error.hpp>
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

namespace boneage::io {

class ByteView {
public:
    ByteView(const std::vector<std::uint8_t>& bytes, const std::filesystem::path& file,
             bool big_endian)
        : bytes_(bytes), file_(file), big_endian_(big_endian) {}

    std::size_t size() const { return bytes_.size(); }
    bool has(std::uint64_t offset, std::uint64_t count) const {
        return offset <= bytes_.size() && count <= bytes_.size() - offset;
    }

    std::uint8_t u8(std::uint64_t offset) const {
        return static_cast<std::uint8_t>(get(offset, 1));
    }
    std::uint16_t u16(std::uint64_t offset) const {
        return static_cast<std::uint16_t>(get(offset, 2));
    }
    std::uint32_t u32(std::uint64_t offset) const {
        return static_cast<std::uint32_t>(get(offset, 4));
    }
    std::uint64_t u64(std::uint64_t offset) const { return get(offset, 8); }

    // Throws Truncated with `what` when [offset, offset + count) is not inside the file.
    void require(std::uint64_t offset, std::uint64_t count, const std::string& what) const {
        if (!has(offset, count)) throw Error(ErrorKind::Truncated, file_, what);
    }

    [[noreturn]] void fail(const std::string& reason) const {
        throw Error(ErrorKind::Truncated, file_, reason);
    }

private:
    std::uint64_t get(std::uint64_t offset, int width) const {
        require(offset, static_cast<std::uint64_t>(width), "header ends early");
        std::uint64_t value = 0;
        for (int i = 0; i < width; ++i) {
            const int k = big_endian_ ? i : width - 1 - i;
            value = (value << 8) | bytes_[offset + static_cast<std::uint64_t>(k)];
        }
        return value;
    }

    const std::vector<std::uint8_t>& bytes_;
    const std::filesystem::path& file_;
    bool big_endian_;
};

}  // namespace boneage::io
