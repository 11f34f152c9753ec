// The preprocessing version that models and caches record, compared with this build's.
#include <boneage/preprocess.hpp>

#include <fmt/format.h>

namespace boneage {

std::string preprocess_version_mismatch(const std::filesystem::path& file, int file_version) {
    if (file_version == kPreprocessVersion) return {};
    return fmt::format(
        "{}: made with preprocessing version {}, this build prepares images with preprocessing "
        "version {}; images prepared now may differ from the ones it was made from",
        file.string(), file_version, kPreprocessVersion);
}

}  // namespace boneage
