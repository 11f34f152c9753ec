// Prediction precision: the Predictor runs through the fast path, fp32 equals the network's own
// forward, bf16 stays near fp32, and the CLI takes --precision and records the one it used.
#include <boneage/evaluate.hpp>
#include <boneage/fast_path.hpp>
#include <boneage/model.hpp>
#include <boneage/predict.hpp>
#include <boneage/preprocess.hpp>
#include <boneage/synth.hpp>
#include <boneage/augment.hpp>

#include "support.hpp"

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>
#include <torch/torch.h>

#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

namespace fs = std::filesystem;
using namespace boneage;

namespace {

const std::string kCli = BONEAGE_CLI;

// Runs the CLI with its stderr dropped, so that the output is stdout alone.
int run_stdout(const std::string& args, std::string* out) {
    return test::run_command("{ " + kCli + " " + args + " 2>/dev/null; }", out);
}

// Preprocessed phantoms of ages spread over childhood, both sexes, `size` px.
struct Phantoms {
    std::vector<cv::Mat> images;
    std::vector<bool> male;
    std::vector<double> age_months;

    std::vector<const std::uint8_t*> pixels() const {
        std::vector<const std::uint8_t*> out;
        for (const cv::Mat& m : images) out.push_back(m.data);
        return out;
    }
};

Phantoms preprocessed_phantoms(int count, int size) {
    PreprocessSettings settings;
    settings.output_size = size;
    Phantoms out;
    for (const PhantomLabel& label : phantom_labels(count, 17)) {
        Radiograph r;
        r.pixels = make_phantom(label, 5 + out.images.size()).image;
        out.images.push_back(preprocess(r, settings).image.clone());
        out.male.push_back(label.male);
        out.age_months.push_back(label.age_months);
    }
    return out;
}

// A fresh model with batch norm statistics and shifts drawn at random, so that folding them has
// work to do and gets caught doing it wrongly; `label_scale` sets how far its answers spread.
LoadedModel random_model(const std::string& arch, int input_size, int image_size, bool use_sex,
                         double label_scale) {
    torch::manual_seed(7);
    LoadedModel m;
    m.meta.config.arch = arch;
    m.meta.config.input_size = input_size;
    m.meta.config.use_sex = use_sex;
    m.meta.config.label_offset = 120.0;
    m.meta.config.label_scale = label_scale;
    m.meta.preprocess.output_size = image_size;
    m.net = make_model(m.meta.config);
    torch::NoGradGuard no_grad;
    for (auto& module : m.net->modules(false))
        if (auto* bn = module->as<torch::nn::BatchNorm2d>()) {
            bn->running_mean.uniform_(-0.1, 0.1);
            bn->running_var.uniform_(0.5, 2.0);
            bn->weight.uniform_(0.5, 1.5);
            bn->bias.uniform_(-0.2, 0.2);
        }
    return m;
}

// The network's own forward in evaluation mode, after the resize prediction applies.
std::vector<double> reference(const BoneAgeNet& net, const Phantoms& p, int image_size,
                              const std::vector<float>& sex) {
    torch::NoGradGuard no_grad;
    net->eval();
    torch::Tensor x = resize_batch(images_to_tensor(p.pixels(), image_size),
                                   net->config().input_size);
    torch::Tensor y = net->forward(x, torch::tensor(sex)).reshape({-1}).to(torch::kFloat64);
    return std::vector<double>(y.data_ptr<double>(), y.data_ptr<double>() + y.numel());
}

std::vector<float> as_floats(const std::vector<bool>& male) {
    std::vector<float> out;
    for (bool m : male) out.push_back(m ? 1.0f : 0.0f);
    return out;
}

// A few Adam steps of the regression head towards the phantoms' ages, in evaluation mode, so
// that the answers differ by what the features see in each input, as a trained model's do,
// rather than by a blown-up output scale. Only the head learns: the backward pass stays cheap.
// Returns the net's answers afterwards.
std::vector<double> fit_to_ages(LoadedModel& m, const Phantoms& p, int steps) {
    const ModelConfig& c = m.meta.config;
    torch::Tensor x = resize_batch(images_to_tensor(p.pixels(), m.meta.preprocess.output_size),
                                   c.input_size);
    torch::Tensor sex = torch::tensor(as_floats(p.male));
    torch::Tensor target = (torch::tensor(p.age_months, torch::kFloat32) - c.label_offset) /
                           c.label_scale;
    m.net->eval();
    std::vector<torch::Tensor> head;
    for (auto& named : m.net->named_parameters()) {
        const bool in_head = named.key().rfind("head.", 0) == 0;
        named.value().set_requires_grad(in_head);
        if (in_head) head.push_back(named.value());
    }
    torch::optim::Adam adam(head, torch::optim::AdamOptions(1e-2));
    for (int step = 0; step < steps; ++step) {
        adam.zero_grad();
        torch::Tensor y = (m.net->forward(x, sex).reshape({-1}) - c.label_offset) / c.label_scale;
        torch::mse_loss(y, target).backward();
        adam.step();
    }
    return reference(m.net, p, m.meta.preprocess.output_size, as_floats(p.male));
}

double max_abs_difference(const std::vector<double>& a, const std::vector<double>& b) {
    EXPECT_EQ(a.size(), b.size());
    double worst = 0.0;
    for (std::size_t i = 0; i < std::min(a.size(), b.size()); ++i)
        worst = std::max(worst, std::abs(a[i] - b[i]));
    return worst;
}

double spread(const std::vector<double>& v) {
    auto [lo, hi] = std::minmax_element(v.begin(), v.end());
    return *hi - *lo;
}

class PredictPrecision : public ::testing::Test {
protected:
    void SetUp() override { torch::set_num_threads(2); }
};

}  // namespace

