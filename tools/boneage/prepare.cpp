// boneage prepare: preprocess a labelled dataset once into the cache that training maps.
#include "command.hpp"
#include "progress_bar.hpp"

#include <boneage/dataset.hpp>
#include <boneage/parallel.hpp>

#include <fmt/format.h>

#include <chrono>
#include <iostream>
#include <memory>

namespace boneage::cli {

namespace {

struct PrepareArgs {
    std::string images;         // folder of <id>.png|jpg|dcm|...
    std::string labels;         // CSV id,boneage,male (columns in any order)
    std::string out;            // the cache file to write
    bool strict = false;        // stop at the first bad row or image (exit 3) instead of skipping it
    int threads = 0;            // worker threads; 0: one per core
    PreprocessSettings settings;  // --size, --no-crop, --clahe-clip, --clahe-grid
    bool no_crop = false;       // keep the whole frame instead of cropping to the hand
    std::string crop = "classical";  // who finds the hand: classical | mediapipe | auto
};

int run_prepare(PrepareArgs& a) {
    PrepareOptions o;
    o.images_dir = a.images;
    o.labels_csv = a.labels;
    o.out = a.out;
    o.settings = a.settings;
    o.settings.crop_hand = !a.no_crop;
    o.settings.detector = crop_detector_from_string(a.crop);
    o.strict = a.strict;
    o.threads = a.threads;

    std::unique_ptr<ProgressBar> bar;  // made once the number of images is known
    o.progress = [&](std::size_t done, std::size_t total) {
        if (!bar) bar = std::make_unique<ProgressBar>("prepare", total);
        bar->update(done);
    };
    int threads = a.threads > 0 ? a.threads : default_thread_count();
    auto start = std::chrono::steady_clock::now();
    PrepareReport report = prepare_dataset(o);
    double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    if (bar) bar->finish(fmt::format("{} threads", threads));

    for (const RejectedRow& r : report.rejected)
        std::cerr << fmt::format("line {}, id {}: {}\n", r.line, r.id.empty() ? "?" : r.id,
                                 r.reason);
    if (!report.unlabelled.empty()) {
        std::string names;
        for (std::size_t i = 0; i < report.unlabelled.size() && i < 5; ++i)
            names += (i ? ", " : "") + report.unlabelled[i].filename().string();
        if (report.unlabelled.size() > 5)
            names += fmt::format(" and {} more", report.unlabelled.size() - 5);
        std::cerr << fmt::format("{} image{} in {} ha{} no row in {} (not prepared): {}\n",
                                 report.unlabelled.size(), report.unlabelled.size() == 1 ? "" : "s",
                                 a.images, report.unlabelled.size() == 1 ? "s" : "ve", a.labels,
                                 names);
    }
    std::size_t total = report.written + report.rejected.size();
    std::cerr << fmt::format("prepared {} of {} images; {} skipped\n", report.written, total,
                             report.rejected.size());
    if (o.settings.crop_hand) {
        std::string methods;
        for (const auto& [method, count] : report.crop_methods)
            methods += fmt::format("{}{} {}", methods.empty() ? "" : ", ", count, method);
        std::cerr << fmt::format("crop ({}): {}\n", crop_method(o.settings), methods);
    }
    std::cerr << fmt::format("wrote {} ({} images of {}x{}) in {:.1f} s\n", a.out, report.written,
                             o.settings.output_size, o.settings.output_size, seconds);
    return kOk;
}

const Command prepare_command{
    "prepare", "Preprocess a labelled dataset into one memory-mapped cache file",
    [](CLI::App& sub) -> std::function<int()> {
        auto a = std::make_shared<PrepareArgs>();
        sub.add_option("--images", a->images, "Folder of <id>.png|jpg|dcm images")
            ->required()
            ->check(CLI::ExistingDirectory);
        sub.add_option("--labels", a->labels,
                       "labels CSV: id, bone age and sex columns in any order (id,boneage,male "
                       "as RSNA; README: Labels files)")
            ->required()
            ->check(CLI::ExistingFile);
        sub.add_option("--out", a->out, "Cache file to write")->required();
        sub.add_flag("--strict", a->strict,
                     "Stop at the first bad row, missing or unreadable image, or image no row "
                     "names, instead of reporting it and preparing the rest");
        sub.add_option("--threads", a->threads, "Worker threads (0: one per core)")
            ->check(CLI::NonNegativeNumber)
            ->capture_default_str();
        sub.add_option("--size", a->settings.output_size, "Side of the square output image")
            ->check(CLI::Range(8, 4096))
            ->capture_default_str();
        sub.add_flag("--no-crop", a->no_crop, "Keep the whole frame instead of cropping to the hand");
        add_crop_options(sub, a->crop, a->settings);
        sub.add_option("--clahe-clip", a->settings.clahe_clip_limit, "CLAHE contrast limit")
            ->check(CLI::PositiveNumber)
            ->capture_default_str();
        sub.add_option("--clahe-grid", a->settings.clahe_tile_grid, "CLAHE tiles per side")
            ->check(CLI::Range(1, 64))
            ->capture_default_str();
        return [a] { return run_prepare(*a); };
    }};

}  // namespace

}  // namespace boneage::cli
