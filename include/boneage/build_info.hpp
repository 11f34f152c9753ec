// The version and commit this library was built from, for what it writes and answers (model
// files, caches, predictions, --version). They live in one file CMake generates, so a new
// commit recompiles that file alone.
//
//   std::cout << "boneage " << boneage::build_version() << " (" << boneage::build_commit() << ")";
#pragma once

namespace boneage {

// The project version, e.g. "0.1.0".
const char* build_version();

// The short commit of the source tree the build was configured from; "unknown" outside git.
const char* build_commit();

}  // namespace boneage
