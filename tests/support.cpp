#include "support.hpp"

#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iterator>
#include <random>

namespace boneage::test {

ScratchDir::ScratchDir(const std::string& name) {
    std::random_device rd;
    path_ = std::filesystem::temp_directory_path() /
            ("boneage-test-" + name + "-" + std::to_string(::getpid()) + "-" + std::to_string(rd()));
    std::filesystem::create_directories(path_);
}

ScratchDir::~ScratchDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
}

std::optional<std::filesystem::path> rsna_dev_dir() {
    std::filesystem::path dir;
    if (const char* env = std::getenv("BONEAGE_RSNA_DEV"))
        dir = env;
    else
        dir = std::filesystem::path(BONEAGE_SOURCE_DIR) / ".." / "shared" / "data" / "rsna-dev";
    if (std::filesystem::exists(dir / "labels.csv")) return std::filesystem::canonical(dir);
    return std::nullopt;
}

std::string shell_quote(const std::filesystem::path& path) { return "'" + path.string() + "'"; }

std::string read_text(const std::filesystem::path& file) {
    std::ifstream in(file);
    return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

int run_command(const std::string& command, std::string* output) {
    FILE* pipe = ::popen((command + " 2>&1").c_str(), "r");
    if (!pipe) return -1;
    std::string text;
    char buffer[4096];
    while (std::size_t n = std::fread(buffer, 1, sizeof buffer, pipe)) text.append(buffer, n);
    int status = ::pclose(pipe);
    if (output) *output = std::move(text);
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

}  // namespace boneage::test
