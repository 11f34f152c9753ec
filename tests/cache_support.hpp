// Rewriting a prepared cache's header JSON in place, for tests of what a cache records.
#pragma once

#include <filesystem>
#include <fstream>
#include <functional>
#include <iterator>
#include <nlohmann/json.hpp>
#include <stdexcept>
#include <string>

#include "data/cache_format.hpp"

namespace boneage::test {

// Passes `file`'s header JSON through `change` and writes it back padded with spaces to its
// reserved size, as the writer pads it. Throws std::runtime_error when the new header does not
// fit there.
inline void edit_cache_header(const std::filesystem::path& file,
                              const std::function<void(nlohmann::json&)>& change) {
    std::ifstream in(file, std::ios::binary);
    std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    in.close();
    const auto* p = reinterpret_cast<const std::uint8_t*>(bytes.data());
    const std::size_t size = cache_format::get_u32(p + cache_format::kMagicBytes + 4);
    nlohmann::json header = nlohmann::json::parse(bytes.substr(cache_format::kPreambleBytes, size));
    change(header);
    std::string text = header.dump();
    if (text.size() > size) throw std::runtime_error("the edited header outgrows its space");
    text.resize(size, ' ');
    bytes.replace(cache_format::kPreambleBytes, size, text);
    std::ofstream(file, std::ios::binary | std::ios::trunc) << bytes;
}

}  // namespace boneage::test
