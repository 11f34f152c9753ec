// boneage negatives: images that are not whole hand radiographs (blank, noise, documents, charts,
// close-ups of part of a hand, other body parts), to test the hand gate on.
#include <fmt/format.h>

#include <algorithm>
#include <atomic>
#include <boneage/error.hpp>
#include <boneage/negatives.hpp>
#include <boneage/parallel.hpp>
#include <boneage/splitmix.hpp>
#include <boneage/synth.hpp>
#include <fstream>
#include <iostream>
#include <memory>

#include "command.hpp"
#include "progress_bar.hpp"

namespace boneage::cli {

namespace {

namespace fs = std::filesystem;

struct NegativesArgs {
    std::string out;  // folder for <kind>-<n>.png and kinds.csv
    int count = 60;   // images of each kind
    std::uint64_t seed = 1;
    std::vector<std::string> kinds;  // empty: every kind
    std::string crops_from;          // radiographs to cut close-ups from; empty: phantoms
};

// The radiographs close-ups are cut from: every image in `dir`, or 40 phantoms.
std::vector<cv::Mat> crop_sources(const std::string& dir, std::uint64_t seed) {
    std::vector<cv::Mat> sources;
    if (dir.empty()) {
        for (int i = 0; i < 40; ++i)
            sources.push_back(make_phantom(PhantomLabel{"", 6.0 + 5.5 * i, i % 2 == 0},
                                           splitmix64(seed + 1000 + i))
                                  .image);
        return sources;
    }
    std::vector<fs::path> files;
    for (const auto& entry : fs::directory_iterator(dir))
        if (entry.is_regular_file() && entry.path().extension() != ".csv")
            files.push_back(entry.path());
    std::sort(files.begin(), files.end());
    for (const fs::path& f : files) {
        try {
            Radiograph r = read_radiograph(f);
            sources.push_back(r.pixels.depth() == CV_8U ? r.pixels : to_8bit(r.pixels));
        } catch (const Error& e) {
            std::cerr << "warning: skipped " << e.what() << '\n';
        }
    }
    if (sources.empty())
        throw UsageError("no readable radiograph in " + dir + " to cut close-ups from");
    return sources;
}

int run_negatives(const NegativesArgs& a) {
    std::vector<NegativeKind> kinds;
    for (const std::string& name : a.kinds) {
        auto k = parse_negative_kind(name);
        if (!k) throw UsageError("unknown kind '" + name + "'");
        kinds.push_back(*k);
    }
    if (kinds.empty()) kinds.assign(kNegativeKinds.begin(), kNegativeKinds.end());
    std::vector<cv::Mat> sources;
    if (std::find(kinds.begin(), kinds.end(), NegativeKind::PartialHand) != kinds.end())
        sources = crop_sources(a.crops_from, a.seed);

    std::error_code ec;
    fs::create_directories(a.out, ec);
    if (ec) throw Error(ErrorKind::NotFound, a.out, "cannot create the folder: " + ec.message());
    const std::size_t total = kinds.size() * static_cast<std::size_t>(a.count);
    std::vector<std::string> names(total);
    ProgressBar bar("negatives", total);
    std::atomic<std::size_t> done{0};
    parallel_for(total, 0, [&](std::size_t i) {
        const NegativeKind kind = kinds[i / a.count];
        const std::uint64_t seed = splitmix64(a.seed * 1'000'003 + i);
        const cv::Mat& source = sources.empty() ? cv::Mat() : sources[seed % sources.size()];
        names[i] = fmt::format("{}-{:04d}.png", to_string(kind), i % a.count);
        write_image(fs::path(a.out) / names[i], make_negative(kind, seed, source));
        bar.update(++done);
    });
    bar.finish();
    const fs::path csv = fs::path(a.out) / "kinds.csv";
    std::ofstream out(csv);
    out << "file,kind\n";
    for (std::size_t i = 0; i < total; ++i)
        out << names[i] << ',' << to_string(kinds[i / a.count]) << '\n';
    if (!out) throw Error(ErrorKind::NotFound, csv, "cannot be written");
    std::cerr << fmt::format("wrote {} images of {} kinds and kinds.csv to {}\n", total,
                             kinds.size(), a.out);
    return kOk;
}

const Command negatives_command{
    "negatives", "Write images that are not whole hand radiographs, to test the hand gate",
    [](CLI::App& sub) -> std::function<int()> {
        auto a = std::make_shared<NegativesArgs>();
        sub.add_option("--out", a->out, "folder for <kind>-<n>.png and kinds.csv")->required();
        sub.add_option("--count", a->count, "images of each kind")
            ->check(CLI::Range(1, 100000))
            ->capture_default_str();
        sub.add_option("--seed", a->seed, "random seed; the same seed gives the same images")
            ->capture_default_str();
        sub.add_option("--kinds", a->kinds,
                       "kinds to draw (default all): blank, noise, document, chart, partial-hand, "
                       "other-body-part")
            ->delimiter(',');
        sub.add_option(
               "--crops-from", a->crops_from,
               "folder of hand radiographs to cut partial-hand close-ups from (default: phantoms)")
            ->check(CLI::ExistingDirectory);
        return [a] { return run_negatives(*a); };
    }};

}  // namespace

}  // namespace boneage::cli
