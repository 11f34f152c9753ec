// The training options beyond the paper's recipe that the bundled model uses: a separate
// validation cache whose ids never train, fine-tuning from a model file, the cosine schedule,
// the absolute-error loss, AdamW, bf16 autocast and half-precision model files.
#include <gtest/gtest.h>

#include <boneage/dataset.hpp>
#include <boneage/error.hpp>
#include <boneage/synth.hpp>
#include <boneage/train.hpp>
#include <cmath>
#include <memory>

#include "phantom_cache.hpp"
#include "support.hpp"

namespace boneage {
namespace {

using test::ScratchDir;

class TrainRecipe : public ::testing::Test {
protected:
    static void SetUpTestSuite() {
        scratch_ = std::make_unique<ScratchDir>("train-recipe");
        cache_ = test::phantom_cache(*scratch_, "tiny", 24, 5, 64);
    }
    static void TearDownTestSuite() { scratch_.reset(); }

    static TrainOptions tiny(const std::string& name) {
        TrainOptions o;
        o.arch = "shallow";
        o.head = "gap";
        o.train_cache = cache_;
        o.val_split = 0.25;
        o.out = *scratch_ / (name + ".bin");
        o.epochs = 3;
        o.batch_size = 4;
        o.steps_per_epoch = 3;
        o.seed = 3;
        o.threads = 1;
        o.early_stopping.monitor = "train_loss";
        o.early_stopping.patience = 100;
        return o;
    }

