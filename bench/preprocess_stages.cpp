// Where preprocessing spends its time: each step of the chain timed on its own, one thread,
// over every PNG in a folder (decode, the hand finder's steps, crop + CLAHE + letterbox).
//
//   build/bench-preprocess-stages DIR [REPS]      (e.g. the phantoms scripts/bench writes)
#include "preprocess/hand_finder_steps.hpp"

#include <boneage/image.hpp>
#include <boneage/preprocess.hpp>

#include <fmt/format.h>
#include <opencv2/core.hpp>
#include <opencv2/imgproc.hpp>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <map>
#include <string>
#include <vector>

namespace {

using Clock = std::chrono::steady_clock;

class StageTimes {
public:
    template <class F>
    auto operator()(const std::string& stage, F&& step) {
        const auto start = Clock::now();
        auto result = step();
        total_ms_[stage] += std::chrono::duration<double, std::milli>(Clock::now() - start).count();
        return result;
    }
    void print(double images) const {
        fmt::print("| stage | ms/image |\n| --- | ---: |\n");
        for (const auto& [stage, ms] : total_ms_) fmt::print("| {} | {:.2f} |\n", stage, ms / images);
    }

private:
    std::map<std::string, double> total_ms_;  // keys start with a digit: the chain's order
};

}  // namespace

int main(int argc, char** argv) {
    using namespace boneage;
    if (argc < 2) {
        fmt::print(stderr, "usage: {} DIR [REPS]\n", argv[0]);
        return 2;
    }
    const int reps = argc > 2 ? std::max(1, std::atoi(argv[2])) : 3;
    std::vector<std::filesystem::path> files;
    for (const auto& entry : std::filesystem::directory_iterator(argv[1]))
        if (entry.path().extension() == ".png") files.push_back(entry.path());
    if (files.empty()) {
        fmt::print(stderr, "{}: no PNG files\n", argv[1]);
        return 2;
    }
    cv::setNumThreads(1);  // one core, so the steps add up to the whole
    const PreprocessSettings settings;
    StageTimes time;
    for (int rep = 0; rep < reps; ++rep)
        for (const auto& file : files) {
            const Radiograph r = time("0 decode", [&] { return read_radiograph(file); });
            const cv::Mat& grey = r.pixels;
            const cv::Mat small = time("1 detection copy (resize)", [&] {
                const double scale = std::min(
                    1.0, double(settings.detect_size) / std::max(grey.cols, grey.rows));
                cv::Mat out;
                cv::resize(grey, out, cv::Size(), scale, scale, cv::INTER_AREA);
                return out;
            });
            std::vector<std::string> warnings;
            const auto level = time("2 level background",
                                    [&] { return hand_finder::level_background(small, warnings); });
            time("3 mask + select (one rung)", [&] {
                const auto levels = hand_finder::tissue_levels(level, 0);
                return hand_finder::select_hand(hand_finder::foreground_mask(level, levels), level,
                                                levels);
            });
            const auto core = time("4 edge core", [&] { return hand_finder::find_edge_core(small); });
            time("5 soft tissue", [&] { return hand_finder::grow_soft_tissue(small, core); });
            const HandBox hand = time("6 find_hand, whole", [&] { return find_hand(grey, settings); });
            time("7 crop + CLAHE + letterbox", [&] {
                const cv::Rect crop = crop_box(hand.box, grey.size(), settings.crop_margin);
                return letterbox(apply_clahe(grey(crop), settings), settings.output_size);
            });
            time("8 preprocess, whole", [&] { return preprocess(r, settings); });
        }
    fmt::print("{} images x {} repetitions, one thread; 6 is 1-5 plus the rungs and second "
               "searches the finder takes, 8 is 6 + 7\n\n", files.size(), reps);
    time.print(double(files.size()) * reps);
}
