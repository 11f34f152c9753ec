// Ensembles: the net, the fast path and the predictor each give the mean of the members'
// months; a combined model file carries its members and their metadata; members that would
// see different images are refused; the CLI writes one.
#include <boneage/error.hpp>
#include <boneage/fast_path.hpp>
#include <boneage/model.hpp>
#include <boneage/predict.hpp>
#include <boneage/preprocess.hpp>
#include <boneage/synth.hpp>

#include "model_support.hpp"
#include "support.hpp"

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>
#include <torch/torch.h>

#include <string>
#include <vector>

using namespace boneage;
namespace fs = std::filesystem;

namespace {

constexpr int kSize = 64;

// A trained-looking member: its batch norms and output drawn at random per seed, so the
// members disagree and each stored parameter shows in the months.
LoadedModel member(const std::string& arch, const std::string& head, bool use_sex,
                   unsigned seed) {
    torch::manual_seed(seed);
    LoadedModel m;
    m.meta.config.arch = arch;
    m.meta.config.head = head;
    m.meta.config.use_sex = use_sex;
    m.meta.config.input_size = kSize;
    m.meta.config.label_offset = 120.0;
    m.meta.config.label_scale = 40.0 + seed;
    m.meta.preprocess.output_size = kSize;
    m.meta.training = {{"seed", seed}};
    m.meta.validation = {{"mae", 10.0 + seed}};
    m.net = make_model(m.meta.config);
    test::randomise_batch_norms(*m.net);
    torch::NoGradGuard no_grad;
    for (auto& p : m.net->named_parameters())
        if (p.key().find("output") != std::string::npos) p.value().normal_(0.0, 0.3);
    m.net->eval();
    return m;
}

torch::Tensor images(int count) {
    torch::manual_seed(9);
    return torch::rand({count, 1, kSize, kSize});
}

const torch::Tensor kSex = torch::tensor({1.0f, 0.0f, 1.0f});

}  // namespace

TEST(Ensemble, TheNetAndTheFastPathGiveTheMeanOfTheMembers) {
    const std::vector<LoadedModel> members = {member("resnet18", "gap", true, 1),
                                              member("shallow", "flatten", false, 2),
                                              member("resnet18", "gap", true, 3)};
    LoadedModel ensemble = combine_models(members);
    EXPECT_EQ(ensemble.net->config().arch, "ensemble");
    EXPECT_TRUE(ensemble.net->config().use_sex);  // two members use it
    EXPECT_EQ(ensemble.net->config().input_size, kSize);
    ASSERT_EQ(ensemble_members(ensemble.net).size(), 3u);

    const torch::Tensor x = images(3);
    torch::Tensor mean = torch::zeros({3});
    std::vector<torch::Tensor> each;
    for (LoadedModel m : members) {
        each.push_back(test::eval_forward(m.net, x, kSex));
        mean += each.back() / 3.0;
    }
    EXPECT_GT((each[0] - each[1]).abs().min().item<double>(), 0.1) << "members must disagree";
    EXPECT_TRUE(torch::allclose(test::eval_forward(ensemble.net, x, kSex), mean, 1e-4, 1e-4));

    FastModel fast(ensemble.net, Precision::Fp32);
    EXPECT_EQ(fast.mode(), "ensemble of 3: fused, fused, fused");
    EXPECT_TRUE(torch::allclose(fast.infer(x, kSex), mean, 1e-3, 1e-3))
        << fast.infer(x, kSex) << mean;
}

TEST(Ensemble, AModelFileCarriesTheMembersAndTheirMetadata) {
    test::ScratchDir dir("ensemble_file");
    LoadedModel ensemble =
        combine_models({member("resnet18", "gap", true, 1), member("resnet18", "gap", true, 2)});
    save_model(dir / "e.bin", ensemble.net, ensemble.meta);
    LoadedModel loaded = load_model(dir / "e.bin");
    EXPECT_EQ(loaded.net->config().arch, "ensemble");
    ASSERT_EQ(loaded.net->config().members.size(), 2u);
    EXPECT_EQ(loaded.net->config().members[1].label_scale, 42.0);
    EXPECT_EQ(loaded.meta.preprocess.output_size, kSize);
    ASSERT_EQ(loaded.meta.training.at("members").size(), 2u);
    EXPECT_EQ(loaded.meta.training["members"][1]["training"]["seed"], 2);
    EXPECT_EQ(loaded.meta.training["members"][1]["validation"]["mae"], 12.0);
    const torch::Tensor x = images(3);
    EXPECT_TRUE(torch::equal(test::eval_forward(loaded.net, x, kSex),
                             test::eval_forward(ensemble.net, x, kSex)));
}

