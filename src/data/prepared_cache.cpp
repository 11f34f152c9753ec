// PreparedCache: a cache file written by prepare_dataset, memory-mapped read-only and checked
// before use, so a wrong or damaged file is a clear error rather than garbage pixels.
#include "data/cache_format.hpp"

#include <boneage/dataset.hpp>
#include <boneage/error.hpp>

#include <fcntl.h>
#include <fmt/format.h>
#include <nlohmann/json.hpp>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

namespace boneage {

namespace {

using namespace cache_format;

// The largest image side a cache may claim; guards the size arithmetic against a bad header.
constexpr std::int64_t kMaxImageSide = 8192;

// Maps the whole file read-only; returns the mapping and its size.
std::pair<void*, std::size_t> map_file(const std::filesystem::path& file) {
    int fd = ::open(file.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        throw Error(ErrorKind::NotFound, file, fmt::format("cannot open: {}", std::strerror(errno)));
    struct stat st {};
    if (::fstat(fd, &st) != 0) {
        int err = errno;
        ::close(fd);
        throw Error(ErrorKind::NotFound, file, fmt::format("cannot stat: {}", std::strerror(err)));
    }
    auto bytes = std::size_t(st.st_size);
    if (bytes < kPreambleBytes) {
        ::close(fd);
        throw Error(ErrorKind::BadData, file,
                    fmt::format("not a boneage cache ({} bytes, too short for the header)", bytes));
    }
    void* map = ::mmap(nullptr, bytes, PROT_READ, MAP_SHARED, fd, 0);
    int err = errno;
    ::close(fd);  // the mapping keeps the file open
    if (map == MAP_FAILED)
        throw Error(ErrorKind::NotFound, file, fmt::format("cannot map: {}", std::strerror(err)));
    return {map, bytes};
}

// A whole number of the header in [low, high]. A JSON float is refused rather than converted:
// converting one outside the integer's range is undefined behaviour.
std::int64_t whole_number(const nlohmann::json& header, const char* key, std::int64_t low,
                          std::int64_t high) {
    const nlohmann::json& v = header.at(key);
    const bool huge = v.is_number_unsigned() && v.get<std::uint64_t>() > std::uint64_t(high);
    if (!v.is_number_integer() || huge || v.get<std::int64_t>() < low ||
        v.get<std::int64_t>() > high)
        throw std::runtime_error(
            fmt::format("'{}' should be a whole number in {}..{}, got {}", key, low, high, v.dump()));
    return v.get<std::int64_t>();
}

template <typename T>
std::vector<T> read_array(const nlohmann::json& header, const char* key, std::size_t count) {
    const nlohmann::json& a = header.at(key);
    if (!a.is_array() || a.size() != count)
        throw std::runtime_error(fmt::format("'{}' should be an array of {} entries", key, count));
    return a.get<std::vector<T>>();
}

}  // namespace

PreparedCache::PreparedCache(const std::filesystem::path& file) : path_(file) {
    auto [map, bytes] = map_file(file);
    map_ = map;
    map_bytes_ = bytes;
    auto bad = [&](const std::string& reason) {
        ::munmap(map_, map_bytes_);
        map_ = nullptr;
        return Error(ErrorKind::BadData, file, reason);
    };
    const auto* base = static_cast<const std::uint8_t*>(map_);
    if (std::memcmp(base, kMagic, kMagicBytes) != 0) throw bad("not a boneage cache (wrong magic)");
    std::uint32_t version = get_u32(base + kMagicBytes);
    if (version != kVersion)
        throw bad(fmt::format("cache version {}, this build reads {}", version, kVersion));
    std::size_t header_bytes = get_u32(base + kMagicBytes + 4);
    if (kPreambleBytes + header_bytes > map_bytes_)
        throw bad(fmt::format("truncated: the header claims {} bytes, the file has {}",
                              header_bytes, map_bytes_));

    std::size_t count = 0;
    try {
        const char* text = reinterpret_cast<const char*>(base + kPreambleBytes);
        auto header = nlohmann::json::parse(text, text + header_bytes);
        count = std::size_t(whole_number(header, "count", 0, INT64_MAX));
        image_size_ = int(whole_number(header, "size", 1, kMaxImageSide));
        settings_ = header.at("settings").get<PreprocessSettings>();
        // Caches from before these keys were made with preprocessing version 1 (preprocess.hpp).
        preprocess_version_ =
            header.contains("preprocess_version")
                ? int(whole_number(header, "preprocess_version", INT32_MIN, INT32_MAX))
                : 1;
        if (preprocess_version_ < 1)
            throw std::runtime_error(
                fmt::format("preprocess_version {} is not a version", preprocess_version_));
        build_commit_ = header.value("build_commit", std::string("unknown"));
        ids_ = read_array<std::string>(header, "ids", count);
        ages_ = read_array<double>(header, "ages", count);
        for (bool m : read_array<bool>(header, "male", count)) male_.push_back(m ? 1 : 0);
    } catch (const std::exception& e) {  // nlohmann's parse and type errors, and ours above
        throw bad(fmt::format("corrupt header: {}", e.what()));
    }

    std::size_t offset = pixel_offset(header_bytes);
    std::size_t image_bytes = std::size_t(image_size_) * std::size_t(image_size_);
    if (count > map_bytes_ / image_bytes)  // also keeps count * image_bytes from overflowing
        throw bad(fmt::format("truncated: {} images of {}x{} cannot fit in {} bytes", count,
                              image_size_, image_size_, map_bytes_));
    std::size_t expected = offset + count * image_bytes;
    if (map_bytes_ < expected)
        throw bad(fmt::format("truncated: expected {} bytes, found {}", expected, map_bytes_));
    if (map_bytes_ > expected)
        throw bad(fmt::format("size mismatch: expected {} bytes, found {}", expected, map_bytes_));
    pixels_ = base + offset;
}

PreparedCache::~PreparedCache() {
    if (map_) ::munmap(map_, map_bytes_);
}

const std::uint8_t* PreparedCache::image(std::size_t i) const {
    if (i >= ids_.size())
        throw Error(ErrorKind::Internal, path_,
                    fmt::format("image {} requested from a cache of {}", i, ids_.size()));
    return pixels_ + i * std::size_t(image_size_) * std::size_t(image_size_);
}

}  // namespace boneage
