#include "progress_bar.hpp"

#include <unistd.h>

#include <cmath>
#include <cstdio>

namespace boneage::cli {

std::string format_duration(double seconds) {
    if (!std::isfinite(seconds) || seconds < 0) return "?";
    long s = std::lround(seconds);
    char buf[32];
    if (s >= 3600)
        std::snprintf(buf, sizeof buf, "%ld:%02ld:%02ld", s / 3600, s / 60 % 60, s % 60);
    else
        std::snprintf(buf, sizeof buf, "%ld:%02ld", s / 60, s % 60);
    return buf;
}

ProgressBar::ProgressBar(std::string label, std::size_t total)
    : label_(std::move(label)), total_(total), tty_(::isatty(STDERR_FILENO) != 0),
      start_(std::chrono::steady_clock::now()), last_draw_(start_) {}

ProgressBar::~ProgressBar() {
    if (!finished_) finish();
}

void ProgressBar::update(std::size_t done, const std::string& message) {
    std::lock_guard<std::mutex> lock(mutex_);
    done_ = done;
    if (!message.empty()) message_ = message;
    auto now = std::chrono::steady_clock::now();
    // Redraw at most 10 times a second on a terminal, every 5 s in a log.
    auto gap = tty_ ? std::chrono::milliseconds(100) : std::chrono::milliseconds(5000);
    if (now - last_draw_ >= gap || (tty_ && done_ == total_)) {
        last_draw_ = now;
        draw(false);
    }
}

void ProgressBar::finish(const std::string& message) {
    std::lock_guard<std::mutex> lock(mutex_);
    if (finished_) return;
    if (!message.empty()) message_ = message;
    finished_ = true;
    draw(true);
}

void ProgressBar::draw(bool final) {
    using namespace std::chrono;
    double elapsed = duration<double>(steady_clock::now() - start_).count();
    double fraction = total_ ? double(done_) / double(total_) : 1.0;
    constexpr int kWidth = 30;
    int filled = int(fraction * kWidth);
    std::string bar(kWidth, ' ');
    for (int i = 0; i < filled && i < kWidth; ++i) bar[i] = '=';
    if (filled < kWidth) bar[filled] = '>';
    std::string timing = final ? "in " + format_duration(elapsed)
                               : "ETA " + format_duration(done_ ? elapsed * (1 - fraction) / fraction
                                                                : NAN);
    std::fprintf(stderr, "%s%-10s [%s] %zu/%zu %3.0f%%  %s  %s%s", tty_ ? "\r\033[K" : "",
                 label_.c_str(), bar.c_str(), done_, total_, fraction * 100, timing.c_str(),
                 message_.c_str(), (final || !tty_) ? "\n" : "");
    std::fflush(stderr);
}

}  // namespace boneage::cli