TEST(Ensemble, MembersThatWouldSeeDifferentImagesAreRefused) {
    LoadedModel a = member("shallow", "gap", false, 1);
    LoadedModel b = member("shallow", "gap", false, 2);
    b.meta.preprocess.clahe_clip_limit += 1.0;
    EXPECT_THROW(combine_models({a, b}), UsageError);
    EXPECT_THROW(combine_models({}), UsageError);

    ModelConfig larger = a.net->config();
    larger.input_size = 2 * kSize;
    EXPECT_THROW(ensemble_config({a.net->config(), larger}), UsageError);
    const ModelConfig pair = ensemble_config({a.net->config(), a.net->config()});
    EXPECT_THROW(ensemble_config({pair, a.net->config()}), UsageError);
}

TEST(Ensemble, ThePredictorAveragesTheMembersOnPhantoms) {
    PreprocessSettings settings;
    settings.output_size = kSize;
    std::vector<cv::Mat> kept;
    std::vector<const std::uint8_t*> pixels;
    for (const PhantomLabel& label : phantom_labels(3, 5)) {
        Radiograph r;
        r.pixels = make_phantom(label, 7 + kept.size()).image;
        kept.push_back(preprocess(r, settings).image.clone());
        pixels.push_back(kept.back().ptr<std::uint8_t>());
    }
    const std::vector<bool> male = {true, false, true};
    PredictorOptions o;
    o.precision = Precision::Fp32;
    const std::vector<LoadedModel> members = {member("resnet18", "gap", true, 4),
                                              member("resnet18", "gap", true, 5)};
    std::vector<double> mean(3, 0.0);
    for (const LoadedModel& m : members) {
        Predictor p(m, o);
        const std::vector<double> months = p.predict_preprocessed(pixels, male);
        for (std::size_t i = 0; i < months.size(); ++i) mean[i] += months[i] / 2.0;
    }
    Predictor ensemble(combine_models(members), o);
    const std::vector<double> months = ensemble.predict_preprocessed(pixels, male);
    ASSERT_EQ(months.size(), 3u);
    for (std::size_t i = 0; i < months.size(); ++i) EXPECT_NEAR(months[i], mean[i], 1e-3);
}

TEST(Ensemble, TheCliWritesAnInt8EnsembleAndRefusesAMissingMember) {
    test::ScratchDir dir("ensemble_cli");
    for (unsigned seed : {1u, 2u}) {
        LoadedModel m = member("resnet18", "gap", true, seed);
        save_model(dir / ("m" + std::to_string(seed) + ".bin"), m.net, m.meta);
    }
    const std::string cli = BONEAGE_CLI;
    const std::string m1 = (dir / "m1.bin").string(), m2 = (dir / "m2.bin").string();
    const std::string out = (dir / "e.bin").string();
    std::string log;
    ASSERT_EQ(test::run_command(cli + " ensemble " + m1 + " " + m2 + " --out " + out, &log), 0)
        << log;
    LoadedModel e = load_model(out);
    EXPECT_EQ(e.meta.weights_dtype, "int8");
    EXPECT_EQ(ensemble_members(e.net).size(), 2u);
    // Two int8 members take about half the room of one float32 member.
    EXPECT_LT(fs::file_size(out), fs::file_size(m1) * 6 / 10);

    EXPECT_EQ(test::run_command(cli + " ensemble " + m1 + " " + (dir / "none.bin").string() +
                                    " --out " + (dir / "f.bin").string(),
                                &log),
              2)
        << log;
    EXPECT_FALSE(fs::exists(dir / "f.bin"));
}
