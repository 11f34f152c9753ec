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

#include <boneage/fast_path.hpp>

#include "cache_support.hpp"
#include "phantom_cache.hpp"
#include "support.hpp"
#include "train/checkpoint.hpp"
#include "train/net_setup.hpp"

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
    o.precision = "fp8";  // fp16 is valid (on a GPU); training on the CPU refuses it later
    try {
        validate(o);
        FAIL() << "fp8 accepted";
    } catch (const UsageError& e) {
        EXPECT_NE(std::string(e.what()).find("bf16"), std::string::npos) << e.what();
    }
    o.precision = "fp32";
    o.arch = "vgg";
    EXPECT_THROW(validate(o), UsageError);
    o.arch = "shallow";
    o.learning_rate = 0;
    EXPECT_THROW(validate(o), UsageError);
    o.learning_rate = 1e-3;
    o.input_size = 1024;  // the largest a model file may hold
    EXPECT_NO_THROW(validate(o));
    o.input_size = 1025;
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
    // The steadied options: at Adam's constant 0.001 the loss swings between epochs, and
    // whether it gets under half the mean's error then depends on the CPU's kernels.
    o.schedule = "cosine";
    o.warmup_epochs = 1.0;
    o.init_output_bias = "mean";
    o.input_norm = "dataset";
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

// ---------------------------------------------------------------------------------------------
// Cross-validation folds

TEST(Folds, EveryIdIsInExactlyOneFoldAndFoldZeroOfFiveIsTheTwentyPercentSplit) {
    for (const int k : {2, 3, 5, 10}) {
        std::vector<int> count(static_cast<std::size_t>(k), 0);
        for (int i = 0; i < 20000; ++i) {
            const std::string id = std::to_string(1000 + i);
            const int f = fold_of(id, k);
            ASSERT_GE(f, 0) << id;
            ASSERT_LT(f, k) << id;
            ++count[static_cast<std::size_t>(f)];
            // The fold is the slice [f / K, (f + 1) / K) of the split's hash, so it is also the
            // difference of two validation splits.
            const double h = id_hash_fraction(id);
            EXPECT_GE(h, static_cast<double>(f) / k) << id;
            EXPECT_LT(h, static_cast<double>(f + 1) / k) << id;
            EXPECT_EQ(f == 0, in_validation_split(id, 1.0 / k)) << id << " of " << k;
            if (k == 5) EXPECT_EQ(f == 0, in_validation_split(id, 0.2)) << id;
        }
        for (int f = 0; f < k; ++f)  // about 20000 / K each (binomial SD under 70)
            EXPECT_NEAR(count[static_cast<std::size_t>(f)], 20000.0 / k, 400.0) << f << "/" << k;
    }
    EXPECT_THROW(fold_of("1377", 1), UsageError);
}

TEST(Folds, OnTheDevelopmentRadiographsFoldZeroOfFiveIsThe191ValidationIds) {
    const auto root = test::rsna_dev_dir();
    if (!root) GTEST_SKIP() << "../shared/data/rsna-dev is not here";
    const Labels labels = read_labels(*root / "labels.csv");
    std::vector<int> count(5, 0);
    std::size_t validating = 0;
    for (const LabelRow& r : labels.rows) {
        ++count[static_cast<std::size_t>(fold_of(r.id, 5))];
        validating += in_validation_split(r.id, 0.2);
        EXPECT_EQ(fold_of(r.id, 5) == 0, in_validation_split(r.id, 0.2)) << r.id;
    }
    EXPECT_EQ(validating, 191u);
    EXPECT_EQ(count[0], 191);
    std::cout << "folds of 5 over " << labels.rows.size() << " radiographs: " << count[0] << " "
              << count[1] << " " << count[2] << " " << count[3] << " " << count[4] << "\n";
}