TEST_F(PredictPrecision, Fp32EqualsTheNetsOwnForwardWithSexGivenOrAveraged) {
    const int size = 96;
    Phantoms p = preprocessed_phantoms(5, size);
    LoadedModel m = random_model("shallow", size, size, /*use_sex=*/true, 40.0);
    std::vector<double> expected = fit_to_ages(m, p, 10);
    ASSERT_GT(spread(expected), 20.0) << "the model must answer differently for each input";
    PredictorOptions options;
    options.precision = Precision::Fp32;
    options.batch = 2;  // several forward passes, the last one short
    Predictor predictor(m, options);
    EXPECT_EQ(predictor.precision(), Precision::Fp32);
    EXPECT_LT(max_abs_difference(predictor.predict_preprocessed(p.pixels(), p.male), expected),
              1e-3);

    // Sex unknown: the mean of the net's own male and female answers.
    std::vector<double> as_male = reference(m.net, p, size, std::vector<float>(5, 1.0f));
    std::vector<double> as_female = reference(m.net, p, size, std::vector<float>(5, 0.0f));
    std::vector<double> mean;
    for (std::size_t i = 0; i < as_male.size(); ++i) mean.push_back(0.5 * (as_male[i] + as_female[i]));
    EXPECT_GT(max_abs_difference(as_male, as_female), 1e-2) << "sex must change the answer";
    EXPECT_LT(max_abs_difference(predictor.predict_preprocessed(p.pixels()), mean), 1e-3);
}

TEST_F(PredictPrecision, Fp32EqualsTheNetsOwnForwardWhenImagesAreResized) {
    // ResNet-50 runs the fused trunk, whose batch norms are folded into its own copy.
    Phantoms p = preprocessed_phantoms(3, 96);
    LoadedModel m = random_model("resnet50", 64, 96, /*use_sex=*/false, 400.0);
    PredictorOptions options;
    options.precision = Precision::Fp32;
    Predictor predictor(m, options);
    ASSERT_EQ(predictor.image_size(), 96);
    ASSERT_EQ(predictor.input_size(), 64);
    std::vector<double> expected = reference(m.net, p, 96, std::vector<float>(3, 0.0f));
    ASSERT_GT(spread(expected), 1.0) << "the model must answer differently for each input";
    EXPECT_LT(max_abs_difference(predictor.predict_preprocessed(p.pixels()), expected), 1e-3);
    // The loaded net keeps its batch norms.
    for (auto& module : m.net->modules(false))
        if (auto* bn = module->as<torch::nn::BatchNorm2d>())
            ASSERT_GT(bn->running_mean.abs().max().item<double>(), 0.0);
}

