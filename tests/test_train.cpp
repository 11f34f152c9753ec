// The training recipe: loss, L2, early stopping, checkpoint/resume, divergence, and that a
// small model actually learns bone age from phantoms.
#include <gtest/gtest.h>

#include <boneage/dataset.hpp>
#include <boneage/error.hpp>
#include <boneage/synth.hpp>
#include <boneage/train.hpp>
#include <chrono>
#include <cmath>
#include <fstream>
#include <memory>

#include "phantom_cache.hpp"
#include "support.hpp"
#include "train/checkpoint.hpp"

namespace boneage {
namespace {

using test::phantom_cache;
using test::ScratchDir;

// Shared fixtures: phantom caches are built once for the whole file.
class Train : public ::testing::Test {
protected:
    static void SetUpTestSuite() {
        scratch_ = std::make_unique<ScratchDir>("train");
        tiny_cache_ = phantom_cache(*scratch_, "tiny", 24, 7, 64);
    }
    static void TearDownTestSuite() { scratch_.reset(); }

    // A tiny, quick run: shallow at 64 px, no early stop, 4 steps an epoch.
    static TrainOptions tiny_options(const std::string& name) {
        TrainOptions o;
        o.arch = "shallow";
        o.train_cache = tiny_cache_;
        o.val_split = 0.2;
        o.out = *scratch_ / (name + ".bin");
        o.epochs = 3;
        o.batch_size = 4;
        o.steps_per_epoch = 4;
        o.seed = 11;
        o.threads = 1;
        o.early_stopping.monitor = "train_loss";
        o.early_stopping.patience = 100;
        return o;
    }