TEST(TrainOptions, TheDeepNetworkOptionsRoundTripAndBadValuesAreRefused) {
    TrainOptions o;
    o.train_cache = "x.bin";
    o.out = "m.bin";
    o.folds = 5;
    o.fold = 4;
    o.init_output_bias = "mean";
    o.clip_grad_norm = 2.5;
    o.bn_momentum = 0.01;
    o.input_norm = "dataset";
    EXPECT_NO_THROW(validate(o));
    const TrainOptions back = nlohmann::json(o).get<TrainOptions>();
    EXPECT_EQ(nlohmann::json(back), nlohmann::json(o));
    EXPECT_EQ(back.fold, 4);
    EXPECT_EQ(back.bn_momentum, 0.01);

    // A checkpoint written before these options reads as the recipe it ran.
    nlohmann::json old = nlohmann::json(TrainOptions{});
    for (const char* key :
         {"folds", "fold", "init_output_bias", "clip_grad_norm", "bn_momentum", "input_norm"})
        old.erase(key);
    EXPECT_EQ(nlohmann::json(old.get<TrainOptions>()), nlohmann::json(TrainOptions{}));

    auto refused = [&o](auto change) {
        TrainOptions bad = o;
        change(bad);
        EXPECT_THROW(validate(bad), UsageError);
    };
    refused([](TrainOptions& b) { b.fold = 5; });
    refused([](TrainOptions& b) { b.folds = 1; b.fold = 0; });
    refused([](TrainOptions& b) { b.val_cache_split = 0.2; });
    refused([](TrainOptions& b) { b.init_output_bias = "median"; });
    refused([](TrainOptions& b) { b.init_from = "start.bin"; });  // mean wants fresh weights
    refused([](TrainOptions& b) { b.clip_grad_norm = -1; });
    refused([](TrainOptions& b) { b.bn_momentum = 1.5; });
    refused([](TrainOptions& b) { b.input_norm = "imagenet"; });
}

TEST_F(Train, TheIdsOfTheFoldValidateAndTrainInNeitherCache) {
    PreparedCache tiny(tiny_cache_);
    auto fold_count = [](const PreparedCache& c, int k, int folds) {
        std::size_t n = 0;
        for (std::size_t i = 0; i < c.size(); ++i) n += fold_of(c.id(i), folds) == k;
        return n;
    };

    // One cache: fold 1 of 3 validates, the rest trains.
    TrainOptions o = tiny_options("fold-one-cache");
    o.epochs = 1;
    o.steps_per_epoch = 1;
    o.folds = 3;
    o.fold = 1;
    const std::size_t in_fold = fold_count(tiny, 1, 3);
    ASSERT_GT(in_fold, 0u);
    TrainResult r = train(o);
    EXPECT_EQ(r.meta.training.at("val_count").get<std::size_t>(), in_fold);
    EXPECT_EQ(r.meta.training.at("train_cache").at("count").get<std::size_t>(),
              tiny.size() - in_fold);
    EXPECT_EQ(r.meta.training.at("folds").at("of"), 3);

    // A validation cache that holds only some of the training ids (ids 1000-1011 of
    // 1000-1023): every id of the fold leaves training, held by the validation cache or not.
    const std::filesystem::path half = phantom_cache(*scratch_, "half", 12, 7, 64);
    PreparedCache val(half);
    o = tiny_options("fold-two-caches");
    o.epochs = 1;
    o.steps_per_epoch = 1;
    o.val_cache = half;
    o.folds = 3;
    o.fold = 2;
    const std::size_t val_in_fold = fold_count(val, 2, 3), train_in_fold = fold_count(tiny, 2, 3);
    ASSERT_GT(train_in_fold, val_in_fold);  // so the test tells the two rules apart
    r = train(o);
    EXPECT_EQ(r.meta.training.at("val_count").get<std::size_t>(), val_in_fold);
    EXPECT_EQ(r.meta.training.at("train_rows_excluded").get<std::size_t>(), train_in_fold);
    EXPECT_EQ(r.meta.training.at("train_cache").at("count").get<std::size_t>(),
              tiny.size() - train_in_fold);
}

// ---------------------------------------------------------------------------------------------
// Options for the deep networks

