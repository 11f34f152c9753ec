// The version and commit this binary was built from (bench footers, --version): the library's
// own (boneage/build_info.hpp), so the CLI and what the library writes never disagree.
#pragma once

#include <boneage/build_info.hpp>

namespace boneage::cli {
using boneage::build_commit;
using boneage::build_version;
}  // namespace boneage::cli
