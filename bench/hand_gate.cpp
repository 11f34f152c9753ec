// What the refusal step adds per image: the hand gate (rules + network) beside decoding and
// the preprocessing that every accepted image goes through anyway, one thread, over every PNG
// in a folder.
//
//   build/bench-hand-gate DIR [REPS] [GATE]    (GATE: default the bundled models/hand_gate.bin)
#include <fmt/format.h>
#include <torch/torch.h>

#include <algorithm>
#include <boneage/hand_gate.hpp>
#include <boneage/image.hpp>
#include <boneage/preprocess.hpp>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <opencv2/core.hpp>
#include <vector>

int main(int argc, char** argv) {
    using namespace boneage;
    using Clock = std::chrono::steady_clock;
    if (argc < 2) {
        fmt::print(stderr, "usage: {} DIR [REPS] [GATE]\n", argv[0]);
        return 2;
    }
    const int reps = argc > 2 ? std::max(1, std::atoi(argv[2])) : 3;
    const std::filesystem::path gate_file =
        argc > 3 ? std::filesystem::path(argv[3]) : default_gate_path();
    if (gate_file.empty()) {
        fmt::print(stderr, "no hand gate: pass one as the third argument\n");
        return 2;
    }
    std::vector<std::filesystem::path> files;
    for (const auto& entry : std::filesystem::directory_iterator(argv[1]))
        if (entry.path().extension() == ".png") files.push_back(entry.path());
    if (files.empty()) {
        fmt::print(stderr, "{}: no PNG files\n", argv[1]);
        return 2;
    }
    std::sort(files.begin(), files.end());
    cv::setNumThreads(1);
    torch::set_num_threads(1);
    const HandGate gate = HandGate::load(gate_file);
    gate.check(read_radiograph(files.front()));  // the first call sets up the network's kernels
    double decode = 0, screen = 0, prep = 0;
    auto ms = [](Clock::time_point a, Clock::time_point b) {
        return std::chrono::duration<double, std::milli>(b - a).count();
    };
    for (int rep = 0; rep < reps; ++rep)
        for (const auto& file : files) {
            const auto t0 = Clock::now();
            const Radiograph r = read_radiograph(file);
            const auto t1 = Clock::now();
            const GateVerdict v = gate.check(r);
            const auto t2 = Clock::now();
            const Preprocessed p = preprocess(r);
            const auto t3 = Clock::now();
            decode += ms(t0, t1);
            screen += ms(t1, t2);
            prep += ms(t2, t3);
            (void)v;
            (void)p;
        }
    const double n = double(files.size()) * reps;
    fmt::print("{} images x {} repetitions, one thread\n\n| step | ms/image |\n| --- | ---: |\n",
               files.size(), reps);
    fmt::print(
        "| decode | {:.2f} |\n| hand gate (rules + network) | {:.2f} |\n| preprocess | {:.2f} |\n",
        decode / n, screen / n, prep / n);
    fmt::print("\nthe gate adds {:.1f}% to decode + preprocess\n",
               100.0 * screen / (decode + prep));
}