// Mean prediction of `net` over `rows` of `cache` with batch norms on batch statistics and
// dropout off, as set_output_bias_to_mean measures it (one batch of all rows).
double batch_mode_mean(BoneAgeNetImpl& net, const PreparedCache& cache,
                       const std::vector<std::size_t>& rows) {
    net.train();
    for (const auto& m : net.modules(false))
        if (m->as<torch::nn::DropoutImpl>()) m->eval();
    torch::NoGradGuard no_grad;
    std::vector<const std::uint8_t*> images;
    for (std::size_t r : rows) images.push_back(cache.image(r));
    const torch::Tensor x =
        resize_batch(images_to_tensor(images, cache.image_size()), net.config().input_size);
    return net.forward(x, torch::zeros({x.size(0)})).mean().item<double>();
}

TEST_F(Train, OutputBiasAtTheMeanStartsThePredictionsAtTheTrainingMean) {
    PreparedCache cache(tiny_cache_);
    const std::vector<std::size_t> rows = {0, 1, 2, 3, 4, 5, 6, 7};
    ModelConfig c;
    c.arch = "resnet50";  // batch norms and the paper's dense head
    c.input_size = 64;
    c.label_offset = 120.0;
    c.label_scale = 40.0;
    torch::manual_seed(5);
    BoneAgeNet net = make_model(c);
    std::vector<torch::Tensor> buffers;
    for (const auto& b : net->named_buffers()) buffers.push_back(b.value().clone());
    const torch::Tensor bias = net->named_parameters()["head.output.bias"].clone();

    const double before = detail::set_output_bias_to_mean(*net, cache, rows, 150.0, 8);
    EXPECT_TRUE(std::isfinite(before));
    std::size_t i = 0;  // measuring left the running statistics as they were
    for (const auto& b : net->named_buffers())
        EXPECT_TRUE(torch::equal(b.value(), buffers[i++])) << b.key();
    EXPECT_NEAR(batch_mode_mean(*net, cache, rows), 150.0, 1e-3);
    EXPECT_NEAR((net->named_parameters()["head.output.bias"] - bias).item<double>(),
                (150.0 - before) / 40.0, 1e-6);  // a float32 bias
    EXPECT_GT(std::abs(before - 150.0), 1e-3);  // it had something to do

    // Through the trainer: the shallow net (no batch norms) at a learning rate too small to
    // move it: in evaluation mode it predicts the training mean on average over its training
    // rows, and the run is otherwise the one without the option.
    TrainOptions o = tiny_options("bias-mean");
    o.epochs = 1;
    o.steps_per_epoch = 1;
    o.learning_rate = 1e-12;
    o.init_output_bias = "mean";
    const TrainResult r = train(o);
    LoadedModel m = load_model(r.model_file);
    std::vector<std::size_t> train_rows;
    for (std::size_t k = 0; k < cache.size(); ++k)
        if (!in_validation_split(cache.id(k), o.val_split)) train_rows.push_back(k);
    m.net->eval();
    std::vector<const std::uint8_t*> images;
    for (std::size_t k : train_rows) images.push_back(cache.image(k));
    const double mean_prediction =
        m.net->forward(images_to_tensor(images, 64),
                       torch::zeros({static_cast<std::int64_t>(images.size())}))
            .mean()
            .item<double>();
    EXPECT_NEAR(mean_prediction, m.meta.config.label_offset, 1e-3);

    TrainOptions plain = tiny_options("bias-none");
    plain.epochs = 1;
    plain.steps_per_epoch = 1;
    plain.learning_rate = 1e-12;
    const std::vector<torch::Tensor> a = weights_of(r.model_file),
                                     b = weights_of(train(plain).model_file);
    const auto names = m.net->named_parameters().keys();
    ASSERT_EQ(a.size(), b.size());
    for (std::size_t k = 0; k < names.size(); ++k) {
        const double diff = (a[k] - b[k]).abs().max().item<double>();
        if (names[k] == "head.output.bias")
            EXPECT_GT(diff, 1e-4) << names[k];
        else
            EXPECT_LT(diff, 1e-9) << names[k];
    }
}

