// The model that ships in models/: it loads, says what it is, fits the size the repository
// allows, and gives a bone age in the valid range for a synthetic hand, from the library and
// from `boneage predict` without --model. (Its accuracy on real radiographs is measured with
// `boneage evaluate` on the development data; see models/MODEL_CARD.md.)
#include <gtest/gtest.h>

#include <boneage/image.hpp>
#include <boneage/predict.hpp>
#include <boneage/synth.hpp>
#include <cmath>
#include <cstdlib>
#include <nlohmann/json.hpp>

#include "support.hpp"

namespace boneage {
namespace {

const std::filesystem::path kBundled = std::filesystem::path(BONEAGE_SOURCE_DIR) / "models" /
                                       "default.bin";

TEST(BundledModel, IsFoundByDefaultAndRecordsWhatItIs) {
    ASSERT_TRUE(std::filesystem::is_regular_file(kBundled)) << kBundled << " is missing";
    EXPECT_LE(std::filesystem::file_size(kBundled), 30u * 1000 * 1000);
    if (const char* env = std::getenv("BONEAGE_MODEL"); env == nullptr || *env == '\0')
        EXPECT_EQ(std::filesystem::canonical(default_model_path()),
                  std::filesystem::canonical(kBundled));

    const LoadedModel m = load_model(kBundled);
    const ModelConfig& c = m.meta.config;
    EXPECT_EQ(c.arch, "ensemble");
    EXPECT_TRUE(c.use_sex);
    EXPECT_EQ(c.input_size, 320);
    EXPECT_EQ(m.meta.weights_dtype, "int8");
    EXPECT_EQ(m.meta.preprocess.output_size, 320);
    EXPECT_TRUE(m.meta.preprocess.crop_hand);
    ASSERT_EQ(c.members.size(), 2u);
    const nlohmann::json& recorded = m.meta.training.at("members");
    ASSERT_EQ(recorded.size(), 2u);
    for (std::size_t i = 0; i < c.members.size(); ++i) {
        EXPECT_EQ(c.members[i].arch, "resnet18");
        EXPECT_EQ(c.members[i].head, "gap");
        EXPECT_TRUE(c.members[i].use_sex);
        // Each member's training summary names its data and says it fine-tuned a pre-trained
        // model.
        const nlohmann::json& training = recorded[i].at("training");
        EXPECT_GT(training.at("train_cache").at("count").get<int>(), 500);
        EXPECT_TRUE(training.at("init_from").is_string());
        EXPECT_GT(recorded[i].at("validation").value("n", 0), 100);
    }
}

TEST(BundledModel, PredictsASyntheticHandWithinTheValidRange) {
    test::ScratchDir dir("bundled");
    SynthOptions o;
    o.width = 1200;
    o.height = 1500;
    const Phantom young = make_phantom(PhantomLabel{"1", 36.0, false}, 5, o);
    const Phantom old = make_phantom(PhantomLabel{"2", 180.0, true}, 6, o);
    write_image(dir / "young.png", young.image);
    write_image(dir / "old.png", old.image);

    Predictor p(load_model(kBundled));
    PredictRequest girl;
    girl.male = false;
    const std::vector<Prediction> out = p.predict_files({dir / "young.png", dir / "old.png"}, girl);
    ASSERT_EQ(out.size(), 2u);
    for (const Prediction& r : out) {
        ASSERT_TRUE(r.ok()) << r.message;
        EXPECT_TRUE(std::isfinite(r.raw_months));
        EXPECT_GE(r.bone_age_months, kMinBoneAgeMonths);
        EXPECT_LE(r.bone_age_months, kMaxBoneAgeMonths);
    }
    // The same image alone gives the same answer, to rounding (bf16 kernels may block a
    // batch of one differently from a batch of two).
    EXPECT_NEAR(p.predict_files({dir / "young.png"}, girl).at(0).raw_months, out[0].raw_months,
                0.05);

    // The command line uses the bundled model when no --model is given.
    std::string json;
    const std::string cmd = std::string("env -u BONEAGE_MODEL ") + BONEAGE_CLI +
                            " predict --format json --sex female " + (dir / "young.png").string();
    ASSERT_EQ(test::run_command(cmd, &json), 0) << json;
    const nlohmann::json j = nlohmann::json::parse(json.substr(json.find('[')));
    const nlohmann::json& first = j.at(0);
    EXPECT_EQ(first.at("status"), "ok");
    EXPECT_NEAR(first.at("bone_age_months").get<double>(), out[0].bone_age_months, 0.5);
}

}  // namespace
}  // namespace boneage
