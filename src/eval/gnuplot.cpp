#include "eval/gnuplot.hpp"

#include <boneage/error.hpp>
#include <boneage/evaluate.hpp>

#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <fstream>
#include <sstream>

namespace boneage::gnuplot {

namespace {

// The text in single quotes for /bin/sh.
std::string shell_quote(const std::string& text) {
    std::string out = "'";
    for (char c : text) out += c == '\'' ? std::string("'\\''") : std::string(1, c);
    return out + "'";
}

std::string read_tail(const std::filesystem::path& file, std::size_t max_chars) {
    std::ifstream in(file);
    std::stringstream ss;
    ss << in.rdbuf();
    std::string text = ss.str();
    return text.size() > max_chars ? "..." + text.substr(text.size() - max_chars) : text;
}

// A whole PNG ends with its IEND chunk: zero length, "IEND", then that chunk's CRC.
bool ends_with_png_trailer(const std::filesystem::path& file) {
    static const unsigned char kTrailer[12] = {0, 0, 0, 0, 'I', 'E', 'N', 'D',
                                               0xAE, 0x42, 0x60, 0x82};
    std::ifstream in(file, std::ios::binary | std::ios::ate);
    if (!in || in.tellg() < std::streamoff(sizeof kTrailer)) return false;
    in.seekg(-std::streamoff(sizeof kTrailer), std::ios::end);
    unsigned char tail[sizeof kTrailer];
    in.read(reinterpret_cast<char*>(tail), sizeof tail);
    return in && std::equal(std::begin(tail), std::end(tail), std::begin(kTrailer));
}

}  // namespace

std::filesystem::path executable() {
    const char* path = std::getenv("PATH");
    std::stringstream dirs(path ? path : "/usr/bin:/bin");
    std::string dir;
    while (std::getline(dirs, dir, ':')) {
        if (dir.empty()) continue;
        std::filesystem::path candidate = std::filesystem::path(dir) / "gnuplot";
        if (::access(candidate.c_str(), X_OK) == 0) return candidate;
    }
    return {};
}

const std::string& png_terminal() {
    static const std::string terminal = [] {
        std::filesystem::path exe = executable();
        if (exe.empty()) return std::string("png");
        std::string probe = shell_quote(exe.string()) +
                            " -e 'set terminal pngcairo' </dev/null >/dev/null 2>&1";
        return std::string(std::system(probe.c_str()) == 0 ? "pngcairo" : "png");
    }();
    return terminal;
}

std::string quote_text(const std::string& text) {
    std::string out = "'";
    for (char c : text) out += c == '\'' ? std::string("''") : std::string(1, c);
    return out + "'";
}

std::string quote(const std::filesystem::path& path) { return quote_text(path.string()); }

void run(const std::filesystem::path& script, const std::filesystem::path& output) {
    std::filesystem::path exe = executable();
    if (exe.empty())
        throw Error(ErrorKind::NotFound, script,
                    "gnuplot is not installed (apt-get install gnuplot-nox); it draws the "
                    "report's figures");
    std::filesystem::path log = script.string() + ".log";
    std::error_code ec;
    std::filesystem::remove(output, ec);
    std::string command = shell_quote(exe.string()) + " " + shell_quote(script.string()) +
                          " </dev/null >" + shell_quote(log.string()) + " 2>&1";
    int status = std::system(command.c_str());
    if (status != 0 || !std::filesystem::exists(output)) {
        std::filesystem::remove(output, ec);
        throw Error(ErrorKind::Internal, script,
                    "gnuplot failed (status " + std::to_string(status) + "): " + read_tail(log, 600));
    }
    // gnuplot exits 0 even when the disk filled under it; a PNG without its closing chunk is
    // a cut figure, never left under the final name.
    if (!ends_with_png_trailer(output)) {
        std::filesystem::remove(output, ec);
        throw Error(ErrorKind::CannotWrite, output,
                    "the figure was cut short while being written (disk full?): " +
                        read_tail(log, 300));
    }
}

}  // namespace boneage::gnuplot

namespace boneage {
bool gnuplot_available() { return !gnuplot::executable().empty(); }
}  // namespace boneage