TEST_F(Train, GradientClippingBoundsTheStepAndRecordsTheNorm) {
    auto run = [](const std::string& name, double lr, double clip) {
        TrainOptions o = tiny_options(name);
        o.epochs = 1;
        o.steps_per_epoch = 2;
        o.learning_rate = lr;
        o.clip_grad_norm = clip;
        return train(o);
    };
    // Adam divides by the gradients' own size (plus its epsilon, 1e-7), so only a limit far
    // below the norm shows in the weights: clipped to 1e-11, a step of rate 1e-3 moves no
    // weight by more than 1e-3 x 1e-11 / 1e-7 = 1e-7.
    const TrainResult still = run("clip-none-still", 1e-12, 0.0);
    const TrainResult clipped = run("clip-tight", 1e-3, 1e-11);
    const TrainResult free = run("clip-none", 1e-3, 0.0);
    const std::vector<torch::Tensor> w0 = weights_of(still.model_file),
                                     wc = weights_of(clipped.model_file),
                                     wf = weights_of(free.model_file);
    double clipped_move = 0.0, free_move = 0.0;
    for (std::size_t k = 0; k < w0.size(); ++k) {
        clipped_move = std::max(clipped_move, (wc[k] - w0[k]).abs().max().item<double>());
        free_move = std::max(free_move, (wf[k] - w0[k]).abs().max().item<double>());
    }
    EXPECT_LT(clipped_move, 1e-6);
    EXPECT_GT(free_move, 1e-4);

    const EpochStats& s = clipped.history.at(0);
    EXPECT_TRUE(std::isfinite(s.grad_norm));
    EXPECT_GT(s.grad_norm, 1e-11);
    EXPECT_EQ(s.clipped_steps, 2);
    EXPECT_TRUE(std::isnan(free.history.at(0).grad_norm));  // not measured without clipping

    // A limit above every norm changes nothing.
    const TrainResult loose = run("clip-loose", 1e-3, 1e12);
    const std::vector<torch::Tensor> wl = weights_of(loose.model_file);
    for (std::size_t k = 0; k < wl.size(); ++k) EXPECT_TRUE(torch::equal(wl[k], wf[k])) << k;
    EXPECT_EQ(loose.history.at(0).clipped_steps, 0);
}

TEST(BatchNormMomentum, TheRunningMeanMovesByTheMomentumTimesTheBatchMean) {
    ModelConfig c;
    c.arch = "resnet18";
    c.input_size = 32;
    torch::manual_seed(3);
    BoneAgeNet net = make_model(c);
    EXPECT_EQ(detail::set_batchnorm_momentum(*net, 0.25), 20);  // ResNet-18's batch norms
    const auto modules = net->named_modules();
    auto& conv1 = *modules["conv1"]->as<torch::nn::Conv2dImpl>();
    auto& bn1 = *modules["bn1"]->as<torch::nn::BatchNorm2dImpl>();
    EXPECT_EQ(bn1.options.momentum().value(), 0.25);

    net->train();
    const torch::Tensor x = torch::rand({4, 1, 32, 32});
    torch::NoGradGuard no_grad;
    const torch::Tensor batch_mean = conv1.forward(x).mean({0, 2, 3});
    net->forward(x, {});
    // From a running mean of 0: 0.75 x 0 + 0.25 x the batch's.
    EXPECT_TRUE(torch::allclose(bn1.running_mean, 0.25 * batch_mean, 1e-5, 1e-6));
}

TEST_F(Train, BatchNormMomentumZeroKeepsTheRunningStatisticsThroughTrainingAndResume) {
    TrainOptions o = tiny_options("bn-frozen");
    o.arch = "resnet18";
    o.head = "gap";
    o.epochs = 1;
    o.steps_per_epoch = 1;
    o.bn_momentum = 0.0;
    train(o);
    ResumeOptions more;
    more.epochs = 2;
    const TrainResult r = resume_training(run_dir_of(o), more);
    EXPECT_EQ(r.epochs_run, 2);
    LoadedModel frozen = load_model(r.model_file);
    int checked = 0;
    for (const auto& b : frozen.net->named_buffers()) {
        if (b.key().find("running_mean") != std::string::npos) {
            EXPECT_TRUE(torch::equal(b.value(), torch::zeros_like(b.value()))) << b.key();
            ++checked;
        } else if (b.key().find("running_var") != std::string::npos) {
            EXPECT_TRUE(torch::equal(b.value(), torch::ones_like(b.value()))) << b.key();
        }
    }
    EXPECT_EQ(checked, 20);

    // The default momentum moves them, so the check above can fail.
    TrainOptions moving = tiny_options("bn-moving");
    moving.arch = "resnet18";
    moving.head = "gap";
    moving.epochs = 1;
    moving.steps_per_epoch = 1;
    LoadedModel m = load_model(train(moving).model_file);
    EXPECT_FALSE(torch::equal(m.net->named_buffers()["bn1.running_mean"],
                              torch::zeros_like(m.net->named_buffers()["bn1.running_mean"])));
}

