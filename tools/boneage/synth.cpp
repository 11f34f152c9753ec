// boneage synth: a folder of synthetic hand radiographs (phantoms) with RSNA-style labels, for
// tests, demos and training when no real data is at hand.
#include "command.hpp"
#include "progress_bar.hpp"

#include <boneage/error.hpp>
#include <boneage/parallel.hpp>
#include <boneage/synth.hpp>

#include <fmt/format.h>

#include <chrono>
#include <cstdint>
#include <iostream>
#include <memory>
#include <regex>

namespace boneage::cli {

namespace {

struct SynthArgs {
    std::string out;               // folder to write <id>.png|dcm and labels.csv into
    int count = 100;               // number of phantoms
    std::uint64_t seed = 1;        // same seed, same images
    std::string size = "512x640";  // frame WxH in pixels
    std::string format = "png";    // png or dcm
    bool clean = false;            // no nuisances: upright, centred, flat background
    bool bits16 = false;           // 16-bit PNG (DICOM is always 16-bit)
};

// "1500x2000" -> width, height; throws UsageError otherwise.
std::pair<int, int> parse_size(const std::string& text) {
    std::smatch m;
    if (!std::regex_match(text, m, std::regex(R"((\d{1,5})[xX](\d{1,5}))")))
        throw UsageError("--size must look like 512x640, got '" + text + "'");
    int width = std::stoi(m[1]), height = std::stoi(m[2]);
    if (width < 64 || height < 64 || width > 16384 || height > 16384)
        throw UsageError("--size must be 64..16384 pixels per side, got '" + text + "'");
    return {width, height};
}

int run_synth(const SynthArgs& a) {
    SynthOptions o;
    std::tie(o.width, o.height) = parse_size(a.size);
    o.nuisances = !a.clean;
    o.bits16 = a.bits16;
    PhantomFormat format = a.format == "dcm" ? PhantomFormat::Dicom : PhantomFormat::Png;

    std::unique_ptr<ProgressBar> bar;
    if (a.count >= 20) bar = std::make_unique<ProgressBar>("synth", a.count);
    auto start = std::chrono::steady_clock::now();
    write_phantom_set(a.out, a.count, a.seed, o, format, [&](int done, int) {
        if (bar) bar->update(done);
    });
    double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    if (bar) bar->finish(fmt::format("{} threads", default_thread_count()));
    std::cerr << fmt::format("wrote {} phantoms ({}x{}, {}) and labels.csv to {} in {:.1f} s\n",
                             a.count, o.width, o.height, a.format, a.out, seconds);
    return kOk;
}

const Command synth_command{
    "synth", "Write synthetic hand radiographs (phantoms) and an RSNA-style labels.csv",
    [](CLI::App& sub) -> std::function<int()> {
        auto a = std::make_shared<SynthArgs>();
        sub.add_option("--out", a->out, "Folder to write <id>.png|dcm and labels.csv into")
            ->required();
        sub.add_option("--count", a->count, "Number of phantoms")
            ->check(CLI::Range(1, 10'000'000))
            ->capture_default_str();
        sub.add_option("--seed", a->seed, "Random seed; the same seed gives the same images")
            ->capture_default_str();
        sub.add_option("--size", a->size, "Frame size WxH in pixels (64..16384 per side)")
            ->capture_default_str();
        sub.add_option("--format", a->format, "Image format")
            ->check(CLI::IsMember({"png", "dcm"}))
            ->capture_default_str();
        sub.add_flag("--clean", a->clean,
                     "No nuisances: upright, centred, flat background, no markers or noise");
        sub.add_flag("--bits16", a->bits16, "16-bit PNG output (DICOM is always 16-bit)");
        return [a] { return run_synth(*a); };
    }};

}  // namespace

}  // namespace boneage::cli
