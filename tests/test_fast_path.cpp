// The inference fast path: precision names, CPU features, batch norm folding, and the fused
// and module paths against each architecture's own forward on preprocessed phantoms.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <boneage/cpu_features.hpp>
#include <boneage/error.hpp>
#include <boneage/fast_path.hpp>
#include <boneage/model.hpp>
#include <boneage/parallel.hpp>
#include <boneage/preprocess.hpp>
#include <boneage/synth.hpp>

#include <limits>
#include <string>
#include <vector>

#include "model_support.hpp"
#include "kernels/gemv.hpp"
#include "kernels/residual.hpp"

namespace {

using boneage::FastModel;
using boneage::Precision;

// Preprocessed phantoms of several ages and both sexes, as the network's input tensor.
struct Batch {
    torch::Tensor images, sex;
};

Batch phantom_batch(int count, int size) {
    boneage::PreprocessSettings settings;
    settings.output_size = size;
    std::vector<cv::Mat> prepared;
    std::vector<float> sex;
    for (const auto& label : boneage::phantom_labels(count, 7)) {
        boneage::Phantom p = boneage::make_phantom(label, 11 + prepared.size());
        boneage::Radiograph r;
        r.pixels = p.image;
        prepared.push_back(boneage::preprocess(r, settings).image.clone());
        sex.push_back(label.male ? 1.0f : 0.0f);
    }
    std::vector<const std::uint8_t*> pixels;
    for (const auto& m : prepared) pixels.push_back(m.data);
    return {boneage::images_to_tensor(pixels, size), torch::tensor(sex)};
}

torch::Tensor reference(const boneage::BoneAgeNet& net, const Batch& b) {
    torch::NoGradGuard no_grad;
    return net->forward(b.images, b.sex);
}

// A fresh model with outputs near 120 months (label offset 120, scale 40, as training sets
// them), and batch norm statistics and shifts drawn at random so that folding has something
// to fold and gets caught when it folds them wrongly.
boneage::BoneAgeNet realistic_model(const std::string& arch, int size, bool use_sex) {
    torch::manual_seed(3);
    boneage::ModelConfig c;
    c.arch = arch;
    c.input_size = size;
    c.use_sex = use_sex;
    c.label_offset = 120.0;
    c.label_scale = 40.0;
    boneage::BoneAgeNet net = boneage::make_model(c);
    boneage::test::randomise_batch_norms(*net);
    net->eval();
    return net;
}

class FastPathTest : public ::testing::Test {
protected:
    void SetUp() override { torch::set_num_threads(boneage::default_thread_count()); }
};

TEST(Precision, ParsesTheThreeNamesAndRejectsOthers) {
    EXPECT_EQ(boneage::parse_precision("auto"), Precision::Auto);
    EXPECT_EQ(boneage::parse_precision("fp32"), Precision::Fp32);
    EXPECT_EQ(boneage::parse_precision("bf16"), Precision::Bf16);
    EXPECT_THROW(boneage::parse_precision("fp16"), boneage::UsageError);
    EXPECT_THROW(boneage::parse_precision("BF16"), boneage::UsageError);
    EXPECT_STREQ(boneage::to_string(Precision::Bf16), "bf16");
}

TEST(Precision, AutoPicksBf16ExactlyWhereTheCpuHasItNatively) {
    EXPECT_EQ(boneage::resolve(Precision::Auto),
              boneage::native_bf16() ? Precision::Bf16 : Precision::Fp32);
    EXPECT_EQ(boneage::resolve(Precision::Fp32), Precision::Fp32);
    EXPECT_EQ(boneage::resolve(Precision::Bf16), Precision::Bf16);
    EXPECT_EQ(boneage::native_bf16(), boneage::has_avx512_bf16() || boneage::has_amx_bf16());
    if (boneage::has_avx512_bf16()) EXPECT_TRUE(boneage::cpu_features().avx512f);
    EXPECT_NE(boneage::cpu_description().find("threads"), std::string::npos);
}

TEST_F(FastPathTest, FoldingEveryBatchNormKeepsResNetOutputs) {
    Batch b = phantom_batch(3, 64);
    boneage::BoneAgeNet net = realistic_model("resnet50", 64, false);
    boneage::BoneAgeNet folded = realistic_model("resnet50", 64, false);
    // stem + 16 bottlenecks x 3 + 4 downsamples
    EXPECT_EQ(boneage::fold_batchnorm(*folded), 53);
    for (auto& m : folded->modules(false))
        if (auto* bn = m->as<torch::nn::BatchNorm2d>())
            EXPECT_EQ(bn->running_mean.abs().max().item<double>(), 0.0);
    torch::Tensor before = reference(net, b), after = reference(folded, b);
    EXPECT_GT((before - 120.0).abs().min().item<double>(), 1e-3) << "the head must contribute";
    EXPECT_LT((before - after).abs().max().item<double>(), 1e-3);
}

TEST_F(FastPathTest, FusedAndModulePathsInFp32MatchTheNetsOwnForward) {
    struct Case {
        std::string arch;
        int size;
        bool use_sex;
        std::string mode;
    };
    for (const Case& c : {Case{"shallow", 128, true, "fused"}, Case{"resnet50", 128, false, "fused"},
                          Case{"inceptionv4", 160, true, "module"}}) {
        SCOPED_TRACE(c.arch);
        Batch b = phantom_batch(3, c.size);
        boneage::BoneAgeNet net = realistic_model(c.arch, c.size, c.use_sex);
        torch::Tensor expected = reference(net, b);
        FastModel fast(net, Precision::Fp32);
        EXPECT_EQ(fast.mode(), c.mode);
        EXPECT_EQ(fast.precision(), Precision::Fp32);
        torch::Tensor got = fast.infer(b.images, b.sex);
        ASSERT_EQ(got.sizes(), expected.sizes());
        EXPECT_EQ(got.scalar_type(), torch::kFloat32);
        EXPECT_LT((got - expected).abs().max().item<double>(), 1e-3);
        // The net given to FastModel is left as it was.
        EXPECT_LT((reference(net, b) - expected).abs().max().item<double>(), 1e-6);
    }
}

TEST_F(FastPathTest, Bf16StaysWithinAQuarterMonthOfFp32) {
    if (!boneage::native_bf16())
        GTEST_SKIP() << "this CPU has no native bf16 (" << boneage::cpu_description() << ")";
    for (const std::string arch : {"shallow", "resnet50", "inceptionv4"}) {
        SCOPED_TRACE(arch);
        const int size = arch == "inceptionv4" ? 160 : 128;
        Batch b = phantom_batch(4, size);
        boneage::BoneAgeNet net = realistic_model(arch, size, arch != "resnet50");
        torch::Tensor fp32 = FastModel(net, Precision::Fp32).infer(b.images, b.sex);
        FastModel fast(net, Precision::Bf16);
        torch::Tensor bf16 = fast.infer(b.images, b.sex);
        EXPECT_EQ(bf16.scalar_type(), torch::kFloat32);
        const double mad = (bf16 - fp32).abs().mean().item<double>();
        RecordProperty(arch + "_bf16_mad_months", std::to_string(mad));
        EXPECT_LT(mad, 0.25) << "fp32 " << fp32 << " bf16 " << bf16;
        // One image at a time: ResNet-50's flatten head (32 MB in fp32 at this size) then
        // runs its first dense layer on bf16 weights.
        std::vector<torch::Tensor> single;
        for (std::int64_t i = 0; i < b.images.size(0); ++i)
            single.push_back(fast.infer(b.images.narrow(0, i, 1), b.sex.narrow(0, i, 1)));
        const double single_mad = (torch::cat(single) - fp32).abs().mean().item<double>();
        RecordProperty(arch + "_bf16_single_mad_months", std::to_string(single_mad));
        EXPECT_LT(single_mad, 0.25) << "fp32 " << fp32 << " bf16 one by one " << torch::cat(single);
    }
}

// w x + b in double from the same (rounded) values, against the kernel's fp32 result.
void expect_exact_product(torch::ScalarType dtype) {
    torch::manual_seed(5);
    // An odd length leaves a tail after the last full step of the vector loop.
    const std::int64_t rows = 37, k = 20011;
    torch::Tensor w = torch::randn({rows, k}).to(dtype);
    torch::Tensor x = torch::randn({k}).to(dtype);
    torch::Tensor b = torch::randn({rows});
    torch::Tensor exact = torch::addmv(b.to(torch::kFloat64), w.to(torch::kFloat64), x.to(torch::kFloat64));
    torch::Tensor got = boneage::fast::gemv(w, x, b);
    ASSERT_EQ(got.scalar_type(), torch::kFloat32);
    ASSERT_EQ(got.size(0), rows);
    // Sums of 20,011 terms of size ~1 (spread ~140) in fp32: errors of order 1e-4.
    const double worst = (got.to(torch::kFloat64) - exact).abs().max().item<double>();
    ::testing::Test::RecordProperty("worst_abs_error", std::to_string(worst));
    EXPECT_LT(worst, 1e-2) << worst;
    EXPECT_THROW(boneage::fast::gemv(w, x.narrow(0, 0, k - 1), b), c10::Error);
    EXPECT_THROW(boneage::fast::gemv(w, x, b.narrow(0, 0, rows - 1)), c10::Error);
}

TEST(Gemv, Fp32MatchesTheExactProduct) {
    expect_exact_product(torch::kFloat32);
    // Mixed types are refused rather than converted.
    EXPECT_THROW(boneage::fast::gemv(torch::zeros({2, 3}), torch::zeros({3}, torch::kBFloat16),
                                     torch::zeros({2})),
                 c10::Error);
}

TEST(Gemv, Bf16MatchesTheExactProductOfTheRoundedValues) {
    if (!boneage::fast::bf16_gemv_available())
        GTEST_SKIP() << "this CPU has no AVX512_BF16 (" << boneage::cpu_description() << ")";
    expect_exact_product(torch::kBFloat16);
}

// The fused residual end against LibTorch's add_ and relu_, bit for bit (NaNs where LibTorch
// has them): channels-last tensors with a tail after the last vector step, more elements than
// one task takes (so split over threads where there are two); and a pair with different
// strides, which takes LibTorch's path.
void expect_same_as_add_relu(torch::ScalarType dtype) {
    torch::manual_seed(9);
    const auto channels_last = torch::MemoryFormat::ChannelsLast;
    torch::Tensor out = torch::randn({2, 67, 51, 43}).to(dtype).contiguous(channels_last);
    torch::Tensor shortcut = torch::randn({2, 67, 51, 43}).to(dtype).contiguous(channels_last);
    const float nan = std::numeric_limits<float>::quiet_NaN();
    out.select(0, 1).select(0, 3).select(0, 5).select(0, 7).fill_(nan);
    torch::Tensor expected = out.clone().add_(shortcut).relu_();
    torch::Tensor got = out.clone();
    boneage::fast::add_relu_(got, shortcut);
    ASSERT_TRUE(torch::equal(got.isnan(), expected.isnan()));
    ASSERT_TRUE(got.isnan().any().item<bool>());
    EXPECT_TRUE(torch::equal(got.nan_to_num(0.0), expected.nan_to_num(0.0)));
    EXPECT_GT((got == 0).sum().item<std::int64_t>(), got.numel() / 4);  // the ReLU clamped

    torch::Tensor mixed = out.contiguous();  // channels-first strides against channels-last
    boneage::fast::add_relu_(mixed, shortcut);
    EXPECT_TRUE(torch::equal(mixed.nan_to_num(0.0), expected.nan_to_num(0.0)));
}

TEST(ResidualEnd, Fp32IsBitForBitAddThenRelu) { expect_same_as_add_relu(torch::kFloat32); }

TEST(ResidualEnd, Bf16IsBitForBitAddThenRelu) {
    if (!boneage::has_avx512_bf16())
        GTEST_SKIP() << "this CPU has no AVX512_BF16 (" << boneage::cpu_description() << ")";
    expect_same_as_add_relu(torch::kBFloat16);
}

TEST_F(FastPathTest, RejectsImagesOfTheWrongSize) {
    boneage::BoneAgeNet net = realistic_model("shallow", 64, false);
    FastModel fast(net, Precision::Fp32);
    EXPECT_THROW(fast.infer(torch::zeros({1, 1, 32, 32})), c10::Error);
}

}  // namespace