TEST(InputNormalisation, PixelStatsAreThoseOfTheNetworksInputTensor) {
    test::ScratchDir dir("pixel-stats");
    const std::filesystem::path file = test::phantom_cache(dir, "stats", 6, 3, 48);
    PreparedCache cache(file);
    const std::vector<std::size_t> rows = {1, 3, 4};
    const detail::PixelStats s = detail::pixel_stats(cache, rows);
    std::vector<const std::uint8_t*> images;
    for (std::size_t r : rows) images.push_back(cache.image(r));
    const torch::Tensor x = images_to_tensor(images, 48).to(torch::kFloat64);
    // The tensor holds v / 255 in float32, the histogram sums it in double.
    EXPECT_NEAR(s.mean, x.mean().item<double>(), 1e-7);
    EXPECT_NEAR(s.sd, x.std(/*unbiased=*/false).item<double>(), 1e-7);
    EXPECT_GT(s.sd, 0.01);
}

TEST(InputNormalisation, EveryPathOfTheNetAppliesItAndTheModelFileKeepsIt) {
    test::ScratchDir dir("input-norm");
    const torch::Tensor x = torch::rand({3, 1, 64, 64});
    const torch::Tensor sex = torch::tensor({1.0f, 0.0f, 1.0f});
    for (const char* arch : {"shallow", "resnet18"}) {
        ModelConfig plain;
        plain.arch = arch;
        plain.input_size = 64;
        plain.label_offset = 120;
        plain.label_scale = 40;
        ModelConfig normalised = plain;
        normalised.input_mean = 0.4;
        normalised.input_std = 0.2;
        torch::manual_seed(9);
        BoneAgeNet a = make_model(plain);
        torch::manual_seed(9);
        BoneAgeNet b = make_model(normalised);
        a->eval();
        b->eval();
        torch::NoGradGuard no_grad;
        // ResNet-18's output layer starts at zero, which would hide its input: give both nets
        // the same non-zero one.
        const torch::Tensor w = torch::randn_like(a->named_parameters()["head.output.weight"]);
        a->named_parameters()["head.output.weight"].copy_(w);
        b->named_parameters()["head.output.weight"].copy_(w);
        // The normalised net on x is the plain net on (x - mean) / SD.
        const torch::Tensor by_hand = a->forward((x - 0.4) / 0.2, sex);
        EXPECT_TRUE(torch::allclose(b->forward(x, sex), by_hand, 1e-5, 1e-4)) << arch;
        EXPECT_TRUE(torch::allclose(b->features(x), a->features((x - 0.4) / 0.2), 1e-5, 1e-5))
            << arch;
        EXPECT_FALSE(torch::allclose(a->forward(x, sex), by_hand, 1e-5, 1e-4)) << arch;

        // The inference fast path (fused for these two) and a saved and loaded file agree.
        FastModel fast(b, Precision::Fp32);
        EXPECT_EQ(fast.mode(), "fused") << arch;
        EXPECT_TRUE(torch::allclose(fast.infer(x, sex), by_hand, 1e-4, 1e-3)) << arch;
        ModelMetadata meta;
        meta.config = normalised;
        meta.preprocess.output_size = 64;
        save_model(dir / "n.bin", b, meta);
        const LoadedModel back = load_model(dir / "n.bin");
        EXPECT_EQ(back.meta.config.input_mean, 0.4);
        EXPECT_EQ(back.meta.config.input_std, 0.2);
        back.net->eval();
        EXPECT_TRUE(torch::allclose(back.net->forward(x, sex), by_hand, 1e-5, 1e-4)) << arch;
    }
    // A config without normalisation is written as before it existed.
    const nlohmann::json plain = ModelConfig{};
    EXPECT_FALSE(plain.contains("input_mean"));
    EXPECT_FALSE(plain.contains("input_std"));
    EXPECT_EQ(plain.get<ModelConfig>().input_std, 1.0);
}

