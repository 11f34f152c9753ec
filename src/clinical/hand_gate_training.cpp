// Training the hand gate: whole hands against a pool of drawn negatives, both augmented the same
// way at the view's scale (flips, turns, zoom, blur, exposure, grain), so that no difference
// but the content tells the classes apart. The threshold is set on hands held out by index.
#include <fmt/format.h>
#include <torch/torch.h>

#include <algorithm>
#include <array>
#include <boneage/error.hpp>
#include <boneage/hand_gate.hpp>
#include <boneage/parallel.hpp>
#include <boneage/preprocess.hpp>
#include <boneage/splitmix.hpp>
#include <cmath>
#include <numeric>
#include <opencv2/imgproc.hpp>
#include <random>

#include "clinical/gate_net.hpp"

namespace boneage {

namespace {

using Rng = std::mt19937_64;

double uniform(Rng& rng, double lo, double hi) {
    return std::uniform_real_distribution<double>(lo, hi)(rng);
}

// One augmented copy of a view; every class goes through the same changes.
cv::Mat augment_view(const cv::Mat& view, Rng& rng) {
    // Never in place: `view` is the stored example, reused every epoch.
    cv::Mat flipped = view.clone();
    if (uniform(rng, 0, 1) < 0.5) cv::flip(flipped, flipped, 1);
    if (uniform(rng, 0, 1) < 0.05) cv::flip(flipped, flipped, 0);
    const cv::Point2f centre(kGateViewSize / 2.0f + uniform(rng, -4, 4),
                             kGateViewSize / 2.0f + uniform(rng, -4, 4));
    const cv::Mat turn =
        cv::getRotationMatrix2D(centre, uniform(rng, -25, 25), uniform(rng, 0.85, 1.15));
    cv::Mat out;
    cv::warpAffine(flipped, out, turn, view.size(), cv::INTER_LINEAR, cv::BORDER_REPLICATE);
    cv::Mat f;
    out.convertTo(f, CV_32F, 1.0 / 255.0);
    if (uniform(rng, 0, 1) < 0.5) cv::GaussianBlur(f, f, cv::Size(), uniform(rng, 0.3, 1.2));
    cv::pow(cv::max(f, 0.0), uniform(rng, 0.6, 1.6), f);
    f = f * uniform(rng, 0.7, 1.3) + uniform(rng, -0.1, 0.1);
    cv::Mat grain(f.size(), CV_32F);
    cv::RNG cv_rng(rng());  // not OpenCV's global generator: the run repeats from its seed
    cv_rng.fill(grain, cv::RNG::NORMAL, 0.0, uniform(rng, 0.0, 0.025));
    f += grain;
    f.convertTo(out, CV_8U, 255.0);
    return out;
}

cv::Mat grey_view(const cv::Mat& image) {
    return gate_view(to_grey8(image, "hand gate"));
}

struct Example {
    cv::Mat view;
    int label = 0;  // 0 a hand, 1 + k the negative kind kNegativeKinds[k]
};

// `per_kind` negatives of each kind; close-ups are cut from `sources`.
std::vector<Example> draw_negatives(int per_kind, std::uint64_t seed,
                                    const std::vector<const cv::Mat*>& sources) {
    const std::size_t kinds = kNegativeKinds.size();
    std::vector<Example> out(kinds * static_cast<std::size_t>(per_kind));
    parallel_for(out.size(), 0, [&](std::size_t i) {
        const std::size_t k = i % kinds;
        const std::uint64_t s = splitmix64(seed ^ (i * 0x9e37ULL));
        const cv::Mat& source = *sources[s % sources.size()];
        out[i].view = grey_view(make_negative(kNegativeKinds[k], s, source));
        out[i].label = 1 + static_cast<int>(k);
    });
    return out;
}

torch::Tensor batch_tensor(const std::vector<cv::Mat>& views) {
    torch::Tensor x =
        torch::empty({static_cast<std::int64_t>(views.size()), 1, kGateViewSize, kGateViewSize});
    float* dst = x.data_ptr<float>();
    const std::size_t pixels = kGateViewSize * kGateViewSize;
    for (std::size_t i = 0; i < views.size(); ++i)
        for (std::size_t p = 0; p < pixels; ++p)
            dst[i * pixels + p] = views[i].data[p] / 64.0f - 2.0f;
    return x;
}

// Views of whole hands cropped tight, as a person who cuts the film to the hand sends them and
// as boneage's own preprocessing writes them: every k-th hand for a share of 1/k.
std::vector<cv::Mat> tight_crops(const std::vector<const cv::Mat*>& hands, double share) {
    if (share <= 0.0) return {};
    const std::size_t every =
        std::max<std::size_t>(1, static_cast<std::size_t>(std::lround(1.0 / share)));
    std::vector<cv::Mat> views((hands.size() + every - 1) / every);
    parallel_for(views.size(), 0, [&](std::size_t i) {
        views[i] = gate_view(preprocess(Radiograph{*hands[i * every], {}}).image);
    });
    return views;
}

double quantile(std::vector<double> v, double q) {
    if (v.empty()) return 0.0;
    std::sort(v.begin(), v.end());
    return v[std::min(v.size() - 1, static_cast<std::size_t>(q * v.size()))];
}

}  // namespace

GateTrainingReport train_hand_gate(HandGate& gate, const std::vector<cv::Mat>& hands,
                                   const GateTrainingOptions& options) {
    if (hands.size() < 20)
        throw UsageError("the hand gate needs at least 20 hand radiographs to train on");
    if (options.epochs < 1 || options.batch < 2 || options.negatives_per_kind < 1)
        throw UsageError("the hand gate needs epochs >= 1, batch >= 2 and negatives per kind >= 1");
    GateTrainingReport report;
    std::vector<const cv::Mat*> train_hands, val_hands;
    for (std::size_t i = 0; i < hands.size(); ++i) {
        if (hands[i].type() != CV_8UC1 || std::min(hands[i].cols, hands[i].rows) < 64)
            throw UsageError(
                fmt::format("hand {} is not an 8-bit grey image of at least 64 px a side", i));
        const bool val =
            (splitmix64(options.seed ^ (i + 1)) % 1000) < options.validation_fraction * 1000;
        (val ? val_hands : train_hands).push_back(&hands[i]);
    }
    if (val_hands.empty() || train_hands.empty())
        throw UsageError("too few hands to hold some out for validation");
    report.hands_train = static_cast<int>(train_hands.size());
    report.hands_validation = static_cast<int>(val_hands.size());

    std::vector<Example> positives(train_hands.size());
    parallel_for(positives.size(), 0, [&](std::size_t i) {
        positives[i] = {gate_view(*train_hands[i]), 0};
    });
    const std::vector<cv::Mat> cropped = tight_crops(train_hands, options.cropped_share);
    for (const cv::Mat& view : cropped) positives.push_back({view, 0});
    std::vector<Example> negatives =
        draw_negatives(options.negatives_per_kind, options.seed, train_hands);
    std::vector<Example> val_negatives = draw_negatives(
        std::max(50, options.negatives_per_kind / 10), splitmix64(options.seed + 77), val_hands);

    torch::manual_seed(options.seed);
    auto net = gate.net();
    net->train();
    torch::optim::Adam optimiser(
        net->parameters(), torch::optim::AdamOptions(options.learning_rate).weight_decay(1e-4));
    Rng rng(splitmix64(options.seed + 3));
    const std::size_t half = static_cast<std::size_t>(options.batch / 2);
    std::size_t next_negative = 0;
    for (int epoch = 0; epoch < options.epochs; ++epoch) {
        // Cosine decay: large steps while the classes separate, small ones to settle the edge.
        const double lr =
            options.learning_rate * 0.5 * (1.0 + std::cos(M_PI * epoch / options.epochs));
        for (auto& group : optimiser.param_groups())
            static_cast<torch::optim::AdamOptions&>(group.options()).lr(lr);
        std::shuffle(positives.begin(), positives.end(), rng);
        std::shuffle(negatives.begin(), negatives.end(), rng);
        double total = 0.0;
        int steps = 0;
        for (std::size_t start = 0; start < positives.size(); start += half) {
            std::vector<cv::Mat> views;
            std::vector<std::int64_t> labels;
            for (std::size_t i = start; i < std::min(positives.size(), start + half); ++i) {
                const Example& neg = negatives[next_negative++ % negatives.size()];
                for (const Example* e : std::array<const Example*, 2>{&positives[i], &neg}) {
                    views.push_back(augment_view(e->view, rng));
                    labels.push_back(e->label);
                }
            }
            optimiser.zero_grad();
            torch::Tensor loss = torch::nn::functional::cross_entropy(
                net->forward(batch_tensor(views)), torch::tensor(labels, torch::kInt64));
            loss.backward();
            optimiser.step();
            total += loss.item<double>();
            ++steps;
        }
        report.epoch_loss.push_back(total / std::max(1, steps));
        if (options.on_epoch) options.on_epoch(epoch + 1, report.epoch_loss.back());
    }
    net->eval();

    // The threshold refuses at most the asked share of held-out hands, and never sits above
    // an even chance, where it would refuse hands the network finds more likely than not.
    std::vector<cv::Mat> views;
    for (const cv::Mat* h : val_hands) views.push_back(gate_view(*h));
    for (const cv::Mat& view : tight_crops(val_hands, options.cropped_share)) views.push_back(view);
    std::vector<double> hand_scores;
    for (const auto& p : gate.probabilities(views)) hand_scores.push_back(p[0]);
    report.threshold = std::clamp(quantile(hand_scores, options.refused_hands), 0.05, 0.5);
    gate.set_threshold(report.threshold);
    report.hands_refused = std::count_if(hand_scores.begin(), hand_scores.end(),
                                         [&](double s) { return s < report.threshold; }) /
                           static_cast<double>(hand_scores.size());
    views.clear();
    for (const Example& e : val_negatives) views.push_back(e.view);
    const auto probs = gate.probabilities(views);
    for (std::size_t k = 0; k < kNegativeKinds.size(); ++k) {
        int n = 0, refused = 0;
        for (std::size_t i = 0; i < val_negatives.size(); ++i)
            if (val_negatives[i].label == 1 + static_cast<int>(k)) {
                ++n;
                refused += probs[i][0] < report.threshold;
            }
        report.negatives_refused.emplace_back(to_string(kNegativeKinds[k]),
                                              n ? double(refused) / n : 0.0);
    }

    nlohmann::json& meta = gate.meta();
    meta["training"] = {{"hands_train", report.hands_train},
                        {"hands_validation", report.hands_validation},
                        {"negatives_per_kind", options.negatives_per_kind},
                        {"cropped_share", options.cropped_share},
                        {"epochs", options.epochs},
                        {"batch", options.batch},
                        {"learning_rate", options.learning_rate},
                        {"seed", options.seed},
                        {"final_loss", report.epoch_loss.back()}};
    nlohmann::json refused = nlohmann::json::object();
    for (const auto& [kind, share] : report.negatives_refused) refused[kind] = share;
    meta["validation"] = {{"hands_refused", report.hands_refused}, {"negatives_refused", refused}};
    return report;
}

}  // namespace boneage