    static std::unique_ptr<ScratchDir> scratch_;
    static std::filesystem::path cache_;
};
std::unique_ptr<ScratchDir> TrainRecipe::scratch_;
std::filesystem::path TrainRecipe::cache_;

TEST(TrainOptionsRecipe, AcceptsTheNewSettingsRejectsBadOnesAndRoundTrips) {
    TrainOptions o;
    o.train_cache = "x.bin";
    o.out = "m.bin";
    o.precision = "bf16";
    o.schedule = "cosine";
    o.warmup_epochs = 1.5;
    o.loss = "mae";
    o.weight_decay = 1e-4;
    o.weights_dtype = "float16";
    o.val_cache_split = 0.2;
    o.init_from = "start.bin";
    o.arch = "resnet18";
    EXPECT_NO_THROW(validate(o));
    const TrainOptions back = nlohmann::json(o).get<TrainOptions>();
    EXPECT_EQ(nlohmann::json(back), nlohmann::json(o));
    EXPECT_EQ(back.init_from, o.init_from);

    auto rejects = [](TrainOptions bad, const std::string& word) {
        try {
            validate(bad);
            ADD_FAILURE() << "accepted a bad " << word;
        } catch (const UsageError& e) {
            EXPECT_NE(std::string(e.what()).find(word), std::string::npos) << e.what();
        }
    };
    TrainOptions bad = o;
    bad.precision = "fp8";
    rejects(bad, "precision");
    bad = o;
    bad.schedule = "step";
    rejects(bad, "schedule");
    bad = o;
    bad.loss = "huber";
    rejects(bad, "loss");
    bad = o;
    bad.weights_dtype = "int8";
    rejects(bad, "dtype");
    bad = o;
    bad.warmup_epochs = 99;
    rejects(bad, "warm-up");
    bad = o;
    bad.weight_decay = -1;
    rejects(bad, "decay");
}

TEST_F(TrainRecipe, IdsThatValidateNeverTrain) {
    // The same cache on both sides: the split of the validation cache decides, and every id
    // that validates is left out of training.
    TrainOptions o = tiny("split");
    o.val_cache = cache_;
    o.val_cache_split = 0.3;
    o.epochs = 1;
    const TrainResult r = train(o);
    PreparedCache cache(cache_);
    std::size_t held = 0;
    for (std::size_t i = 0; i < cache.size(); ++i) held += in_validation_split(cache.id(i), 0.3);
    ASSERT_GT(held, 0u);
    ASSERT_LT(held, cache.size());
    EXPECT_EQ(r.meta.training.at("val_count").get<std::size_t>(), held);
    EXPECT_EQ(r.meta.training.at("train_rows_excluded").get<std::size_t>(), held);
    EXPECT_EQ(r.meta.training.at("train_cache").at("count").get<std::size_t>(),
              cache.size() - held);
}

TEST_F(TrainRecipe, CosineScheduleWarmsUpThenDecays) {
    TrainOptions o = tiny("cosine");
    o.schedule = "cosine";
    o.warmup_epochs = 1;
    o.learning_rate = 0.002;
    const TrainResult r = train(o);
    ASSERT_EQ(r.history.size(), 3u);
    const int steps = 3;
    // The first step of each epoch: 1/steps of the peak, then the peak, then cos at half-way.
    EXPECT_NEAR(r.history[0].lr, 0.002 / steps, 1e-12);
    EXPECT_NEAR(r.history[1].lr, 0.002, 1e-12);
    EXPECT_NEAR(r.history[2].lr, 0.002 * 0.5 * (1 + std::cos(M_PI * 0.5)), 1e-12);
}

TEST_F(TrainRecipe, MaeLossIsTheValidationErrorOverTheAgeSpread) {
    TrainOptions o = tiny("mae");
    o.loss = "mae";
    o.l2 = 0.0;
    o.epochs = 2;
    o.weight_decay = 1e-3;
    const TrainResult r = train(o);
    const double scale = r.meta.config.label_scale;
    ASSERT_GT(scale, 1.0);
    for (const EpochStats& s : r.history) {
        ASSERT_TRUE(std::isfinite(s.val_mae));
        EXPECT_NEAR(s.val_loss, s.val_mae / scale, 1e-6 * (1 + s.val_loss));
    }
}

TEST_F(TrainRecipe, FineTuningStartsFromTheGivenModel) {
    TrainOptions first = tiny("first");
    first.epochs = 2;
    const TrainResult a = train(first);
    const LoadedModel start = load_model(a.model_file);

    // A negligible rate keeps the weights where the start model left them, so the fine-tuned
    // model must predict as the start model did, at another input size (the GAP head allows it).
    TrainOptions second = tiny("second");
    second.init_from = a.model_file;
    second.learning_rate = 1e-12;
    second.epochs = 1;
    second.input_size = 48;
    second.augment = false;
    const TrainResult b = train(second);
    const LoadedModel tuned = load_model(b.model_file);
    EXPECT_EQ(tuned.meta.config.label_offset, start.meta.config.label_offset);
    EXPECT_EQ(tuned.meta.config.input_size, 48);
    auto pa = start.net->named_parameters();
    auto pb = tuned.net->named_parameters();
    ASSERT_EQ(pa.size(), pb.size());
    for (const auto& p : pa)
        EXPECT_TRUE(torch::allclose(p.value(), pb[p.key()], 1e-5, 1e-6)) << p.key();

    // A fresh run with the same seed starts elsewhere, so the comparison above can fail.
    TrainOptions fresh = second;
    fresh.init_from.clear();
    fresh.out = *scratch_ / "fresh.bin";
    const LoadedModel other = load_model(train(fresh).model_file);
    EXPECT_FALSE(torch::allclose(pa[0].value(), other.net->named_parameters()[0].value()));

    TrainOptions wrong = second;
    wrong.head = "flatten";
    wrong.out = *scratch_ / "wrong.bin";
    EXPECT_THROW(train(wrong), UsageError);
}

TEST_F(TrainRecipe, Bf16TrainingLearnsAndResumesExactly) {
    TrainOptions o = tiny("bf16");
    o.precision = "bf16";
    o.weights_dtype = "float16";
    const TrainResult a = train(o);
    for (const EpochStats& s : a.history) EXPECT_TRUE(std::isfinite(s.train_loss));
    const LoadedModel m = load_model(a.model_file);
    EXPECT_EQ(m.meta.weights_dtype, "float16");

    TrainOptions broken = tiny("bf16-broken");
    broken.precision = "bf16";
    TrainCallbacks interrupt;
    interrupt.on_epoch_end = [](const EpochStats& s, int) {
        if (s.epoch == 2) throw std::runtime_error("interrupted");
    };
    EXPECT_THROW(train(broken, interrupt), std::runtime_error);
    const TrainResult b = resume_training(run_dir_of(broken));
    ASSERT_EQ(a.history.size(), b.history.size());
    for (std::size_t i = 0; i < a.history.size(); ++i)
        EXPECT_EQ(a.history[i].train_loss, b.history[i].train_loss) << "epoch " << i + 1;
}

}  // namespace
}  // namespace boneage
