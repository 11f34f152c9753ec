// Where preprocessing spends its time, on one thread: find_hand step by step (the steps' own
// clocks, hand_finder::StepClock), then decoding and the rest of the chain. Every image is run
// once untimed, then REPS times; a step's time on an image is the median of its REPS times,
// and the table gives the median and the mean of those over the images (steps that run on
// some images only, such as the median background's search, count 0 on the others; the last
// column says on how many they ran). Times are the thread's CPU time, so other processes
// sharing the core do not count in them.
//
//   build/bench-preprocess-stages DIR [REPS] [FILES]   (FILES: at most this many, in name order)
#include "preprocess/hand_finder_steps.hpp"

#include <boneage/image.hpp>
#include <boneage/preprocess.hpp>

#include <fmt/format.h>
#include <opencv2/core.hpp>

#include <algorithm>
#include <cstdlib>
#include <ctime>
#include <filesystem>
#include <map>
#include <numeric>
#include <string>
#include <vector>

namespace {

using boneage::hand_finder::StepClock;

using boneage::hand_finder::thread_cpu_ms;

double median(std::vector<double> v) {
    if (v.empty()) return 0.0;
    std::sort(v.begin(), v.end());
    return v.size() % 2 ? v[v.size() / 2] : 0.5 * (v[v.size() / 2 - 1] + v[v.size() / 2]);
}

// One repetition's times on one image: the finder's steps and the chain's stages.
StepClock::Totals time_once(const std::filesystem::path& file,
                            const boneage::PreprocessSettings& settings) {
    StepClock::Totals totals;
    double start = thread_cpu_ms();
    const boneage::Radiograph r = boneage::read_radiograph(file);
    totals["~ decode"] = thread_cpu_ms() - start;
    const cv::Mat grey = boneage::to_grey8(r.pixels, "bench");
    boneage::HandBox hand;
    {
        const StepClock::Recording recording(totals);
        hand = boneage::find_hand(grey, settings);
    }
    start = thread_cpu_ms();
    const cv::Rect crop = boneage::crop_box(hand.box, grey.size(), settings.crop_margin);
    const cv::Mat out = boneage::letterbox(boneage::apply_clahe(grey(crop), settings),
                                           settings.output_size);
    totals["~ crop, CLAHE, letterbox"] = thread_cpu_ms() - start;
    return totals;
}

}  // namespace

int main(int argc, char** argv) {
    if (argc < 2) {
        fmt::print(stderr, "usage: {} DIR [REPS] [FILES]\n", argv[0]);
        return 2;
    }
    const int reps = argc > 2 ? std::max(1, std::atoi(argv[2])) : 3;
    std::vector<std::filesystem::path> files;
    for (const auto& entry : std::filesystem::directory_iterator(argv[1]))
        if (entry.path().extension() == ".png") files.push_back(entry.path());
    std::sort(files.begin(), files.end());
    if (argc > 3) files.resize(std::min<std::size_t>(files.size(), std::max(1, std::atoi(argv[3]))));
    if (files.empty()) {
        fmt::print(stderr, "{}: no PNG files\n", argv[1]);
        return 2;
    }
    cv::setNumThreads(1);
    const boneage::PreprocessSettings settings;
    std::map<std::string, std::vector<double>> per_image;  // step -> its median on each image
    for (std::size_t i = 0; i < files.size(); ++i) {
        time_once(files[i], settings);  // warm-up
        std::map<std::string, std::vector<double>> reps_ms;
        for (int rep = 0; rep < reps; ++rep)
            for (const auto& [step, ms] : time_once(files[i], settings)) reps_ms[step].push_back(ms);
        for (auto& [step, ms] : reps_ms) {
            std::vector<double>& column = per_image[step];
            column.resize(i, 0.0);  // the images before this one where the step did not run
            ms.resize(reps, 0.0);
            column.push_back(median(ms));
        }
    }
    fmt::print("{} images x {} repetitions, one thread, CPU ms. Steps nest: 0 holds 1-5; 2 and 3 "
               "hold s1-s3 (s1 holds l*, s2 m*, s3 c*); 4 holds e*; 5 holds t*.\n\n",
               files.size(), reps);
    fmt::print("| step | median | mean | images |\n| --- | ---: | ---: | ---: |\n");
    for (auto& [step, column] : per_image) {
        const auto ran = std::count_if(column.begin(), column.end(), [](double v) { return v > 0; });
        column.resize(files.size(), 0.0);
        fmt::print("| {} | {:.2f} | {:.2f} | {} |\n", step, median(column),
                   std::accumulate(column.begin(), column.end(), 0.0) / column.size(), ran);
    }
}
