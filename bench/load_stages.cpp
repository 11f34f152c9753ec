// Where the fixed cost of one `boneage predict` goes before its first answer: the process up to
// main (loading LibTorch and the other libraries), reading the model file, the hand gate, the
// predictor's fast path, and the first image through each stage, each timed once, cold, in
// the order predict meets them. One line of JSON; run it several times for a spread
// (docs/PERFORMANCE.md).
//
//   build/bench-load-stages IMAGE [MODEL]    (MODEL: default the bundled models/default.bin)
#include <fmt/format.h>
#include <malloc.h>
#include <torch/torch.h>

#include <boneage/hand_gate.hpp>
#include <boneage/image.hpp>
#include <boneage/model.hpp>
#include <boneage/predict.hpp>
#include <boneage/preprocess.hpp>
#include <chrono>
#include <climits>
#include <ctime>
#include <filesystem>
#include <string>
#include <utility>
#include <vector>

namespace {

using Clock = std::chrono::steady_clock;

double ms_since(Clock::time_point t0) {
    return std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
}

// CPU time this process has used so far, ms: at the top of main, what starting it cost (the
// dynamic loader and the libraries' static constructors; a single thread runs them).
double cpu_ms() {
    timespec t{};
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t);
    return t.tv_sec * 1e3 + t.tv_nsec / 1e6;
}

}  // namespace

int main(int argc, char** argv) {
    const double start_cpu_ms = cpu_ms();
    // As boneage's main does (tools/boneage/main.cpp): freed large blocks stay for reuse.
    mallopt(M_MMAP_THRESHOLD, INT_MAX);
    mallopt(M_TRIM_THRESHOLD, INT_MAX);
    using namespace boneage;
    if (argc < 2) {
        fmt::print(stderr, "usage: {} IMAGE [MODEL]\n", argv[0]);
        return 2;
    }
    const std::filesystem::path image = argv[1];
    const std::filesystem::path model_file = argc > 2 ? argv[2] : default_model_path();
    // Each stage's wall time and the CPU time all the process's threads spent in it.
    std::vector<std::pair<std::string, std::pair<double, double>>> stages{
        {"process_start", {-1.0, start_cpu_ms}}};
    auto step = [&](const char* name, auto&& fn) {
        const auto t0 = Clock::now();
        const double c0 = cpu_ms();
        fn();
        stages.push_back({name, {ms_since(t0), cpu_ms() - c0}});
    };

    LoadedModel model;
    step("load_model", [&] { model = load_model(model_file); });
    std::shared_ptr<const HandGate> gate;
    step("load_gate", [&] { gate = std::make_shared<const HandGate>(HandGate::load(default_gate_path())); });
    PredictorOptions options;
    options.gate = gate;
    std::unique_ptr<Predictor> predictor;
    step("predictor", [&] { predictor = std::make_unique<Predictor>(std::move(model), options); });
    Radiograph r;
    step("decode", [&] { r = read_radiograph(image); });
    step("gate_check", [&] { gate->check(r); });
    Preprocessed p;
    step("preprocess", [&] { p = preprocess(r, predictor->settings()); });
    const std::vector<const std::uint8_t*> one{p.image.ptr<std::uint8_t>()};
    step("first_forward", [&] { predictor->predict_preprocessed(one, {true}); });
    step("second_forward", [&] { predictor->predict_preprocessed(one, {true}); });
    step("second_decode", [&] { r = read_radiograph(image); });
    step("second_preprocess", [&] { p = preprocess(r, predictor->settings()); });

    std::string json = "{";
    for (const auto& [name, ms] : stages)
        json += fmt::format("{}\"{}\": {{\"wall_ms\": {:.1f}, \"cpu_ms\": {:.1f}}}",
                            json.size() > 1 ? ", " : "", name, ms.first, ms.second);
    fmt::print("{}}}\n", json);
    return 0;
}
