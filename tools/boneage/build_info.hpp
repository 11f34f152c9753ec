// The version and commit this binary was built from (bench footers, --version). They live in
// one generated file, so a new commit recompiles that file alone.
#pragma once

namespace boneage::cli {
const char* build_version();
const char* build_commit();
}  // namespace boneage::cli
