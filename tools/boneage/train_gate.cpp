// boneage train-gate: trains the hand gate (whole hand radiograph or not) on folders of hands
// against drawn negatives, and writes the gate file that predict, evaluate and serve load.
#include <fmt/format.h>

#include <algorithm>
#include <atomic>
#include <boneage/dataset.hpp>
#include <boneage/error.hpp>
#include <boneage/hand_gate.hpp>
#include <boneage/parallel.hpp>
#include <boneage/splitmix.hpp>
#include <boneage/synth.hpp>
#include <iostream>
#include <memory>
#include <opencv2/imgproc.hpp>
#include <set>

#include "command.hpp"
#include "progress_bar.hpp"

namespace boneage::cli {

namespace {

namespace fs = std::filesystem;

struct TrainGateArgs {
    std::vector<std::string> hands;    // folders of whole hand radiographs
    std::vector<std::string> exclude;  // labels CSVs whose ids must not be trained on
    int phantoms = 0;                  // phantoms drawn as further hands
    std::string out;
    GateTrainingOptions options;
};

std::vector<cv::Mat> read_hands(const std::vector<std::string>& dirs,
                                const std::set<std::string>& excluded, std::size_t& skipped) {
    std::vector<fs::path> files;
    for (const std::string& dir : dirs)
        for (const auto& entry : fs::directory_iterator(dir)) {
            const fs::path& p = entry.path();
            if (!entry.is_regular_file() || p.extension() == ".csv" || p.extension() == ".md")
                continue;
            if (excluded.count(p.stem().string())) {
                ++skipped;
                continue;
            }
            files.push_back(p);
        }
    std::sort(files.begin(), files.end());
    std::vector<cv::Mat> hands(files.size());
    ProgressBar bar("read", files.size());
    std::atomic<std::size_t> done{0};
    parallel_for(files.size(), 0, [&](std::size_t i) {
        Radiograph r = read_radiograph(files[i]);
        cv::Mat grey = r.pixels.depth() == CV_8U ? r.pixels : to_8bit(r.pixels);
        // Close-ups need no more than this, and memory stays small for large folders.
        const double scale = std::min(1.0, 400.0 / std::max(grey.cols, grey.rows));
        if (scale < 1.0) cv::resize(grey, grey, cv::Size(), scale, scale, cv::INTER_AREA);
        hands[i] = grey;
        bar.update(++done);
    });
    bar.finish();
    return hands;
}

// Whole hands the tests and the demo use: phantoms in portrait, landscape and small frames,
// with and without nuisances, reduced as read_hands reduces files.
void add_phantoms(std::vector<cv::Mat>& hands, int count, std::uint64_t seed) {
    const cv::Size frames[] = {{512, 640}, {640, 480}, {400, 300}, {320, 320}};
    std::vector<cv::Mat> drawn(static_cast<std::size_t>(count));
    parallel_for(drawn.size(), 0, [&](std::size_t i) {
        SynthOptions o;
        o.width = frames[i % 4].width;
        o.height = frames[i % 4].height;
        o.nuisances = i % 10 != 9;
        const std::uint64_t s = splitmix64(seed + i);
        cv::Mat image =
            make_phantom(PhantomLabel{"", 1.0 + static_cast<double>(s % 228), s % 2 == 0}, s, o)
                .image;
        const double scale = std::min(1.0, 400.0 / std::max(image.cols, image.rows));
        if (scale < 1.0) cv::resize(image, image, cv::Size(), scale, scale, cv::INTER_AREA);
        drawn[i] = image;
    });
    hands.insert(hands.end(), drawn.begin(), drawn.end());
}

int run_train_gate(const TrainGateArgs& a) {
    std::set<std::string> excluded;
    for (const std::string& csv : a.exclude)
        for (const LabelRow& row : read_labels(csv).rows) excluded.insert(row.id);
    std::size_t skipped = 0;
    std::vector<cv::Mat> hands = read_hands(a.hands, excluded, skipped);
    const std::size_t read = hands.size();
    add_phantoms(hands, a.phantoms, a.options.seed);
    std::cerr << fmt::format(
        "{} hands to train on ({} read, {} phantoms); {} left out as listed in --exclude\n",
        hands.size(), read, a.phantoms, skipped);

    GateTrainingOptions options = a.options;
    ProgressBar bar("train-gate", static_cast<std::size_t>(options.epochs));
    options.on_epoch = [&bar](int epoch, double loss) {
        bar.update(epoch, fmt::format("loss {:.4f}", loss));
    };
    HandGate gate(options.seed);
    GateTrainingReport report = train_hand_gate(gate, hands, options);
    bar.finish();
    gate.meta()["training"]["excluded_ids"] = skipped;
    gate.meta()["training"]["hand_folders"] = a.hands;
    gate.meta()["training"]["hands_read"] = read;
    gate.meta()["training"]["phantoms"] = a.phantoms;
    gate.save(a.out);

    std::cout << fmt::format("threshold {:.3f}: {:.2f}% of {} held-out hands refused\n",
                             report.threshold, 100.0 * report.hands_refused,
                             report.hands_validation);
    for (const auto& [kind, share] : report.negatives_refused)
        std::cout << fmt::format("  {:<16} {:6.1f}% refused\n", kind, 100.0 * share);
    std::cerr << "wrote " << a.out << '\n';
    return kOk;
}

const Command train_gate_command{
    "train-gate", "Train the hand gate that refuses inputs which are not whole hand radiographs",
    [](CLI::App& sub) -> std::function<int()> {
        auto a = std::make_shared<TrainGateArgs>();
        sub.add_option("--hands", a->hands, "folder of whole hand radiographs (repeat for several)")
            ->check(CLI::ExistingDirectory);
        sub.add_option("--exclude", a->exclude,
                       "labels CSV whose ids are left out (kept for testing)")
            ->check(CLI::ExistingFile);
        sub.add_option("--phantoms", a->phantoms, "phantoms drawn as further hands")
            ->check(CLI::Range(0, 1000000))
            ->capture_default_str();
        sub.add_option("--out", a->out, "gate file to write")->required();
        sub.add_option("--epochs", a->options.epochs, "passes over the hands")
            ->check(CLI::Range(1, 1000))
            ->capture_default_str();
        sub.add_option("--batch", a->options.batch, "images per step, half hands")
            ->check(CLI::Range(2, 4096))
            ->capture_default_str();
        sub.add_option("--lr", a->options.learning_rate, "Adam's learning rate")
            ->capture_default_str();
        sub.add_option("--seed", a->options.seed, "random seed")->capture_default_str();
        sub.add_option("--negatives-per-kind", a->options.negatives_per_kind,
                       "negatives drawn of each kind")
            ->check(CLI::Range(1, 1000000))
            ->capture_default_str();
        return [a] { return run_train_gate(*a); };
    }};

}  // namespace

}  // namespace boneage::cli
