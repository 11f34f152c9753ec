// One subcommand of the boneage CLI. Each tools/boneage/<name>.cpp defines one and registers it
// with a static Command object; main() builds the CLI11 app from the registry.
#pragma once

#include <boneage/error.hpp>
#include <boneage/hand_gate.hpp>
#include <boneage/model.hpp>
#include <boneage/predict.hpp>

#include <CLI/CLI.hpp>

#include <filesystem>
#include <functional>
#include <iostream>
#include <memory>
#include <string>
#include <vector>

namespace boneage::cli {

// Exit codes shared by every subcommand (DESIGN.md): 0 all succeeded, 1 some inputs failed or
// were rejected, 2 usage error, 3 a fatal error (a file the run needs, such as the model, is
// unreadable or invalid, or an output cannot be written). main() prints them in --help.
enum Exit : int { kOk = 0, kSomeFailed = 1, kUsage = 2, kFatal = 3 };

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

// The model to use: `given`, else the bundled default; a usage error when neither exists.
inline std::filesystem::path resolve_model(const std::string& given) {
    if (!given.empty()) return given;
    std::filesystem::path bundled = default_model_path();
    std::error_code ec;
    if (bundled.empty() || !std::filesystem::is_regular_file(bundled, ec))
        throw UsageError("no model given and no bundled model found; pass --model");
    return bundled;
}

// A model to read images with (predict, evaluate, serve). One made with another preprocessing
// version than this build's still loads, since it may be all there is, but the run says so once
// on stderr: its answers may be off by what the preprocessing change moved.
inline LoadedModel load_inference_model(const std::filesystem::path& file, const char* command) {
    LoadedModel model = load_model(file);
    if (std::string why = preprocess_version_mismatch(file, model.meta.preprocess_version);
        !why.empty())
        std::cerr << "boneage " << command << ": warning: " << why << '\n';
    return model;
}

// The options every command that runs the network shares.
struct InferenceArgs {
    int batch = 16;                  // images per forward pass
    int threads = 0;                 // preprocessing threads (0: one per core)
    std::string precision = "auto";  // auto | fp32 | bf16
    int views = 0;                   // test-time views averaged per image; 0: the model's own
    bool accept_all = false;         // no hand gate: every input gets a bone age
    std::string gate;                // hand gate file; empty: the bundled one
    std::string crop;                // classical | mediapipe | auto; empty: the model's own

    // The gate file: --gate, else the bundled one; a usage error when neither exists.
    std::filesystem::path resolve_gate() const {
        if (!gate.empty()) return gate;
        std::filesystem::path bundled = default_gate_path();
        if (bundled.empty())
            throw UsageError("no hand gate found (models/hand_gate.bin); pass --gate FILE, or "
                             "--accept-all to read every input unscreened");
        return bundled;
    }

    // The predictor's options; a bad precision name is a usage error, thrown before any work
    // (the ranges of the numbers are checked when the arguments are parsed). Loads the gate.
    PredictorOptions predictor_options() const {
        PredictorOptions o;
        o.batch = batch;
        o.threads = threads;
        o.precision = parse_precision(precision);
        o.views = views;
        if (!crop.empty()) o.crop = crop_detector_from_string(crop);
        if (!accept_all) o.gate = std::make_shared<const HandGate>(HandGate::load(resolve_gate()));
        return o;
    }
};

// The help of --crop, which preprocess, prepare, predict, evaluate and serve share.
inline const char* crop_help() {
    return "who finds the hand: classical (the threshold finder), mediapipe (MediaPipe's palm "
           "detector and 21 landmarks, the paper's crop; models from "
           "scripts/fetch-mediapipe-models) or auto (MediaPipe where it finds a hand with "
           "confidence, else classical); each answer records the method used";
}

// --crop WORD into `word` (checked against the three words when parsed).
inline CLI::Option* add_crop_option(CLI::App& sub, std::string& word, const std::string& help) {
    return sub.add_option("--crop", word, help)
        ->check(CLI::IsMember({"classical", "mediapipe", "auto"}));
}

// --crop and --landmark-margin of the commands that preprocess (preprocess, prepare).
inline void add_crop_options(CLI::App& sub, std::string& word, PreprocessSettings& settings) {
    add_crop_option(sub, word, crop_help())->capture_default_str();
    sub.add_option("--landmark-margin", settings.landmark_margin,
                   "MediaPipe crop: margin around the landmarks' box, fraction of its longer side")
        ->check(CLI::Range(0.0, 1.0))
        ->capture_default_str();
}

// --batch, --threads, --precision, --tta, --crop.
inline void add_inference_options(CLI::App& sub, InferenceArgs& args) {
    add_crop_option(sub, args.crop,
                    std::string(crop_help()) + " (default: the detector the model was trained with)");
    sub.add_option("--batch", args.batch, "images per forward pass")
        ->check(CLI::Range(1, 4096))
        ->capture_default_str();
    sub.add_option("--threads", args.threads, "preprocessing threads (0: one per core)")
        ->check(CLI::NonNegativeNumber)
        ->capture_default_str();
    sub.add_option("--precision", args.precision,
                   "network precision: auto (bf16 where the CPU has it natively), fp32 or "
                   "bf16; json output records the one used. bf16 answers differ from fp32 by up "
                   "to about 0.6 months (bundled model: at most 0.40, mean 0.09 on 191 "
                   "development radiographs; at most 0.57 on synthetic hands)")
        ->capture_default_str();
    sub.add_option("--tta", args.views,
                   "test-time views averaged per image, 1 to " + std::to_string(kMaxViews) +
                       ": the image, then pairs of small opposite rotations, zooms and shifts "
                       "(each view is one more forward pass; default: the model's own number, "
                       "1 unless its file records another)")
        ->check(CLI::Range(1, kMaxViews));
    sub.add_flag("--accept-all", args.accept_all,
                 "read every input, even one the hand gate finds is not a whole hand radiograph "
                 "(research runs); by default such inputs are rejected with a reason and no bone age");
    sub.add_option("--gate", args.gate,
                   "hand gate file (default: $BONEAGE_GATE or the bundled models/hand_gate.bin)")
        ->check(CLI::ExistingFile);
}

}  // namespace boneage::cli