    static std::unique_ptr<ScratchDir> scratch_;
    static std::filesystem::path tiny_cache_;
};
std::unique_ptr<ScratchDir> Train::scratch_;
std::filesystem::path Train::tiny_cache_;

std::vector<torch::Tensor> weights_of(const std::filesystem::path& model_file) {
    LoadedModel m = load_model(model_file);
    std::vector<torch::Tensor> out;
    for (auto& p : m.net->named_parameters()) out.push_back(p.value().detach().clone());
    for (auto& b : m.net->named_buffers()) out.push_back(b.value().detach().clone());
    return out;
}

TEST(MsleLoss, EqualsItsFormulaOnHandComputedValues) {
    // The third prediction is negative: Keras clips it to 1e-7 before the logarithm.
    const torch::Tensor pred = torch::tensor({10.0f, 100.0f, -5.0f, 0.0f});
    const torch::Tensor target = torch::tensor({12.0f, 90.0f, 3.0f, 0.0f});
    const double expected = (std::pow(std::log(11.0) - std::log(13.0), 2) +
                             std::pow(std::log(101.0) - std::log(91.0), 2) +
                             std::pow(std::log(1.0 + 1e-7) - std::log(4.0), 2) + 0.0) /
                            4.0;
    EXPECT_NEAR(msle_loss(pred, target).item<double>(), expected, 1e-6 * expected);
    EXPECT_DOUBLE_EQ(msle_loss(target, target).item<double>(), 0.0);
    EXPECT_THROW(msle_loss(pred, target.reshape({2, 2})), Error);
}

TEST(L2Penalty, CountsOnlyTheNamedLayerAndChangesByTheExactAmount) {
    ModelConfig c;
    c.arch = "shallow";
    c.input_size = 64;
    BoneAgeNet net = make_model(c);
    torch::NoGradGuard no_grad;
    const std::vector<torch::Tensor> named = net->l2_weights();
    ASSERT_FALSE(named.empty());

    double sum = 0.0;
    for (const torch::Tensor& w : named) sum += w.to(torch::kFloat64).pow(2).sum().item<double>();
    const double before = l2_penalty(*net, 0.01).item<double>();
    EXPECT_NEAR(before, 0.01 * sum, 1e-6 * before);

    // A weight outside the named layer: the penalty does not move at all.
    torch::Tensor other;
    for (auto& p : net->named_parameters()) {
        bool is_named = false;
        for (const torch::Tensor& w : named) is_named |= p.value().is_same(w);
        if (!is_named && p.key().find("conv") != std::string::npos) other = p.value();
    }
    ASSERT_TRUE(other.defined());
    other.flatten()[0].add_(5.0);
    EXPECT_EQ(l2_penalty(*net, 0.01).item<double>(), before);

    // The named weight: from v to v + 1 adds 0.01 x ((v + 1)^2 - v^2) = 0.01 x (2v + 1).
    torch::Tensor w = named.front().flatten();
    const double v = w[0].item<double>();
    w[0].add_(1.0);
    EXPECT_NEAR(l2_penalty(*net, 0.01).item<double>() - before, 0.01 * (2 * v + 1), 1e-5);
    EXPECT_NEAR(l2_penalty(*net, 0.5).item<double>(), 50 * l2_penalty(*net, 0.01).item<double>(),
                1e-5 * before * 50);
}

TEST(EarlyStopping, StopsAfterPatienceAndRemembersTheBestEpoch) {
    EarlyStoppingOptions o;
    o.patience = 3;
    o.min_delta = 0.1;
    EarlyStopping es(o);
    // 9 beats 10 by 1; 8.95 beats 9 by only 0.05, so it does not count; three epochs without
    // improvement end the run at epoch 5.
    EXPECT_FALSE(es.update(1, 10.0));
    EXPECT_FALSE(es.update(2, 9.0));
    EXPECT_TRUE(es.improved());
    EXPECT_FALSE(es.update(3, 8.95));
    EXPECT_FALSE(es.improved());
    EXPECT_FALSE(es.update(4, 9.5));
    EXPECT_TRUE(es.update(5, 9.2));
    EXPECT_EQ(es.best_epoch(), 2);
    EXPECT_DOUBLE_EQ(es.best_value(), 9.0);
    EXPECT_EQ(es.epochs_without_improvement(), 3);
}

TEST(EarlyStopping, AnImprovementRestartsTheCountAndStateRoundTrips) {
    EarlyStoppingOptions o;
    o.patience = 2;
    o.min_delta = 0.5;
    EarlyStopping es(o);
    es.update(1, 20.0);
    es.update(2, 19.8);  // not by 0.5
    es.update(3, 19.4);  // 0.6 below 20: improves, count restarts
    EXPECT_EQ(es.best_epoch(), 3);
    EXPECT_EQ(es.epochs_without_improvement(), 0);
    es.update(4, 19.0);  // 0.4: no

    EarlyStopping copy = EarlyStopping::from_state(nlohmann::json::parse(es.state().dump()));
    EXPECT_EQ(copy.state(), es.state());
    EXPECT_FALSE(copy.update(5, 18.8));  // 0.6 below 19.4: improves
    EXPECT_EQ(copy.best_epoch(), 5);
    EXPECT_FALSE(copy.update(6, 18.7));
    EXPECT_TRUE(copy.update(7, std::nan("")));  // NaN never improves
    EXPECT_EQ(copy.best_epoch(), 5);

    EarlyStoppingOptions max;
    max.mode = "max";
    max.patience = 1;
    max.min_delta = 0.0;
    EarlyStopping up(max);
    EXPECT_FALSE(up.update(1, 0.5));
    EXPECT_FALSE(up.update(2, 0.7));
    EXPECT_TRUE(up.update(3, 0.6));
    EXPECT_EQ(up.best_epoch(), 2);
}

TEST(EarlyStopping, RejectsBadOptions) {
    EarlyStoppingOptions o;
    o.monitor = "accuracy";
    EXPECT_THROW(EarlyStopping{o}, UsageError);
    o = {};
    o.patience = 0;
    EXPECT_THROW(EarlyStopping{o}, UsageError);
    o = {};
    o.mode = "lowest";
    EXPECT_THROW(EarlyStopping{o}, UsageError);
}

TEST(Augmentation, IsAPureFunctionOfSeedEpochAndIndexWithinItsRanges) {
    AugmentSettings s;
    const Augmentation a = draw_augmentation(1, 2, 3, s);
    const Augmentation b = draw_augmentation(1, 2, 3, s);
    EXPECT_EQ(a.rotation_deg, b.rotation_deg);
    EXPECT_EQ(a.brightness, b.brightness);
    EXPECT_NE(a.rotation_deg, draw_augmentation(1, 3, 3, s).rotation_deg);
    for (int i = 0; i < 200; ++i) {
        const Augmentation d = draw_augmentation(9, 1, i, s);
        EXPECT_LE(std::abs(d.rotation_deg), 10.0);
        EXPECT_LE(std::abs(d.shift_x), 0.05);
        EXPECT_LE(std::abs(d.scale - 1.0), 0.05);
        EXPECT_LE(std::abs(d.contrast - 1.0), 0.1);
        EXPECT_LE(std::abs(d.brightness), 0.1);
    }
    // The identity leaves an image as it was; a shift moves its content.
    std::vector<std::uint8_t> img(32 * 32, 0), out(32 * 32);
    img[16 * 32 + 10] = 200;
    augment_image(img.data(), 32, Augmentation{}, out.data());
    EXPECT_EQ(out, img);
    Augmentation shift;
    shift.shift_x = 0.125;  // 4 px
    augment_image(img.data(), 32, shift, out.data());
    EXPECT_EQ(out[16 * 32 + 14], 200);
    EXPECT_EQ(out[16 * 32 + 10], 0);
}

TEST(TrainOptions, RejectsBadSettingsWithClearMessages) {
    TrainOptions o;
    o.train_cache = "x.bin";
    o.out = "m.bin";
    EXPECT_NO_THROW(validate(o));
    o.precision = "fp16";
    try {
        validate(o);
        FAIL() << "fp16 accepted";
    } catch (const UsageError& e) {
        EXPECT_NE(std::string(e.what()).find("bf16"), std::string::npos) << e.what();
    }
    o.precision = "fp32";
    o.arch = "vgg";
    EXPECT_THROW(validate(o), UsageError);
    o.arch = "shallow";
    o.learning_rate = 0;
    EXPECT_THROW(validate(o), UsageError);

    o = TrainOptions{};
    o.epochs = 7;
    o.early_stopping.patience = 9;
    o.augment_settings.rotation_deg = 3;
    const TrainOptions back = nlohmann::json(o).get<TrainOptions>();
    EXPECT_EQ(nlohmann::json(back), nlohmann::json(o));
}

TEST_F(Train, ResumedRunEndsWithTheSameWeightsAsAnUninterruptedOne) {
    const TrainOptions straight = tiny_options("straight");
    const TrainResult a = train(straight);
    EXPECT_EQ(a.epochs_run, 3);

    // The same run, interrupted after the checkpoint of epoch 2, then resumed.
    TrainOptions broken = tiny_options("broken");
    TrainCallbacks interrupt;
    interrupt.on_epoch_end = [](const EpochStats& s, int) {
        if (s.epoch == 2) throw std::runtime_error("interrupted");
    };
    EXPECT_THROW(train(broken, interrupt), std::runtime_error);
    EXPECT_FALSE(std::filesystem::exists(broken.out));
    EXPECT_EQ(detail::read_checkpoint_state(run_dir_of(broken) / kCheckpointFile).epoch, 2);
    const TrainResult b = resume_training(run_dir_of(broken));
    EXPECT_EQ(b.epochs_run, 3);

    ASSERT_EQ(a.history.size(), b.history.size());
    for (std::size_t i = 0; i < a.history.size(); ++i) {
        EXPECT_EQ(a.history[i].train_loss, b.history[i].train_loss) << "epoch " << i + 1;
        EXPECT_EQ(a.history[i].val_mae, b.history[i].val_mae) << "epoch " << i + 1;
    }
    const std::vector<torch::Tensor> wa = weights_of(a.model_file), wb = weights_of(b.model_file);
    ASSERT_EQ(wa.size(), wb.size());
    for (std::size_t i = 0; i < wa.size(); ++i)
        EXPECT_TRUE(torch::equal(wa[i], wb[i])) << "tensor " << i;

    // A different seed gives different weights, so the comparison above can fail.
    TrainOptions other = tiny_options("other");
    other.seed = 12;
    other.epochs = 1;
    const std::vector<torch::Tensor> wc = weights_of(train(other).model_file);
    EXPECT_FALSE(torch::equal(wa.front(), wc.front()));

    // history.csv has a header and one row per epoch; the model file records the run.
    std::ifstream csv(run_dir_of(broken) / kHistoryFile);
    std::string line;
    int lines = 0;
    while (std::getline(csv, line)) ++lines;
    EXPECT_EQ(lines, 4);
    const LoadedModel m = load_model(b.model_file);
    EXPECT_EQ(m.meta.training.at("epochs_run"), 3);
    EXPECT_EQ(m.meta.training.at("history").size(), 3u);
    EXPECT_EQ(m.meta.config.input_size, 64);
    EXPECT_GT(m.meta.config.label_scale, 1.0);
}

TEST_F(Train, NonFiniteLossStopsWithAnErrorAndKeepsTheLastGoodCheckpoint) {
    TrainOptions o = tiny_options("diverge");
    o.epochs = 1;
    train(o);
    const std::filesystem::path checkpoint = run_dir_of(o) / kCheckpointFile;

    // An absurd learning rate from epoch 2 on sends the weights, then the loss, to infinity.
    ResumeOptions blow_up;
    blow_up.epochs = 3;
    blow_up.learning_rate = 1e30;
    try {
        resume_training(run_dir_of(o), blow_up);
        FAIL() << "a non-finite loss did not stop training";
    } catch (const Error& e) {
        const std::string what = e.what();
        EXPECT_NE(what.find("epoch 2"), std::string::npos) << what;
        EXPECT_NE(what.find("step"), std::string::npos) << what;
        EXPECT_NE(what.find("checkpoint (epoch 1)"), std::string::npos) << what;
    }
    EXPECT_EQ(detail::read_checkpoint_state(checkpoint).epoch, 1);

    // The checkpoint still loads and its weights are finite.
    ResumeOptions finish;
    finish.epochs = 1;
    const TrainResult r = resume_training(run_dir_of(o), finish);
    for (const torch::Tensor& t : weights_of(r.model_file))
        EXPECT_TRUE(torch::isfinite(t).all().item<bool>());
}

TEST_F(Train, ResumeWithoutACheckpointNamesTheFile) {
    try {
        resume_training(*scratch_ / "nowhere");
        FAIL() << "no error";
    } catch (const Error& e) {
        EXPECT_EQ(e.kind(), ErrorKind::NotFound);
        EXPECT_NE(std::string(e.what()).find("checkpoint"), std::string::npos) << e.what();
    }
}

// The model must learn: after well under a minute of training on clean phantoms, its error
// on phantoms it never saw must be less than half that of always predicting the training
// mean. (Clean phantoms keep the test short: with every nuisance on, the shallow net needs
// several times more steps to leave the mean.)
TEST_F(Train, ShallowModelLearnsBoneAgeFromPhantoms) {
    auto start = std::chrono::steady_clock::now();
    const std::filesystem::path train_cache = phantom_cache(*scratch_, "learn", 320, 101, 96, true);
    const std::filesystem::path test_cache =
        phantom_cache(*scratch_, "held-out", 60, 202, 96, true);
    std::cout << "phantoms prepared in "
              << std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count()
              << " s\n";

    TrainOptions o;
    o.arch = "shallow";
    o.train_cache = train_cache;
    o.out = *scratch_ / "learned.bin";
    o.val_split = 0.15;
    o.input_size = 64;  // from the 96 px cache: exercises the resize as well
    o.epochs = 25;
    o.batch_size = 8;
    o.augment = false;  // the fastest way off the mean; augmentation has its own test
    o.threads = 1;      // one thread: deterministic, and immune to a busy machine
    o.seed = 2;
    o.early_stopping.patience = 10;
    o.early_stopping.min_delta = 0.1;
    start = std::chrono::steady_clock::now();
    std::string curve;  // shown when the test fails
    TrainCallbacks log;
    log.on_epoch_end = [&curve](const EpochStats& s, int) {
        curve += "epoch " + std::to_string(s.epoch) + ": loss " + std::to_string(s.train_loss) +
                 ", mae " + std::to_string(s.train_mae) + ", val mae " + std::to_string(s.val_mae) +
                 "\n";
    };
    const TrainResult r = train(o, log);
    const double seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();

    PreparedCache train_set(train_cache), test_set(test_cache);
    double mean = 0.0;
    for (std::size_t i = 0; i < train_set.size(); ++i) mean += train_set.age_months(i);
    mean /= static_cast<double>(train_set.size());
    double baseline = 0.0;
    for (std::size_t i = 0; i < test_set.size(); ++i)
        baseline += std::abs(test_set.age_months(i) - mean);
    baseline /= static_cast<double>(test_set.size());

    LoadedModel m = load_model(r.model_file);
    const ValidationMetrics held_out = measure(*m.net, test_set);
    std::cout << "learning: " << r.epochs_run << " epochs in " << seconds << " s, best epoch "
              << r.best_epoch << ", held-out MAE " << held_out.mae << " vs mean predictor "
              << baseline << " months\n";
    EXPECT_EQ(held_out.n, test_set.size());
    EXPECT_LT(held_out.mae, baseline / 2.0) << curve;
    EXPECT_EQ(r.meta.validation.at("mae"), r.history.at(r.best_epoch - 1).val_mae);
}

}  // namespace
}  // namespace boneage
