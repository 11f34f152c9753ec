// A terminal progress bar for long work: "prepare  [=====>     ]  412/1000  41%  ETA 0:52  msg".
// Drawn on stderr, redrawn in place on a terminal and at most every few seconds otherwise,
// so logs stay readable. Thread-safe: update() may be called from worker threads.
#pragma once

#include <chrono>
#include <cstddef>
#include <mutex>
#include <string>

namespace boneage::cli {

class ProgressBar {
public:
    ProgressBar(std::string label, std::size_t total);
    ~ProgressBar();  // finishes the line if finish() was not called

    // Sets the count done and an optional message shown after the ETA (e.g. "loss 0.031").
    void update(std::size_t done, const std::string& message = {});
    void finish(const std::string& message = {});

private:
    void draw(bool final);

    std::string label_;
    std::size_t total_;
    std::size_t done_ = 0;
    std::string message_;
    bool tty_;
    bool finished_ = false;
    std::chrono::steady_clock::time_point start_;
    std::chrono::steady_clock::time_point last_draw_;
    std::mutex mutex_;
};

// "1:05:09" or "4:07" for a duration in seconds.
std::string format_duration(double seconds);

}  // namespace boneage::cli
