// Preprocessing beside the network or before it: Predictor::predict_files over the same inputs
// with PredictorOptions::overlap off and on, alternating in one process (the model loaded
// once), checking that both give the same answers in the same order. A markdown table.
//
//   build/bench-predict-overlap MODEL REPS IMAGE...
#include <fmt/format.h>
#include <malloc.h>

#include <boneage/model.hpp>
#include <boneage/predict.hpp>
#include <chrono>
#include <climits>
#include <cmath>
#include <cstdlib>
#include <ctime>
#include <filesystem>
#include <vector>

int main(int argc, char** argv) {
    using namespace boneage;
    using Clock = std::chrono::steady_clock;
    mallopt(M_MMAP_THRESHOLD, INT_MAX);  // as boneage's main does
    mallopt(M_TRIM_THRESHOLD, INT_MAX);
    if (argc < 4) {
        fmt::print(stderr, "usage: {} MODEL REPS IMAGE...\n", argv[0]);
        return 2;
    }
    const int reps = std::max(1, std::atoi(argv[2]));
    std::vector<std::filesystem::path> files(argv + 3, argv + argc);
    PredictRequest request;
    request.male = true;
    PredictorOptions off, on;
    off.overlap = false;
    on.overlap = true;
    Predictor a(load_model(argv[1]), off), b(load_model(argv[1]), on);
    a.predict_files({files.front()}, request);  // each fast path warmed up
    b.predict_files({files.front()}, request);
    auto cpu = [] {
        timespec ts{};
        clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
        return ts.tv_sec + ts.tv_nsec / 1e9;
    };
    std::vector<double> t[2], c[2];
    std::vector<Prediction> first[2];
    for (int rep = 0; rep < reps; ++rep)
        for (int mode = 0; mode < 2; ++mode) {
            const auto t0 = Clock::now();
            const double c0 = cpu();
            std::vector<Prediction> out = (mode ? b : a).predict_files(files, request);
            t[mode].push_back(std::chrono::duration<double>(Clock::now() - t0).count());
            c[mode].push_back(cpu() - c0);
            if (rep == 0) first[mode] = std::move(out);
        }
    std::size_t differ = 0;
    for (std::size_t i = 0; i < files.size(); ++i)
        if (first[0][i].status != first[1][i].status ||
            first[0][i].raw_months != first[1][i].raw_months)
            ++differ;
    auto stats = [](const std::vector<double>& v) {
        double m = 0, s = 0;
        for (double x : v) m += x / v.size();
        for (double x : v) s += (x - m) * (x - m);
        return std::make_pair(m, v.size() > 1 ? std::sqrt(s / (v.size() - 1)) : 0.0);
    };
    const auto [m0, s0] = stats(t[0]);
    const auto [m1, s1] = stats(t[1]);
    const auto [cm0, cs0] = stats(c[0]);
    const auto [cm1, cs1] = stats(c[1]);
    fmt::print("| predict_files, {} inputs, {} | wall s (mean ± sd, {} runs) | CPU s |\n"
               "| --- | ---: | ---: |\n",
               files.size(), to_string(a.precision()), reps);
    fmt::print("| preprocess, then the network | {:.2f} ± {:.2f} | {:.2f} ± {:.2f} |\n", m0, s0,
               cm0, cs0);
    fmt::print("| preprocessing beside the network | {:.2f} ± {:.2f} | {:.2f} ± {:.2f} |\n", m1,
               s1, cm1, cs1);
    fmt::print("\noverlap {:.2f}x; answers that differ: {}\n", m0 / m1, differ);
    return differ == 0 ? 0 : 1;
}
