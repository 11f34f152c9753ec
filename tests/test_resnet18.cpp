// ResNet-18, the compact trunk of the bundled model: its parameters worked out here from the
// architecture's definition, torchvision's names, He initialisation, a head whose output
// starts at zero, and the fast path against the net's own forward.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <boneage/cpu_features.hpp>
#include <boneage/error.hpp>
#include <boneage/fast_path.hpp>
#include <boneage/model.hpp>
#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include "model_support.hpp"

namespace {

using boneage::test::eval_forward;

using boneage::ModelConfig;
using std::int64_t;

// A convolution without bias followed by an affine batch norm (weight and bias per channel).
int64_t conv_bn(int64_t in, int64_t out, int64_t k) { return in * out * k * k + 2 * out; }
int64_t dense(int64_t in, int64_t out) { return in * out + out; }

// ResNet-18 without its classifier on 1 channel, block by block: a 7x7 stem, then basic
// blocks (two 3x3 convolutions) 2-2-2-2, a 1x1 downsample where the width or stride changes.
int64_t resnet18_trunk() {
    int64_t count = conv_bn(1, 64, 7);
    int64_t in = 64;
    const int64_t widths[] = {64, 128, 256, 512};
    for (int stage = 0; stage < 4; ++stage) {
        const int64_t w = widths[stage];
        for (int b = 0; b < 2; ++b) {
            count += conv_bn(in, w, 3) + conv_bn(w, w, 3);
            if (b == 0 && (stage > 0 || in != w)) count += conv_bn(in, w, 1);
            in = w;
        }
    }
    return count;
}

// torchvision's resnet18 has 11,689,512 parameters on 3 channels with a 1000-way fc
// (512 x 1000 + 1000); conv1 on 1 channel holds 2 x 64 x 7 x 7 = 6,272 fewer weights.
constexpr int64_t kResNet18Trunk = 11'689'512 - 513'000 - 6'272;

ModelConfig config(const std::string& head, bool use_sex, int size) {
    ModelConfig c;
    c.arch = "resnet18";
    c.head = head;
    c.use_sex = use_sex;
    c.input_size = size;
    c.label_offset = 127.0;
    c.label_scale = 41.0;
    return c;
}

// Batch norm statistics and an output layer drawn at random, so the head contributes and a
// wrong batch-norm folding shows.
void randomise(boneage::BoneAgeNet& net) {
    boneage::test::randomise_batch_norms(*net);
    torch::NoGradGuard no_grad;
    auto p = net->named_parameters();
    p["head.output.weight"].normal_(0.0, 0.1);
    p["head.output.bias"].fill_(0.05);
}

TEST(ResNet18Model, TrunkCountAgreesWithTorchvisionsFigure) {
    EXPECT_EQ(resnet18_trunk(), kResNet18Trunk);
}

TEST(ResNet18Model, GapHeadWithSexAt320HasTheExpectedParametersAndOneOutputPerImage) {
    auto net = boneage::make_model(config("gap", true, 320));
    const int64_t head = dense(1, 16) + dense(512 + 16, 256) + dense(256, 1);
    EXPECT_EQ(boneage::parameter_count(*net), resnet18_trunk() + head);
    torch::manual_seed(1);
    const torch::Tensor y =
        eval_forward(net, torch::rand({2, 1, 320, 320}), torch::tensor({1.0f, 0.0f}));
    EXPECT_EQ(y.sizes(), (std::vector<int64_t>{2}));
}

TEST(ResNet18Model, FlattenHeadTakesTheWholeFeatureMap) {
    // 128 -> 64 (stem) -> 32 (max pool) -> 32, 16, 8, 4 over the four stages.
    auto net = boneage::make_model(config("flatten", false, 128));
    EXPECT_EQ(boneage::parameter_count(*net),
              resnet18_trunk() + dense(4 * 4 * 512, 256) + dense(256, 1));
    torch::manual_seed(2);
    EXPECT_EQ(eval_forward(net, torch::rand({3, 1, 128, 128}), {}).sizes(),
              (std::vector<int64_t>{3}));
    // Padded windows never empty the map: 16 -> 8 -> 4 -> 4, 2, 1, 1.
    auto tiny = boneage::make_model(config("flatten", false, 16));
    EXPECT_EQ(boneage::parameter_count(*tiny),
              resnet18_trunk() + dense(1 * 1 * 512, 256) + dense(256, 1));
}

TEST(ResNet18Model, KeepsTorchvisionsNames) {
    auto net = boneage::make_model(config("gap", true, 64));
    auto p = net->named_parameters();
    for (const char* name :
         {"conv1.weight", "bn1.bias", "layer1.0.conv1.weight", "layer1.1.bn2.weight",
          "layer2.0.downsample.0.weight", "layer2.0.downsample.1.bias", "layer4.1.conv2.weight",
          "head.sex_embedding.weight", "head.dense1.weight", "head.output.bias"})
        EXPECT_TRUE(p.contains(name)) << name;
    for (const char* name :
         {"layer1.0.downsample.0.weight", "layer2.1.downsample.0.weight", "layer1.0.conv3.weight",
          "layer5.0.conv1.weight", "head.dense2.weight"})
        EXPECT_FALSE(p.contains(name)) << name;
    EXPECT_EQ(p["conv1.weight"].sizes(), (std::vector<int64_t>{64, 1, 7, 7}));
    EXPECT_EQ(p["layer3.0.conv1.weight"].sizes(), (std::vector<int64_t>{256, 128, 3, 3}));
    EXPECT_EQ(p["layer3.0.downsample.0.weight"].sizes(), (std::vector<int64_t>{256, 128, 1, 1}));
    EXPECT_TRUE(net->named_buffers().contains("layer4.1.bn1.running_var"));
}

TEST(ResNet18Model, StridesOnTheFirstConvolutionOfAStage) {
    auto net = boneage::make_model(config("gap", false, 64));
    for (auto& item : net->named_modules()) {
        auto* conv = item.value()->as<torch::nn::Conv2d>();
        if (!conv) continue;
        const std::string& name = item.key();
        const bool strided =
            name == "conv1" || name == "layer2.0.conv1" || name == "layer3.0.conv1" ||
            name == "layer4.0.conv1" ||
            (name.find(".0.downsample.0") != std::string::npos && name.rfind("layer1", 0) != 0);
        EXPECT_EQ(conv->options.stride()->at(0), strided ? 2 : 1) << name;
    }
}

TEST(ResNet18Model, HeInitialisedWithAnOutputThatStartsAtZero) {
    torch::manual_seed(4);
    auto net = boneage::make_model(config("gap", true, 64));
    auto p = net->named_parameters();
    // kaiming_normal_ fan-out for ReLU: std = sqrt(2 / (out x 3 x 3)).
    const double expected = std::sqrt(2.0 / (512 * 9));
    EXPECT_NEAR(p["layer4.1.conv2.weight"].std().item<double>(), expected, 0.02 * expected);
    EXPECT_EQ(p["layer4.1.bn2.weight"].min().item<double>(), 1.0);
    EXPECT_EQ(p["head.output.weight"].abs().max().item<double>(), 0.0);
    EXPECT_EQ(p["head.output.bias"].abs().max().item<double>(), 0.0);
    EXPECT_GT(p["head.dense1.weight"].abs().max().item<double>(), 0.0);
    // A fresh net predicts exactly the label offset, the training mean.
    torch::manual_seed(5);
    const torch::Tensor y =
        eval_forward(net, torch::rand({3, 1, 64, 64}), torch::tensor({1.f, 0.f, 1.f}));
    EXPECT_TRUE(torch::equal(y, torch::full({3}, 127.0f)));

    // The paper's ResNet-50 keeps its default output initialisation.
    ModelConfig c50 = config("gap", false, 64);
    c50.arch = "resnet50";
    auto resnet50 = boneage::make_model(c50);
    EXPECT_GT(resnet50->named_parameters()["head.output.weight"].abs().max().item<double>(), 0.0);
}

TEST(ResNet18Model, HeadHasDropoutAndNoL2Layer) {
    auto net = boneage::make_model(config("gap", false, 64));
    EXPECT_TRUE(net->l2_weights().empty());
    bool found = false;
    for (auto& item : net->named_modules()) {
        if (auto* dropout = item.value()->as<torch::nn::Dropout>()) {
            EXPECT_EQ(item.key(), "head.dropout");
            EXPECT_DOUBLE_EQ(dropout->options.p(), 0.2);
            found = true;
        }
    }
    EXPECT_TRUE(found);
}

TEST(ResNet18Model, OutputDependsOnSexOnlyWhenSexIsAnInput) {
    for (bool use_sex : {false, true}) {
        torch::manual_seed(6);
        auto net = boneage::make_model(config("gap", use_sex, 64));
        randomise(net);
        torch::manual_seed(7);
        const torch::Tensor x = torch::rand({2, 1, 64, 64});
        const torch::Tensor male = eval_forward(net, x, torch::ones({2}));
        const torch::Tensor female = eval_forward(net, x, torch::zeros({2}));
        EXPECT_EQ(torch::equal(male, female), !use_sex) << "use_sex " << use_sex;
    }
}

TEST(ResNet18FastPath, MatchesTheNetsOwnForwardInFp32) {
    torch::manual_seed(8);
    torch::Tensor images = torch::rand({3, 1, 128, 128});
    const torch::Tensor sex = torch::tensor({1.0f, 0.0f, 1.0f});
    for (const std::string head : {"gap", "flatten"}) {
        SCOPED_TRACE(head);
        torch::manual_seed(9);
        auto net = boneage::make_model(config(head, true, 128));
        randomise(net);
        const torch::Tensor expected = eval_forward(net, images, sex);
        EXPECT_GT((expected - 127.0).abs().min().item<double>(), 1e-2)
            << "the output layer must contribute";
        boneage::FastModel fast(net, boneage::Precision::Fp32);
        EXPECT_EQ(fast.mode(), "fused");
        const torch::Tensor got = fast.infer(images, sex);
        ASSERT_EQ(got.sizes(), expected.sizes());
        EXPECT_LT((got - expected).abs().max().item<double>(), 1e-3) << got << expected;
        // The net given to FastModel is left as it was.
        EXPECT_TRUE(torch::equal(eval_forward(net, images, sex), expected));
    }
}

TEST(ResNet18FastPath, Bf16StaysWithinAQuarterMonthOfFp32) {
    if (!boneage::native_bf16())
        GTEST_SKIP() << "this CPU has no native bf16 (" << boneage::cpu_description() << ")";
    torch::manual_seed(10);
    torch::Tensor images = torch::rand({4, 1, 128, 128});
    const torch::Tensor sex = torch::tensor({1.0f, 0.0f, 1.0f, 0.0f});
    auto net = boneage::make_model(config("gap", true, 128));
    randomise(net);
    const torch::Tensor fp32 = boneage::FastModel(net, boneage::Precision::Fp32).infer(images, sex);
    const torch::Tensor bf16 = boneage::FastModel(net, boneage::Precision::Bf16).infer(images, sex);
    const double mad = (bf16 - fp32).abs().mean().item<double>();
    RecordProperty("bf16_mad_months", std::to_string(mad));
    EXPECT_LT(mad, 0.25) << "fp32 " << fp32 << " bf16 " << bf16;
}

}  // namespace