TEST_F(Train, DatasetInputNormIsMeasuredOnTheTrainingRowsAndPassedOnByFineTuning) {
    TrainOptions o = tiny_options("norm");
    o.epochs = 1;
    o.steps_per_epoch = 1;
    o.input_norm = "dataset";
    const TrainResult r = train(o);
    PreparedCache cache(tiny_cache_);
    std::vector<std::size_t> train_rows;
    for (std::size_t k = 0; k < cache.size(); ++k)
        if (!in_validation_split(cache.id(k), o.val_split)) train_rows.push_back(k);
    const detail::PixelStats s = detail::pixel_stats(cache, train_rows);
    EXPECT_DOUBLE_EQ(r.meta.config.input_mean, s.mean);
    EXPECT_DOUBLE_EQ(r.meta.config.input_std, s.sd);
    EXPECT_EQ(load_model(r.model_file).meta.config.input_std, s.sd);

    // Fine-tuning keeps the normalisation its starting weights learnt with.
    TrainOptions tune = tiny_options("norm-tuned");
    tune.epochs = 1;
    tune.steps_per_epoch = 1;
    tune.init_from = r.model_file;
    EXPECT_EQ(train(tune).meta.config.input_mean, s.mean);
    // A start without one cannot take one on.
    TrainOptions plain = tiny_options("norm-plain");
    plain.epochs = 1;
    plain.steps_per_epoch = 1;
    tune.init_from = train(plain).model_file;
    tune.input_norm = "dataset";
    EXPECT_THROW(train(tune), UsageError);
}

TEST_F(Train, TrunkStartTakesTheLayersBeforeTheHeadAndLetsTheInputSizeChange) {
    // Pre-training at a small size, fine-tuning at a larger one with the flatten head: the
    // head's first dense layer changes shape, the trunk does not.
    TrainOptions small = tiny_options("trunk-source");
    small.epochs = 1;
    small.steps_per_epoch = 2;
    small.input_size = 48;
    const TrainResult source = train(small);
    ASSERT_EQ(source.meta.config.head, "flatten");

    TrainOptions tune = tiny_options("trunk-tuned");
    tune.epochs = 1;
    tune.steps_per_epoch = 1;
    tune.input_size = 64;
    tune.learning_rate = 1e-12;  // one step that moves no weight measurably
    tune.init_from = source.model_file;
    try {
        train(tune);
        FAIL() << "a whole model of another input size started a flatten-head run";
    } catch (const UsageError& e) {
        EXPECT_NE(std::string(e.what()).find("--init-layers trunk"), std::string::npos)
            << e.what();
    }

    tune.init_layers = "trunk";
    tune.init_output_bias = "mean";  // the head is fresh, so it may start at the mean
    const TrainResult tuned = train(tune);
    EXPECT_EQ(tuned.meta.config.input_size, 64);
    const LoadedModel a = load_model(source.model_file);
    const LoadedModel b = load_model(tuned.model_file);
    const auto from = a.net->named_parameters();
    int trunk = 0, head = 0;
    for (const auto& p : b.net->named_parameters()) {
        const torch::Tensor* s = from.find(p.key());
        ASSERT_NE(s, nullptr) << p.key();
        if (p.key().rfind("head.", 0) != 0) {
            ++trunk;
            EXPECT_TRUE(torch::allclose(p.value(), *s, 0.0, 1e-6)) << p.key();
        } else if (p.key() == "head.output.weight") {
            ++head;
            EXPECT_FALSE(torch::allclose(p.value(), *s)) << "the head was copied";
        }
    }
    EXPECT_GT(trunk, 0);
    EXPECT_EQ(head, 1);
    EXPECT_NE(b.net->named_parameters()["head.dense1.weight"].sizes(),
              from["head.dense1.weight"].sizes());

    // Options that make no sense together are refused before any work.
    TrainOptions alone = tiny_options("trunk-alone");
    alone.init_layers = "trunk";
    EXPECT_THROW(validate(alone), UsageError);
    alone.init_from = source.model_file;
    alone.init_layers = "head";
    EXPECT_THROW(validate(alone), UsageError);
}

