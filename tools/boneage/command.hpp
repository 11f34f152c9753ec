// One subcommand of the boneage CLI. Each tools/boneage/<name>.cpp defines one and registers it
// with a static Command object; main() builds the CLI11 app from the registry.
#pragma once

#include <boneage/predict.hpp>

#include <CLI/CLI.hpp>

#include <functional>
#include <string>
#include <vector>

namespace boneage::cli {

// Exit codes shared by every subcommand (DESIGN.md): 0 all succeeded, 1 some inputs failed,
// 2 usage error.
enum Exit : int { kOk = 0, kSomeFailed = 1, kUsage = 2 };

struct Command {
    // Adds the subcommand's options to `sub` and returns the function that runs it once
    // CLI11 has parsed the arguments. The function returns the exit code.
    using Setup = std::function<std::function<int()>(CLI::App& sub)>;

    Command(std::string name, std::string help, Setup setup);
    std::string name;
    std::string help;
    Setup setup;
};

const std::vector<const Command*>& commands();

// The options every command that runs the network shares.
struct InferenceArgs {
    int batch = 16;                  // images per forward pass
    int threads = 0;                 // preprocessing threads (0: one per core)
    std::string precision = "auto";  // auto | fp32 | bf16
    int views = 1;                   // test-time views averaged per image

    // The predictor's options; a bad precision name is a usage error, thrown before any work
    // (the ranges of the numbers are checked when the arguments are parsed).
    PredictorOptions predictor_options() const {
        PredictorOptions o;
        o.batch = batch;
        o.threads = threads;
        o.precision = parse_precision(precision);
        o.views = views;
        return o;
    }
};

// --batch, --threads, --precision, --tta.
inline void add_inference_options(CLI::App& sub, InferenceArgs& args) {
    sub.add_option("--batch", args.batch, "images per forward pass")
        ->check(CLI::Range(1, 4096))
        ->capture_default_str();
    sub.add_option("--threads", args.threads, "preprocessing threads (0: one per core)")
        ->check(CLI::NonNegativeNumber)
        ->capture_default_str();
    sub.add_option("--precision", args.precision,
                   "network precision: auto (bf16 where the CPU has it natively), fp32 or "
                   "bf16; json output records the one used")
        ->capture_default_str();
    sub.add_option("--tta", args.views,
                   "test-time views averaged per image, 1 to " + std::to_string(kMaxViews) +
                       ": the image, then pairs of small opposite rotations, zooms and shifts "
                       "(each view is one more forward pass)")
        ->check(CLI::Range(1, kMaxViews))
        ->capture_default_str();
}

}  // namespace boneage::cli
