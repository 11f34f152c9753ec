// SHA-256 digests (OpenSSL's libcrypto), which name a file by its content: the same digest,
// the same bytes.
//
//   std::string hex = boneage::file_sha256("model.bin");   // 64 lowercase hex digits
//   boneage::Sha256 h;  h.update(bytes.data(), bytes.size());  std::string d = h.hex();
#pragma once

#include <cstddef>
#include <filesystem>
#include <memory>
#include <string>

namespace boneage {

// A digest fed in pieces. hex() ends it; update() after that throws boneage::Error (Internal).
class Sha256 {
public:
    Sha256();
    ~Sha256();
    Sha256(const Sha256&) = delete;
    Sha256& operator=(const Sha256&) = delete;

    void update(const void* data, std::size_t size);
    // The digest of everything fed, 64 lowercase hex digits.
    std::string hex();

private:
    struct State;
    std::unique_ptr<State> state_;
};

// The digest of `size` bytes at `data`, 64 lowercase hex digits.
std::string sha256_hex(const void* data, std::size_t size);

// The digest of a whole file. Throws boneage::Error (NotFound) naming the file when it cannot
// be read.
std::string file_sha256(const std::filesystem::path& file);

}  // namespace boneage