TEST_F(PredictPrecision, Bf16StaysWithinAQuarterMonthOfFp32) {
    // Without native bf16 the CPU emulates it: slow, hence few small images.
    const int size = 96;
    Phantoms p = preprocessed_phantoms(6, size);
    LoadedModel m = random_model("shallow", size, size, /*use_sex=*/true, 40.0);
    fit_to_ages(m, p, 10);
    PredictorOptions fp32_options, bf16_options;
    fp32_options.precision = Precision::Fp32;
    bf16_options.precision = Precision::Bf16;
    Predictor fp32(m, fp32_options), bf16(m, bf16_options);
    EXPECT_EQ(bf16.precision(), Precision::Bf16);
    std::vector<double> a = fp32.predict_preprocessed(p.pixels(), p.male);
    std::vector<double> b = bf16.predict_preprocessed(p.pixels(), p.male);
    ASSERT_EQ(a.size(), b.size());
    ASSERT_GT(spread(a), 20.0) << "outputs must spread over tens of months";
    double mad = 0.0;
    for (std::size_t i = 0; i < a.size(); ++i) mad += std::abs(a[i] - b[i]) / a.size();
    RecordProperty("bf16_mad_months", std::to_string(mad));
    EXPECT_GT(mad, 0.0) << "bf16 must really run in bf16";
    EXPECT_LT(mad, 0.25);
}

TEST_F(PredictPrecision, AutoResolvesAsTheFastPathDoesAndResultsSayWhichRan) {
    test::ScratchDir dir("predict-precision-auto");
    auto phantoms = write_phantom_set(dir.path(), 1, 3);
    LoadedModel m = random_model("shallow", 64, 64, false, 40.0);
    Predictor predictor(m);
    EXPECT_EQ(predictor.precision(), resolve(Precision::Auto));
    Prediction ok = predictor.predict_files({dir / (phantoms[0].label.id + ".png")}).front();
    ASSERT_TRUE(ok.ok()) << ok.message;
    EXPECT_EQ(ok.precision, to_string(resolve(Precision::Auto)));
    Prediction failed = predictor.predict_files({dir / "missing.png"}).front();
    EXPECT_TRUE(nlohmann::json(failed)["precision"].is_null());
}

TEST(PredictPrecisionCli, BadPrecisionIsAUsageError) {
    for (const std::string sub : {"predict", "evaluate"}) {
        SCOPED_TRACE(sub);
        std::string out;
        const std::string input = sub == "predict" ? " x.png" : "";
        int rc = test::run_command(kCli + " " + sub + " --precision bogus" + input + " 2>&1", &out);
        EXPECT_EQ(rc, 2) << out;
        EXPECT_NE(out.find("precision"), std::string::npos) << out;
        EXPECT_NE(out.find("bogus"), std::string::npos) << out;
    }
}

TEST(PredictPrecisionCli, JsonRecordsThePrecisionUsed) {
    test::ScratchDir dir("predict-precision-cli");
    auto phantoms = write_phantom_set(dir.path(), 2, 9);
    LoadedModel m = random_model("shallow", 64, 64, false, 40.0);
    save_model(dir / "m.bin", m.net, m.meta);
    const std::string model = "'" + (dir / "m.bin").string() + "'";
    const std::string image = "'" + (dir / (phantoms[0].label.id + ".png")).string() + "'";
    for (const std::string precision : {"fp32", "bf16"}) {
        SCOPED_TRACE(precision);
        std::string out;
        int rc = run_stdout("predict --format json --precision " + precision + " --model " +
                                model + " " + image,
                            &out);
        ASSERT_EQ(rc, 0) << out;
        nlohmann::json j = nlohmann::json::parse(out);
        ASSERT_TRUE(j.is_array());
        EXPECT_EQ(j[0]["precision"], precision);
        EXPECT_TRUE(j[0]["bone_age_months"].is_number());
    }
    std::string out;
    int rc = run_stdout("evaluate --format json --precision fp32 --model " + model + " --images '" +
                            dir.path().string() + "' --labels '" + (dir / "labels.csv").string() +
                            "'",
                        &out);
    ASSERT_EQ(rc, 0) << out;
    nlohmann::json j = nlohmann::json::parse(out);
    EXPECT_EQ(j["precision"], "fp32");
    EXPECT_EQ(j["n"], 2);
}
