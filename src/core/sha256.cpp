// SHA-256 through OpenSSL's EVP interface, which picks the CPU's SHA instructions where there
// are some.
#include <boneage/error.hpp>
#include <boneage/sha256.hpp>

#include <fmt/format.h>
#include <openssl/evp.h>

#include <fstream>
#include <vector>

namespace boneage {

struct Sha256::State {
    EVP_MD_CTX* ctx = nullptr;
    bool done = false;
};

Sha256::Sha256() : state_(std::make_unique<State>()) {
    state_->ctx = EVP_MD_CTX_new();
    if (!state_->ctx || EVP_DigestInit_ex(state_->ctx, EVP_sha256(), nullptr) != 1)
        throw Error(ErrorKind::Internal, "OpenSSL could not start a SHA-256 digest");
}

Sha256::~Sha256() { EVP_MD_CTX_free(state_->ctx); }

void Sha256::update(const void* data, std::size_t size) {
    if (state_->done) throw Error(ErrorKind::Internal, "SHA-256 fed after its digest was taken");
    if (size > 0 && EVP_DigestUpdate(state_->ctx, data, size) != 1)
        throw Error(ErrorKind::Internal, "OpenSSL could not update a SHA-256 digest");
}

std::string Sha256::hex() {
    if (state_->done) throw Error(ErrorKind::Internal, "SHA-256 digest taken twice");
    state_->done = true;
    unsigned char digest[EVP_MAX_MD_SIZE];
    unsigned int length = 0;
    if (EVP_DigestFinal_ex(state_->ctx, digest, &length) != 1)
        throw Error(ErrorKind::Internal, "OpenSSL could not finish a SHA-256 digest");
    std::string out;
    out.reserve(2 * length);
    for (unsigned int i = 0; i < length; ++i) out += fmt::format("{:02x}", digest[i]);
    return out;
}

std::string sha256_hex(const void* data, std::size_t size) {
    Sha256 h;
    h.update(data, size);
    return h.hex();
}

std::string file_sha256(const std::filesystem::path& file) {
    std::ifstream in(file, std::ios::binary);
    if (!in) throw Error(ErrorKind::NotFound, file, "cannot be opened to compute its SHA-256");
    Sha256 h;
    std::vector<char> buffer(std::size_t(1) << 20);
    while (in.read(buffer.data(), static_cast<std::streamsize>(buffer.size())) || in.gcount() > 0)
        h.update(buffer.data(), static_cast<std::size_t>(in.gcount()));
    if (in.bad())
        throw Error(ErrorKind::NotFound, file, "could not be read to compute its SHA-256");
    return h.hex();
}

}  // namespace boneage
