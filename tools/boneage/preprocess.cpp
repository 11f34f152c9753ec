// boneage preprocess: the paper's preprocessing on single radiographs, written out so a person
// can look at what the models are fed: DIR/<stem>.png and DIR/<stem>.json per input.
#include "command.hpp"
#include "progress_bar.hpp"

#include <boneage/durable_file.hpp>
#include <boneage/error.hpp>
#include <boneage/hand_detector.hpp>
#include <boneage/image.hpp>
#include <boneage/parallel.hpp>
#include <boneage/preprocess.hpp>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <atomic>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <memory>
#include <mutex>

namespace boneage::cli {

namespace {

namespace fs = std::filesystem;

struct PreprocessArgs {
    std::vector<std::string> inputs;  // radiographs (PNG, JPEG, BMP, TIFF, DICOM)
    std::string out;                  // folder for <stem>.png and <stem>.json
    int threads = 0;                  // worker threads; 0: one per core
    bool no_crop = false;             // keep the whole frame instead of cropping to the hand
    PreprocessSettings settings;      // --size, --clahe-clip, --clahe-grid, --landmark-margin
    std::string crop = "classical";   // who finds the hand: classical | mediapipe | auto
};

nlohmann::json rect_json(const cv::Rect& r) { return {r.x, r.y, r.width, r.height}; }

// What a person (or a script) needs to check one output: where the hand was found, how the
// image was cropped, and with which settings.
nlohmann::json describe(const fs::path& input, const Radiograph& radiograph,
                        const Preprocessed& result, const PreprocessSettings& settings) {
    const cv::Size size = radiograph.pixels.size();
    const cv::Rect crop = settings.crop_hand
                              ? crop_box(result.hand.box, size,
                                         crop_margin_for(result.hand.method, settings))
                              : cv::Rect(0, 0, size.width, size.height);
    return {{"input", input.string()},
            {"format", radiograph.info.format},
            {"width", size.width},
            {"height", size.height},
            {"box", rect_json(result.hand.box)},
            {"crop", rect_json(crop)},
            {"method", result.hand.method},
            {"confidence", result.hand.confidence},
            {"warnings", result.hand.warnings},
            {"settings", settings}};
}

// Reads, preprocesses and writes one input. Throws boneage::Error on any failure.
void preprocess_one(const fs::path& input, const fs::path& out_dir,
                    const PreprocessSettings& settings, const HandFinder& finder) {
    const Radiograph radiograph = read_radiograph(input);
    const Preprocessed result = preprocess(radiograph, settings, finder);
    const std::string stem = input.stem().string();
    write_image(out_dir / (stem + ".png"), result.image);
    const fs::path json_path = out_dir / (stem + ".json");
    write_file_atomically(json_path, describe(input, radiograph, result, settings).dump(2) + "\n");
}

// Two inputs with the same stem would overwrite each other's outputs.
void check_stems(const std::vector<std::string>& inputs) {
    std::map<std::string, std::string> seen;
    for (const std::string& input : inputs) {
        const std::string stem = fs::path(input).stem().string();
        auto [it, fresh] = seen.emplace(stem, input);
        if (!fresh)
            throw UsageError(fmt::format("{} and {} would both write {}.png; rename one",
                                         it->second, input, stem));
    }
}

int run_preprocess(PreprocessArgs& a) {
    PreprocessSettings settings = a.settings;
    settings.crop_hand = !a.no_crop;
    settings.detector = crop_detector_from_string(a.crop);
    validate(settings);
    check_stems(a.inputs);
    std::error_code ec;
    fs::create_directories(a.out, ec);
    if (!fs::is_directory(a.out))
        throw Error(ErrorKind::NotFound, a.out, "cannot create the output folder: " + ec.message());

    std::vector<std::string> failures(a.inputs.size());
    std::atomic<std::size_t> done{0};
    const std::shared_ptr<const HandFinder> finder = hand_finder_for(settings);
    ProgressBar bar("preprocess", a.inputs.size());
    parallel_for(a.inputs.size(), a.threads, [&](std::size_t i) {
        try {
            preprocess_one(a.inputs[i], a.out, settings, *finder);
        } catch (const Error& e) {  // names the file already
            failures[i] = e.what();
        } catch (const std::exception& e) {
            failures[i] = a.inputs[i] + ": " + e.what();
        }
        bar.update(++done);
    });
    bar.finish();

    std::size_t failed = 0;
    for (std::size_t i = 0; i < failures.size(); ++i)
        if (!failures[i].empty()) {
            ++failed;
            std::cerr << failures[i] << "\n";
        }
    std::cerr << fmt::format("preprocessed {} of {} images into {}\n", a.inputs.size() - failed,
                             a.inputs.size(), a.out);
    return failed == 0 ? kOk : kSomeFailed;
}

const Command preprocess_command{
    "preprocess",
    "Crop to the hand, CLAHE and letterbox radiographs, writing DIR/<stem>.png and .json",
    [](CLI::App& sub) -> std::function<int()> {
        auto a = std::make_shared<PreprocessArgs>();
        sub.footer(
            "For each INPUT: DIR/<stem>.png (SIZE x SIZE, 8-bit grey) and DIR/<stem>.json with\n"
            "box (the hand, [x, y, w, h] in original pixels), crop (the box plus the margin),\n"
            "method (\"threshold\", \"mediapipe\", \"full-frame\", or \"preprocessed\" for an input that is\n"
            "already a preprocessing output, passed through unchanged), confidence (0..1),\n"
            "width, height, warnings and the settings used. An input that cannot be read or\n"
            "processed gets no output files; its reason is printed on stderr and the others go on.");
        sub.add_option("inputs", a->inputs, "Radiographs: PNG, JPEG, BMP, TIFF or DICOM")
            ->required();
        sub.add_option("--out", a->out, "Output folder (created if missing)")->required();
        sub.add_option("--threads", a->threads, "Worker threads (0: one per core)")
            ->check(CLI::NonNegativeNumber)
            ->capture_default_str();
        sub.add_flag("--no-crop", a->no_crop, "Keep the whole frame instead of cropping to the hand");
        add_crop_options(sub, a->crop, a->settings);
        sub.add_option("--clahe-clip", a->settings.clahe_clip_limit, "CLAHE contrast limit")
            ->check(CLI::Range(0.01, 1000.0))
            ->capture_default_str();
        sub.add_option("--clahe-grid", a->settings.clahe_tile_grid, "CLAHE tiles per side")
            ->check(CLI::Range(1, 64))
            ->capture_default_str();
        sub.add_option("--size", a->settings.output_size, "Side of the square output image")
            ->check(CLI::Range(8, 4096))
            ->capture_default_str();
        return [a] { return run_preprocess(*a); };
    }};

}  // namespace

}  // namespace boneage::cli
