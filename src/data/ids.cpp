// Where a dataset's ids lead: to their image files, and to the validation split and the
// cross-validation folds, both fixed by a hash of the id alone.
#include <boneage/dataset.hpp>
#include <boneage/error.hpp>

#include <fmt/format.h>

#include <algorithm>
#include <cctype>
#include <cstdint>

namespace boneage {

namespace {
const char* const kExtensions[] = {".png", ".jpg", ".jpeg", ".dcm", ".tif", ".tiff", ".bmp"};
}  // namespace

bool has_image_extension(const std::filesystem::path& file) {
    std::string ext = file.extension().string();
    for (char& c : ext) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    for (const char* known : kExtensions)
        if (ext == known) return true;
    return false;
}

std::filesystem::path find_image(const std::filesystem::path& dir, const std::string& id) {
    // An id is a file stem, never a path: "../x" must not reach outside the folder.
    if (id.empty() || id.find('/') != std::string::npos || id == "." || id == "..") return {};
    for (const char* ext : kExtensions) {
        std::filesystem::path candidate = dir / (id + ext);
        std::error_code ec;
        if (std::filesystem::is_regular_file(candidate, ec)) return candidate;
    }
    return {};
}

double id_hash_fraction(const std::string& id) {
    // FNV-1a, 64 bits: fixed by its definition, unlike std::hash, so the split is the same
    // on every platform and standard library.
    std::uint64_t hash = 0xcbf29ce484222325ull;
    for (unsigned char c : id) {
        hash ^= c;
        hash *= 0x100000001b3ull;
    }
    // FNV-1a alone leaves ids that differ in the last digit close together (eight consecutive
    // RSNA ids fell on one side); MurmurHash3's 64-bit finaliser spreads them.
    hash ^= hash >> 33;
    hash *= 0xff51afd7ed558ccdull;
    hash ^= hash >> 33;
    hash *= 0xc4ceb9fe1a85ec53ull;
    hash ^= hash >> 33;
    return double(hash >> 11) * 0x1.0p-53;  // the top 53 bits, uniform in [0, 1)
}

bool in_validation_split(const std::string& id, double fraction) {
    return id_hash_fraction(id) < fraction;
}

int fold_of(const std::string& id, int folds) {
    if (folds < 2)
        throw UsageError(fmt::format("cross-validation needs at least 2 folds, not {}", folds));
    const double h = id_hash_fraction(id);
    // floor(h x K), then nudged so the fold edges are exactly the doubles k / K that a split
    // fraction would be: fold 0 of K is then in_validation_split(id, 1.0 / K), to the last id.
    int fold = std::min(folds - 1, static_cast<int>(h * folds));
    while (fold > 0 && h < static_cast<double>(fold) / folds) --fold;
    while (fold + 1 < folds && h >= static_cast<double>(fold + 1) / folds) ++fold;
    return fold;
}

}  // namespace boneage
