// Uploads: recognised by content, stored under generated names.
#include "serve/upload.hpp"

#include <fmt/format.h>
#include <openssl/evp.h>
#include <unistd.h>

#include <atomic>
#include <boneage/error.hpp>
#include <chrono>
#include <fstream>

namespace boneage::serve {

std::string image_extension(const std::string& b) {
    auto starts = [&](const char* sig, std::size_t n) {
        return b.size() >= n && b.compare(0, n, sig, n) == 0;
    };
    if (starts("\x89PNG\r\n\x1a\n", 8)) return "png";
    if (starts("\xff\xd8\xff", 3)) return "jpg";
    if (starts("II*\0", 4) || starts("MM\0*", 4)) return "tif";
    if (starts("BM", 2)) return "bmp";
    if (b.size() >= 132 && b.compare(128, 4, "DICM") == 0) return "dcm";
    return {};
}

std::filesystem::path write_upload(const std::filesystem::path& dir, const std::string& bytes,
                                   const std::string& ext) {
    // Unique within the process by the counter, across restarts by the pid and the clock.
    static std::atomic<unsigned long> counter{0};
    const auto ticks = std::chrono::steady_clock::now().time_since_epoch().count();
    std::filesystem::path file =
        dir / fmt::format(".upload-{}-{}-{}.{}", ::getpid(), ticks, counter++, ext);
    std::ofstream out(file, std::ios::binary | std::ios::trunc);
    out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
    out.close();
    if (!out) throw Error(ErrorKind::NotFound, file, "the upload could not be written");
    return file;
}

std::string file_sha256(const std::filesystem::path& file) {
    std::ifstream in(file, std::ios::binary);
    if (!in) throw Error(ErrorKind::NotFound, file, "cannot be opened to compute its SHA-256");
    EVP_MD_CTX* ctx = EVP_MD_CTX_new();
    EVP_DigestInit_ex(ctx, EVP_sha256(), nullptr);
    char buffer[1 << 16];
    while (in.read(buffer, sizeof buffer) || in.gcount() > 0)
        EVP_DigestUpdate(ctx, buffer, static_cast<std::size_t>(in.gcount()));
    unsigned char digest[EVP_MAX_MD_SIZE];
    unsigned int length = 0;
    EVP_DigestFinal_ex(ctx, digest, &length);
    EVP_MD_CTX_free(ctx);
    std::string hex;
    for (unsigned int i = 0; i < length; ++i) hex += fmt::format("{:02x}", digest[i]);
    return hex;
}

std::string display_name(const std::string& name) {
    std::string base = name.substr(
        name.find_last_of("/\\") == std::string::npos ? 0 : name.find_last_of("/\\") + 1);
    std::string out;
    for (char c : base)
        if (c >= 0x20 && c < 0x7f && out.size() < 120) out += c;
    return out;
}

}  // namespace boneage::serve