// ---- what the inputs of a run mean --------------------------------------------------------

TEST_F(Train, RefusesACacheOfAnotherPreprocessVersionUnlessAllowed) {
    const std::filesystem::path other = *scratch_ / "other-version-cache.bin";
    std::filesystem::copy_file(tiny_cache_, other,
                               std::filesystem::copy_options::overwrite_existing);
    test::edit_cache_header(
        other, [](nlohmann::json& h) { h["preprocess_version"] = kPreprocessVersion + 1; });
    TrainOptions o = tiny_options("other-version");
    o.train_cache = other;
    o.epochs = 1;
    o.steps_per_epoch = 1;
    try {
        train(o);
        FAIL() << "a cache of another preprocessing version was trained on";
    } catch (const UsageError& e) {
        const std::string what = e.what();
        EXPECT_NE(what.find(other.string()), std::string::npos) << what;
        EXPECT_NE(what.find("preprocessing version " + std::to_string(kPreprocessVersion + 1)),
                  std::string::npos)
            << what;
        EXPECT_NE(what.find("--allow-preprocess-mismatch"), std::string::npos) << what;
    }
    EXPECT_FALSE(std::filesystem::exists(o.out));
    o.allow_preprocess_mismatch = true;
    const TrainResult r = train(o);
    // The model says what its weights saw, not what this build makes.
    EXPECT_EQ(load_model(r.model_file).meta.preprocess_version, kPreprocessVersion + 1);
}

TEST_F(Train, RefusesAValidationCachePreprocessedUnlikeTheTrainingCache) {
    const std::filesystem::path val = *scratch_ / "val-other-settings.bin";
    std::filesystem::copy_file(tiny_cache_, val, std::filesystem::copy_options::overwrite_existing);
    test::edit_cache_header(val,
                            [](nlohmann::json& h) { h["settings"]["clahe_clip_limit"] = 3.0; });
    TrainOptions o = tiny_options("val-settings");
    o.val_cache = val;
    o.val_cache_split = 0.5;
    o.epochs = 1;
    try {
        train(o);
        FAIL() << "a validation cache preprocessed otherwise was accepted";
    } catch (const UsageError& e) {
        const std::string what = e.what();
        EXPECT_NE(what.find(val.string()), std::string::npos) << what;
        EXPECT_NE(what.find(tiny_cache_.string()), std::string::npos) << what;
        EXPECT_NE(what.find("clahe_clip_limit"), std::string::npos) << what;
    }
    // No override: the validation numbers would measure images the model never trains on.
    o.allow_preprocess_mismatch = true;
    EXPECT_THROW(train(o), UsageError);
}

TEST_F(Train, RefusesToStartFromAModelOfAnotherPreprocessVersionUnlessAllowed) {
    TrainOptions first = tiny_options("init-base");
    first.epochs = 1;
    first.steps_per_epoch = 1;
    LoadedModel base = load_model(train(first).model_file);
    base.meta.preprocess_version = kPreprocessVersion + 1;
    const std::filesystem::path older = *scratch_ / "init-older.bin";
    save_model(older, base.net, base.meta);

    TrainOptions tune = tiny_options("init-tune");
    tune.init_from = older;
    tune.epochs = 1;
    tune.steps_per_epoch = 1;
    try {
        train(tune);
        FAIL() << "a model of another preprocessing version started the run";
    } catch (const UsageError& e) {
        const std::string what = e.what();
        EXPECT_NE(what.find(older.string()), std::string::npos) << what;
        EXPECT_NE(what.find("preprocessing version " + std::to_string(kPreprocessVersion + 1)),
                  std::string::npos)
            << what;
    }
    tune.allow_preprocess_mismatch = true;
    EXPECT_NO_THROW(train(tune));
}

}  // namespace
}  // namespace boneage
