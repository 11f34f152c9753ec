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

#include <cmath>
#include <limits>
#include <map>
#include <string>
#include <vector>

#include "model_support.hpp"
#include "kernels/fused_trunk.hpp"
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

// phantom_batch, drawn once per test program for each count and size.
const Batch& cached_phantom_batch(int count, int size) {
    static std::map<std::pair<int, int>, Batch> cache;
    auto found = cache.find({count, size});
    if (found == cache.end())
        found = cache.emplace(std::make_pair(count, size), phantom_batch(count, size)).first;
    return found->second;
}

torch::Tensor reference(const boneage::BoneAgeNet& net, const Batch& b) {
    torch::NoGradGuard no_grad;
    return net->forward(b.images, b.sex);
}

// A fresh model with outputs near 120 months (label offset 120, scale 40, as training sets
// them), and batch norm statistics and shifts drawn at random so that folding has something
// to fold and gets caught when it folds them wrongly.
boneage::BoneAgeNet realistic_model(const std::string& arch, int size, bool use_sex,
                                    const std::string& head = "flatten") {
    torch::manual_seed(3);
    boneage::ModelConfig c;
    c.arch = arch;
    c.input_size = size;
    c.use_sex = use_sex;
    c.head = head;
    c.label_offset = 120.0;
    c.label_scale = 40.0;
    boneage::BoneAgeNet net = boneage::make_model(c);
    boneage::test::randomise_batch_norms(*net);
    // A fresh ResNet-18's output layer starts at zero (models/resnet.cpp), which would hide
    // everything before it.
    torch::Tensor output = net->named_parameters()["head.output.weight"];
    if (output.abs().max().item<double>() == 0.0) {
        torch::NoGradGuard no_grad;
        output.normal_(0.0, 1.0 / std::sqrt(static_cast<double>(output.size(1))));
    }
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

// One tiny net per architecture, and the path each must take: the fused trunk wherever one
// exists (the module path there would be a silent fallback), the module's forward elsewhere.
struct ArchCase {
    std::string arch;
    int size;
    bool use_sex;
    std::string head;
    std::string mode;
};

const std::vector<ArchCase>& arch_cases() {
    static const std::vector<ArchCase> cases = {
        {"shallow", 64, true, "flatten", "fused"},
        {"resnet50", 96, false, "flatten", "fused"},  // a flatten layer of 19 MB in fp32
        {"inceptionv4", 96, true, "flatten", "module"},
        {"resnet18", 64, true, "gap", "fused"},  // as bundled
    };
    return cases;
}

TEST_F(FastPathTest, FusedAndModulePathsInFp32MatchTheNetsOwnForward) {
    for (const ArchCase& c : arch_cases()) {
        SCOPED_TRACE(c.arch);
        Batch b = phantom_batch(3, c.size);
        boneage::BoneAgeNet net = realistic_model(c.arch, c.size, c.use_sex, c.head);
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

// Scales the output layer of `net` so that its answers on `b` spread over `months` about the
// same mean, as a trained model's answers spread over years. A random net's barely differ
// between images, and a tolerance set at a fraction of their spread would fall below fp32's
// resolution at 120 months.
void spread_answers(boneage::BoneAgeNet& net, const Batch& b, double months) {
    torch::NoGradGuard no_grad;
    const boneage::ModelConfig& c = net->config();
    torch::Tensor y = (reference(net, b).to(torch::kFloat64) - c.label_offset) / c.label_scale;
    const double factor = months / c.label_scale / (y.max() - y.min()).item<double>();
    torch::Tensor weight = net->named_parameters()["head.output.weight"];
    torch::Tensor bias = net->named_parameters()["head.output.bias"];
    // y = w.h + bias: w.h scaled about its mean, the mean kept.
    const double mean_wh = (y - bias.item<double>()).mean().item<double>();
    weight.mul_(factor);
    bias.sub_((factor - 1.0) * mean_wh);
}

// The last image of a batch of eight against itself alone, on every architecture, the answers
// spread over 40 months (LibTorch runs Inception-v4's small convolutions for one image on its
// slow native path, seconds a pass, hence one image). The head sums each image in one order
// whatever the batch (kernels/gemv.hpp), and here oneDNN runs the fused trunks' convolutions
// alike for one image and for eight: the fused paths agree to the bit on this CPU, Inception-v4's
// module path within 1e-3 months in fp32. The tolerances leave room for a CPU whose kernels block a
// batch otherwise. ResNet-50's flatten layer used to round its output to bf16 in a batch and not
// alone, which put this image 0.31 months off in bf16.
void expect_batch_invariant(Precision precision, double tolerance_months) {
    for (const ArchCase& c : arch_cases()) {
        SCOPED_TRACE(c.arch);
        const Batch& b = cached_phantom_batch(8, c.size);
        boneage::BoneAgeNet net = realistic_model(c.arch, c.size, c.use_sex, c.head);
        spread_answers(net, b, 40.0);
        FastModel fast(net, precision);
        ASSERT_EQ(fast.precision(), precision);
        torch::Tensor together = fast.infer(b.images, b.sex);
        const double spread = (together.max() - together.min()).item<double>();
        EXPECT_GT(spread, 30.0) << together;
        const std::int64_t last = b.images.size(0) - 1;
        const double alone =
            fast.infer(b.images.narrow(0, last, 1), b.sex.narrow(0, last, 1)).item<double>();
        const double difference = std::abs(alone - together[last].item<double>());
        ::testing::Test::RecordProperty(c.arch + "_months", std::to_string(difference));
        EXPECT_LE(difference, tolerance_months) << "alone " << alone << ", in a batch " << together;
    }
}

TEST_F(FastPathTest, AnImageGetsTheSameAnswerAloneAndInABatchOfEightInFp32) {
    expect_batch_invariant(Precision::Fp32, 0.005);
}

TEST_F(FastPathTest, AnImageGetsTheSameAnswerAloneAndInABatchOfEightInBf16) {
    if (!boneage::native_bf16())
        GTEST_SKIP() << "this CPU has no native bf16 (" << boneage::cpu_description() << ")";
    expect_batch_invariant(Precision::Bf16, 0.05);
}

// The message of the boneage::Error that building a FastModel of `net` throws, or "" when it
// builds.
std::string build_error(const boneage::BoneAgeNet& net) {
    try {
        FastModel fast(net, Precision::Fp32);
    } catch (const boneage::Error& e) {
        return e.what();
    }
    return "";
}

TEST_F(FastPathTest, AModuleTreeTheFusedPlanDoesNotMirrorIsAnErrorNamingTheLayer) {
    // A layer with weights the plan would skip: the net's forward would use it.
    boneage::BoneAgeNet extra = realistic_model("resnet18", 64, true, "gap");
    extra->named_modules()["layer2.0"]->register_module("gate", torch::nn::Linear(4, 4));
    const std::string skipped = build_error(extra);
    EXPECT_NE(skipped.find("layer2.0.gate"), std::string::npos) << skipped;

    // A layer of another type where the plan expects a batch norm.
    boneage::BoneAgeNet replaced = realistic_model("resnet50", 64, false);
    replaced->named_modules()["layer3.1"]->replace_module("bn2", torch::nn::Identity());
    const std::string other = build_error(replaced);
    EXPECT_NE(other.find("layer3.1.bn2"), std::string::npos) << other;

    // The head's layers are taken by name too.
    boneage::BoneAgeNet head = realistic_model("shallow", 64, true);
    head->named_modules()["head"]->register_module("dense9", torch::nn::Linear(4, 4));
    const std::string in_head = build_error(head);
    EXPECT_NE(in_head.find("head.dense9"), std::string::npos) << in_head;
}

TEST(BatchNormFolding, OneConvolutionEqualsTheConvolutionThenTheBatchNorm) {
    torch::manual_seed(13);
    torch::nn::Conv2d conv(torch::nn::Conv2dOptions(3, 5, 3).padding(1).bias(true));
    torch::nn::BatchNorm2d bn(5);
    torch::NoGradGuard no_grad;
    bn->running_mean.uniform_(-0.5, 0.5);
    bn->running_var.uniform_(0.5, 2.0);
    bn->weight.uniform_(0.5, 1.5);
    bn->bias.uniform_(-0.5, 0.5);
    bn->eval();
    torch::Tensor x = torch::randn({2, 3, 9, 9});
    torch::Tensor expected = bn->forward(conv->forward(x)).to(torch::kFloat64);
    const boneage::fast::FoldedConv folded = boneage::fast::fold(*conv, bn.get());
    torch::Tensor got = torch::conv2d(x.to(torch::kFloat64), folded.weight, folded.bias, 1, 1);
    EXPECT_LT((got - expected).abs().max().item<double>(), 1e-5);
    EXPECT_GT((expected - conv->forward(x)).abs().max().item<double>(), 1e-2)
        << "the batch norm must change the output for the comparison to mean anything";
}

// gemv_rows on a batch against gemv on each row alone: the same bits, with more rows of input
// than one tile of the kernel takes and a tail after its last full step.
void expect_rows_as_alone(torch::ScalarType dtype) {
    torch::manual_seed(6);
    const std::int64_t rows = 21, k = 4099, n = 19;
    torch::Tensor w = torch::randn({rows, k}).to(dtype);
    torch::Tensor x = torch::randn({n, k}).to(dtype);
    torch::Tensor b = torch::randn({rows});
    torch::Tensor together = boneage::fast::gemv_rows(w, x, b);
    ASSERT_EQ(together.sizes(), (std::vector<std::int64_t>{n, rows}));
    for (std::int64_t j = 0; j < n; ++j)
        EXPECT_TRUE(torch::equal(together[j], boneage::fast::gemv(w, x[j], b))) << "row " << j;
    EXPECT_THROW(boneage::fast::gemv_rows(w, x.narrow(1, 0, k - 1), b), c10::Error);
}

TEST(Gemv, RowsOfABatchGetTheBitsTheyGetAloneInFp32) { expect_rows_as_alone(torch::kFloat32); }

TEST(Gemv, RowsOfABatchGetTheBitsTheyGetAloneInBf16) {
    if (!boneage::fast::bf16_gemv_available())
        GTEST_SKIP() << "this CPU has no AVX512_BF16 (" << boneage::cpu_description() << ")";
    expect_rows_as_alone(torch::kBFloat16);
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
