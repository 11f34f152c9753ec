// The paper's three regressors: shapes, parameter counts worked out here from each
// architecture's definition, heads, the sex input and the L2-carrying layer.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <boneage/error.hpp>
#include <boneage/model.hpp>
#include <cstdint>
#include <vector>

#include "model_support.hpp"
#include "models/weights.hpp"

namespace {

using boneage::test::eval_forward;

using boneage::ModelConfig;
using std::int64_t;

// A convolution without bias followed by an affine batch norm (weight and bias per channel).
int64_t conv_bn(int64_t in, int64_t out, int64_t kh, int64_t kw) {
    return in * out * kh * kw + 2 * out;
}
int64_t conv_bn(int64_t in, int64_t out, int64_t k) { return conv_bn(in, out, k, k); }
int64_t dense(int64_t in, int64_t out) { return in * out + out; }

// The dense stack after `features` inputs, the last width feeding the one output.
int64_t dense_stack(int64_t features, const std::vector<int64_t>& widths) {
    int64_t count = 0;
    for (int64_t w : widths) {
        count += dense(features, w);
        features = w;
    }
    return count + dense(features, 1);
}

// ResNet-50 without its classifier on 1 channel. torchvision's resnet50 has 25,557,032
// parameters on 3 channels with a 1000-way fc (2048 x 1000 + 1000 = 2,049,000), so its trunk
// has 23,508,032; conv1 on 1 channel holds 64 x 1 x 7 x 7 instead of 64 x 3 x 7 x 7 weights,
// 6,272 fewer: 23,501,760. The sum over the bottlenecks below must agree.
constexpr int64_t kResNet50Trunk = 25'557'032 - 2'049'000 - 6'272;

int64_t resnet50_trunk() {
    int64_t count = 64 * 1 * 7 * 7 + 2 * 64;  // conv1 (no bias), bn1
    int64_t in = 64;
    const int64_t widths[] = {64, 128, 256, 512}, blocks[] = {3, 4, 6, 3};
    for (int stage = 0; stage < 4; ++stage) {
        const int64_t w = widths[stage];
        for (int64_t b = 0; b < blocks[stage]; ++b) {
            count += conv_bn(in, w, 1) + conv_bn(w, w, 3) + conv_bn(w, 4 * w, 1);
            if (b == 0) count += conv_bn(in, 4 * w, 1);  // downsample
            in = 4 * w;
        }
    }
    return count;
}

// Inception-v4 without its classifier on 1 channel, block by block (arXiv:1602.07261,
// Figures 3-8). On 3 channels with a 1000-way classifier this gives timm's published
// 42,679,816 (checked below).
int64_t inceptionv4_trunk(int64_t in_channels = 1) {
    const int64_t stem = conv_bn(in_channels, 32, 3) + conv_bn(32, 32, 3) + conv_bn(32, 64, 3) +
                         conv_bn(64, 96, 3) /* Mixed_3a */ + conv_bn(160, 64, 1) +
                         conv_bn(64, 96, 3) + conv_bn(160, 64, 1) + conv_bn(64, 64, 1, 7) +
                         conv_bn(64, 64, 7, 1) + conv_bn(64, 96, 3) /* Mixed_4a */ +
                         conv_bn(192, 192, 3) /* Mixed_5a */;
    const int64_t a = conv_bn(384, 96, 1) + conv_bn(384, 64, 1) + conv_bn(64, 96, 3) +
                      conv_bn(384, 64, 1) + conv_bn(64, 96, 3) + conv_bn(96, 96, 3) +
                      conv_bn(384, 96, 1);
    const int64_t ra =
        conv_bn(384, 384, 3) + conv_bn(384, 192, 1) + conv_bn(192, 224, 3) + conv_bn(224, 256, 3);
    const int64_t b = conv_bn(1024, 384, 1) + conv_bn(1024, 192, 1) + conv_bn(192, 224, 1, 7) +
                      conv_bn(224, 256, 7, 1) + conv_bn(1024, 192, 1) + conv_bn(192, 192, 7, 1) +
                      conv_bn(192, 224, 1, 7) + conv_bn(224, 224, 7, 1) + conv_bn(224, 256, 1, 7) +
                      conv_bn(1024, 128, 1);
    const int64_t rb = conv_bn(1024, 192, 1) + conv_bn(192, 192, 3) + conv_bn(1024, 256, 1) +
                       conv_bn(256, 256, 1, 7) + conv_bn(256, 320, 7, 1) + conv_bn(320, 320, 3);
    const int64_t c = conv_bn(1536, 256, 1) + conv_bn(1536, 384, 1) + conv_bn(384, 256, 1, 3) +
                      conv_bn(384, 256, 3, 1) + conv_bn(1536, 384, 1) + conv_bn(384, 448, 3, 1) +
                      conv_bn(448, 512, 1, 3) + conv_bn(512, 256, 1, 3) + conv_bn(512, 256, 3, 1) +
                      conv_bn(1536, 256, 1);
    return stem + 4 * a + ra + 7 * b + rb + 3 * c;
}

// Shallow: four 3x3 convolutions with bias (16, 32, 64, 64 channels), each halving the side.
int64_t shallow_trunk() {
    return (1 * 16 * 9 + 16) + (16 * 32 * 9 + 32) + (32 * 64 * 9 + 64) + (64 * 64 * 9 + 64);
}

constexpr int64_t kSexEmbedding = 16;  // dense 1 -> 16 joined to the features

ModelConfig config(const std::string& arch, const std::string& head = "flatten",
                   bool use_sex = false, int size = 320) {
    ModelConfig c;
    c.arch = arch;
    c.head = head;
    c.use_sex = use_sex;
    c.input_size = size;
    return c;
}

torch::Tensor images(int64_t n, int64_t size, std::uint64_t seed = 1) {
    torch::manual_seed(seed);
    return torch::rand({n, 1, size, size});
}

TEST(ModelCounts, ReferenceFiguresAgreeWithTheBlockSums) {
    EXPECT_EQ(resnet50_trunk(), kResNet50Trunk);
    EXPECT_EQ(inceptionv4_trunk(3) + dense(1536, 1000), 42'679'816);
}

TEST(ShallowModel, BuildsAt320WithOneOutputPerImageAndTheExpectedParameters) {
    auto net = boneage::make_model(config("shallow"));
    EXPECT_EQ(eval_forward(net, images(3, 320), {}).sizes(), (std::vector<int64_t>{3}));
    const int64_t features = 20 * 20 * 64;  // 320 / 2^4 = 20
    EXPECT_EQ(boneage::parameter_count(*net), shallow_trunk() + dense_stack(features, {32, 16}));
}

TEST(ResNet50Model, BuildsAt320WithOneOutputPerImageAndTheExpectedParameters) {
    auto net = boneage::make_model(config("resnet50"));
    EXPECT_EQ(eval_forward(net, images(1, 320), {}).sizes(), (std::vector<int64_t>{1}));
    const int64_t features = 10 * 10 * 2048;  // 320 / 32 = 10
    EXPECT_EQ(boneage::parameter_count(*net),
              kResNet50Trunk + dense_stack(features, {256, 128, 64, 32}));
}

TEST(InceptionV4Model, BuildsAt320WithAn8x8x1536FeatureMapAndTheExpectedParameters) {
    auto net = boneage::make_model(config("inceptionv4"));
    EXPECT_EQ(eval_forward(net, images(1, 320), {}).sizes(), (std::vector<int64_t>{1}));
    // 320 -> 159 -> 157 (stem convs) -> 78 (Mixed_3a) -> 76 (Mixed_4a) -> 37 (Mixed_5a)
    // -> 18 (reduction_a) -> 8 (reduction_b), valid 3x3 windows throughout.
    EXPECT_EQ(boneage::parameter_count(*net), inceptionv4_trunk() + dense(8 * 8 * 1536, 1));
}

TEST(ModelHeads, GapAveragesTheFeatureMapBeforeTheSameDenseStack) {
    auto shallow = boneage::make_model(config("shallow", "gap"));
    EXPECT_EQ(boneage::parameter_count(*shallow), shallow_trunk() + dense_stack(64, {32, 16}));
    EXPECT_EQ(eval_forward(shallow, images(2, 320), {}).sizes(), (std::vector<int64_t>{2}));

    auto resnet = boneage::make_model(config("resnet50", "gap"));
    EXPECT_EQ(boneage::parameter_count(*resnet),
              kResNet50Trunk + dense_stack(2048, {256, 128, 64, 32}));
    EXPECT_EQ(eval_forward(resnet, images(2, 320), {}).sizes(), (std::vector<int64_t>{2}));

    auto inception = boneage::make_model(config("inceptionv4", "gap"));
    EXPECT_EQ(boneage::parameter_count(*inception), inceptionv4_trunk() + dense(1536, 1));
}

TEST(ModelHeads, SexEmbeddingJoinsTheFeatures) {
    auto net = boneage::make_model(config("shallow", "flatten", true));
    EXPECT_EQ(boneage::parameter_count(*net),
              shallow_trunk() + dense(1, kSexEmbedding) +
                  dense_stack(20 * 20 * 64 + kSexEmbedding, {32, 16}));
    auto inception = boneage::make_model(config("inceptionv4", "gap", true));
    EXPECT_EQ(boneage::parameter_count(*inception),
              inceptionv4_trunk() + dense(1, kSexEmbedding) + dense(1536 + kSexEmbedding, 1));
}

TEST(ModelHeads, OutputDependsOnSexOnlyWhenSexIsAnInput) {
    const torch::Tensor x = images(2, 96);
    const torch::Tensor male = torch::ones({2}), female = torch::zeros({2});
    for (const char* arch : {"shallow", "resnet50", "inceptionv4"}) {
        torch::manual_seed(7);
        auto with_sex = boneage::make_model(config(arch, "gap", true, 96));
        const torch::Tensor a = eval_forward(with_sex, x, male),
                            b = eval_forward(with_sex, x, female);
        EXPECT_GT((a - b).abs().max().item<float>(), 1e-6f) << arch;

        auto without = boneage::make_model(config(arch, "gap", false, 96));
        EXPECT_TRUE(torch::equal(eval_forward(without, x, male), eval_forward(without, x, female)))
            << arch;
        EXPECT_TRUE(torch::equal(eval_forward(without, x, male), eval_forward(without, x, {})))
            << arch;
    }
}

TEST(ModelHeads, SexIsRequiredWhenItIsAnInput) {
    auto net = boneage::make_model(config("shallow", "gap", true, 64));
    EXPECT_THROW(eval_forward(net, images(2, 64), {}), c10::Error);
    EXPECT_THROW(eval_forward(net, images(2, 64), torch::ones({3})), c10::Error);
}

TEST(ModelL2, ReturnsExactlyThePapersNamedDenseLayer) {
    auto shallow = boneage::make_model(config("shallow", "flatten", false, 64));
    auto l2 = shallow->l2_weights();
    ASSERT_EQ(l2.size(), 1u);
    EXPECT_TRUE(l2[0].is_same(shallow->named_parameters()["head.dense2.weight"]));
    EXPECT_EQ(l2[0].sizes(), (std::vector<int64_t>{16, 32}));

    auto resnet = boneage::make_model(config("resnet50", "gap", true, 64));
    l2 = resnet->l2_weights();
    ASSERT_EQ(l2.size(), 1u);
    EXPECT_TRUE(l2[0].is_same(resnet->named_parameters()["head.dense4.weight"]));
    EXPECT_EQ(l2[0].sizes(), (std::vector<int64_t>{32, 64}));

    auto inception = boneage::make_model(config("inceptionv4", "gap", false, 96));
    EXPECT_TRUE(inception->l2_weights().empty());  // the paper puts no L2 on it
}

TEST(ModelNames, KeepThePapersBlockNames) {
    auto resnet = boneage::make_model(config("resnet50", "gap", false, 64));
    auto p = resnet->named_parameters();
    for (const char* name : {"conv1.weight", "bn1.weight", "layer1.0.downsample.0.weight",
                             "layer4.2.conv3.weight", "head.dense1.weight", "head.output.bias"})
        EXPECT_TRUE(p.contains(name)) << name;
    EXPECT_FALSE(p.contains("layer1.1.downsample.0.weight"));
    EXPECT_TRUE(resnet->named_buffers().contains("layer3.5.bn2.running_var"));

    auto inception = boneage::make_model(config("inceptionv4", "gap", false, 96));
    p = inception->named_parameters();
    for (const char* name :
         {"Conv2d_1a_3x3.conv.weight", "Mixed_3a.conv.conv.weight", "Mixed_4a.branch1.3.bn.bias",
          "Mixed_5a.conv.conv.weight", "inception_a.3.branch2.2.conv.weight",
          "reduction_a.branch0.conv.weight", "inception_b.6.branch3.conv.weight",
          "reduction_b.branch1.3.conv.weight", "inception_c.2.branch2_1b.conv.weight"})
        EXPECT_TRUE(p.contains(name)) << name;
    EXPECT_EQ(p["Conv2d_1a_3x3.conv.weight"].sizes(), (std::vector<int64_t>{32, 1, 3, 3}));
}

TEST(ModelOutput, IsScaledAndOffsetToMonths) {
    ModelConfig plain = config("shallow", "gap", false, 64);
    ModelConfig scaled = plain;
    scaled.label_offset = 120.0;
    scaled.label_scale = 40.0;
    torch::manual_seed(3);
    auto a = boneage::make_model(plain);
    torch::manual_seed(3);
    auto b = boneage::make_model(scaled);
    const torch::Tensor x = images(4, 64);
    EXPECT_TRUE(
        torch::allclose(eval_forward(b, x, {}), eval_forward(a, x, {}) * 40.0 + 120.0, 1e-5, 1e-4));
}

TEST(ModelFactory, RejectsUnknownArchitecturesHeadsAndTinyInputs) {
    EXPECT_THROW(boneage::make_model(config("vgg16")), boneage::UsageError);
    EXPECT_THROW(boneage::make_model(config("shallow", "attention")), boneage::UsageError);
    EXPECT_THROW(boneage::make_model(config("inceptionv4", "gap", false, 40)), boneage::UsageError);
    EXPECT_THROW(boneage::make_model(config("shallow", "flatten", false, 0)), boneage::UsageError);
}

TEST(ModelInputs, WrongImageSizeIsRejected) {
    auto net = boneage::make_model(config("shallow", "gap", false, 64));
    EXPECT_THROW(eval_forward(net, images(1, 65), {}), c10::Error);
    EXPECT_THROW(eval_forward(net, torch::rand({1, 3, 64, 64}), {}), c10::Error);
}

TEST(ImagesToTensor, MapsBytesToUnitFloatsInImageOrder) {
    const int size = 3;
    std::vector<std::uint8_t> a(size * size), b(size * size);
    for (int i = 0; i < size * size; ++i) {
        a[i] = static_cast<std::uint8_t>(i * 30);
        b[i] = static_cast<std::uint8_t>(255 - i);
    }
    const torch::Tensor t = boneage::images_to_tensor({a.data(), b.data()}, size);
    ASSERT_EQ(t.sizes(), (std::vector<int64_t>{2, 1, 3, 3}));
    EXPECT_EQ(t.scalar_type(), torch::kFloat32);
    EXPECT_FLOAT_EQ(t[0][0][0][0].item<float>(), 0.0f);
    EXPECT_FLOAT_EQ(t[0][0][1][2].item<float>(), 150.0f / 255.0f);  // row 1, column 2: index 5
    EXPECT_FLOAT_EQ(t[1][0][0][0].item<float>(), 1.0f);
    EXPECT_FLOAT_EQ(t[1][0][2][2].item<float>(), 247.0f / 255.0f);
    EXPECT_EQ(boneage::images_to_tensor({}, size).size(0), 0);
}

// One module with one parameter, to set a mismatch up exactly.
struct OneTensor : torch::nn::Module {
    explicit OneTensor(std::vector<int64_t> shape, float value)
        : w(register_parameter("w", torch::full(shape, value))) {}
    torch::Tensor w;
};

TEST(CopyWeights, RefusesAnotherShapeInsteadOfBroadcastingAndLeavesTheTargetWhole) {
    OneTensor from({1}, 7.0f), to({4}, 1.0f);
    try {
        boneage::models::copy_weights(from, to);
        FAIL() << "a [1] tensor was copied into a [4] one";
    } catch (const boneage::UsageError& e) {
        EXPECT_NE(std::string(e.what()).find("w has shape 1, expected 4"), std::string::npos)
            << e.what();
    }
    EXPECT_TRUE(torch::equal(to.w, torch::ones({4})));
}

TEST(CopyWeights, NamesAMissingTensorAndCopiesMatchingNets) {
    torch::nn::Linear a(3, 2), b(3, 2);
    OneTensor stranger({3}, 0.0f);
    try {
        boneage::models::copy_weights(stranger, *b);
        FAIL() << "a net without 'weight' was accepted";
    } catch (const boneage::UsageError& e) {
        EXPECT_NE(std::string(e.what()).find("weight is missing"), std::string::npos) << e.what();
    }
    boneage::models::copy_weights(*a, *b);
    EXPECT_TRUE(torch::equal(a->weight, b->weight));
    EXPECT_TRUE(torch::equal(a->bias, b->bias));
}

}  // namespace
