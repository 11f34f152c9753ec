// Helpers shared by the tests: scratch folders and the optional real data.
#pragma once

#include <filesystem>
#include <optional>
#include <string>

namespace boneage::test {

// A fresh, empty folder under the system temp dir, removed when the object dies.
class ScratchDir {
public:
    explicit ScratchDir(const std::string& name);
    ~ScratchDir();
    const std::filesystem::path& path() const { return path_; }
    std::filesystem::path operator/(const std::string& leaf) const { return path_ / leaf; }

private:
    std::filesystem::path path_;
};

// ../shared/data/rsna-dev beside the source tree (or $BONEAGE_RSNA_DEV), when present.
// Tests that need it GTEST_SKIP() with a message when this is empty.
std::optional<std::filesystem::path> rsna_dev_dir();

// The path in single quotes, for a shell command line (no path the tests make holds a quote).
std::string shell_quote(const std::filesystem::path& path);

// A whole file as text; empty when it cannot be read.
std::string read_text(const std::filesystem::path& file);

// Runs a shell command line, returns its exit status and puts stdout+stderr in `output`.
int run_command(const std::string& command, std::string* output = nullptr);

}  // namespace boneage::test
