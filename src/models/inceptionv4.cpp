// Inception-v4 (Szegedy, Ioffe, Vanhoucke, Alemi, "Inception-v4, Inception-ResNet and the
// Impact of Residual Connections on Learning", arXiv:1602.07261, Figures 3-9): the stem
// (Conv2d_1a..2b, Mixed_3a, Mixed_4a, Mixed_5a), 4 x Inception-A, Reduction-A, 7 x
// Inception-B, Reduction-B, 3 x Inception-C, every convolution a conv-BN-ReLU unit, on one
// input channel. With the paper's valid paddings a 320 px input ends as 8 x 8 x 1536. The
// head (Nasiri & Akbari Moafi, Section V): flatten, dropout 0.05, a linear output; no dense
// layers, so no L2. With use_sex the sex embedding joins the features before the dropout.
#include "models/batch_norm.hpp"
#include "models/head.hpp"

namespace boneage::models {
namespace {

// Convolution without bias, batch norm (eps 0.001 as in the reference), ReLU.
class BasicConv2dImpl : public torch::nn::Module {
public:
    BasicConv2dImpl(std::int64_t in, std::int64_t out, torch::ExpandingArray<2> kernel,
                    std::int64_t stride = 1, torch::ExpandingArray<2> pad = 0)
        : conv(register_module("conv", torch::nn::Conv2d(torch::nn::Conv2dOptions(in, out, kernel)
                                                             .stride(stride)
                                                             .padding(pad)
                                                             .bias(false)))),
          bn(register_module(
              "bn", torch::nn::BatchNorm2d(torch::nn::BatchNorm2dOptions(out).eps(0.001)))) {}

    torch::Tensor forward(const torch::Tensor& x) {
        return torch::relu(batch_norm(*bn, conv->forward(x)));
    }

    torch::nn::Conv2d conv;
    torch::nn::BatchNorm2d bn;
};
TORCH_MODULE(BasicConv2d);

BasicConv2d conv_unit(std::int64_t in, std::int64_t out, torch::ExpandingArray<2> kernel,
                      std::int64_t stride = 1, torch::ExpandingArray<2> pad = 0) {
    return BasicConv2d(std::make_shared<BasicConv2dImpl>(in, out, kernel, stride, pad));
}

using Seq = torch::nn::Sequential;

torch::Tensor max_pool_3x3_2(const torch::Tensor& x) { return torch::max_pool2d(x, 3, 2); }

// The 3x3 stride-1 average pooling of the A, B and C blocks' pooling branch.
torch::Tensor avg_pool_3x3(const torch::Tensor& x) {
    return torch::avg_pool2d(x, 3, 1, 1, /*ceil_mode=*/false, /*count_include_pad=*/false);
}

// Stem, Figure 3: 73 x 73 x 64 -> max pool | 3x3/2 conv -> 160 channels.
struct Mixed3aImpl : torch::nn::Module {
    BasicConv2d conv{register_module("conv", conv_unit(64, 96, 3, 2))};
    torch::Tensor forward(const torch::Tensor& x) {
        return torch::cat({max_pool_3x3_2(x), conv(x)}, 1);
    }
};
TORCH_MODULE(Mixed3a);

// Stem, Figure 3: two towers ending in a valid 3x3 convolution -> 192 channels.
struct Mixed4aImpl : torch::nn::Module {
    Seq branch0{register_module("branch0", Seq(conv_unit(160, 64, 1), conv_unit(64, 96, 3)))};
    Seq branch1{register_module("branch1",
                                Seq(conv_unit(160, 64, 1), conv_unit(64, 64, {1, 7}, 1, {0, 3}),
                                    conv_unit(64, 64, {7, 1}, 1, {3, 0}), conv_unit(64, 96, 3)))};
    torch::Tensor forward(const torch::Tensor& x) {
        return torch::cat({branch0->forward(x), branch1->forward(x)}, 1);
    }
};
TORCH_MODULE(Mixed4a);

// Stem, Figure 3: 3x3/2 conv | max pool -> 384 channels.
struct Mixed5aImpl : torch::nn::Module {
    BasicConv2d conv{register_module("conv", conv_unit(192, 192, 3, 2))};
    torch::Tensor forward(const torch::Tensor& x) {
        return torch::cat({conv(x), max_pool_3x3_2(x)}, 1);
    }
};
TORCH_MODULE(Mixed5a);

// Figure 4, 384 -> 384 channels.
struct InceptionAImpl : torch::nn::Module {
    BasicConv2d branch0{register_module("branch0", conv_unit(384, 96, 1))};
    Seq branch1{register_module("branch1", Seq(conv_unit(384, 64, 1), conv_unit(64, 96, 3, 1, 1)))};
    Seq branch2{register_module("branch2", Seq(conv_unit(384, 64, 1), conv_unit(64, 96, 3, 1, 1),
                                               conv_unit(96, 96, 3, 1, 1)))};
    BasicConv2d branch3{register_module("branch3", conv_unit(384, 96, 1))};
    torch::Tensor forward(const torch::Tensor& x) {
        return torch::cat(
            {branch0(x), branch1->forward(x), branch2->forward(x), branch3(avg_pool_3x3(x))}, 1);
    }
};
TORCH_MODULE(InceptionA);

// Figure 7 with k, l, m, n = 192, 224, 256, 384: 384 -> 1024 channels, side halved.
struct ReductionAImpl : torch::nn::Module {
    BasicConv2d branch0{register_module("branch0", conv_unit(384, 384, 3, 2))};
    Seq branch1{register_module("branch1", Seq(conv_unit(384, 192, 1), conv_unit(192, 224, 3, 1, 1),
                                               conv_unit(224, 256, 3, 2)))};
    torch::Tensor forward(const torch::Tensor& x) {
        return torch::cat({branch0(x), branch1->forward(x), max_pool_3x3_2(x)}, 1);
    }
};
TORCH_MODULE(ReductionA);

// Figure 5, 1024 -> 1024 channels.
struct InceptionBImpl : torch::nn::Module {
    BasicConv2d branch0{register_module("branch0", conv_unit(1024, 384, 1))};
    Seq branch1{register_module("branch1",
                                Seq(conv_unit(1024, 192, 1), conv_unit(192, 224, {1, 7}, 1, {0, 3}),
                                    conv_unit(224, 256, {7, 1}, 1, {3, 0})))};
    Seq branch2{register_module(
        "branch2",
        Seq(conv_unit(1024, 192, 1), conv_unit(192, 192, {7, 1}, 1, {3, 0}),
            conv_unit(192, 224, {1, 7}, 1, {0, 3}), conv_unit(224, 224, {7, 1}, 1, {3, 0}),
            conv_unit(224, 256, {1, 7}, 1, {0, 3})))};
    BasicConv2d branch3{register_module("branch3", conv_unit(1024, 128, 1))};
    torch::Tensor forward(const torch::Tensor& x) {
        return torch::cat(
            {branch0(x), branch1->forward(x), branch2->forward(x), branch3(avg_pool_3x3(x))}, 1);
    }
};
TORCH_MODULE(InceptionB);

// Figure 8: 1024 -> 1536 channels, side halved.
struct ReductionBImpl : torch::nn::Module {
    Seq branch0{
        register_module("branch0", Seq(conv_unit(1024, 192, 1), conv_unit(192, 192, 3, 2)))};
    Seq branch1{register_module(
        "branch1", Seq(conv_unit(1024, 256, 1), conv_unit(256, 256, {1, 7}, 1, {0, 3}),
                       conv_unit(256, 320, {7, 1}, 1, {3, 0}), conv_unit(320, 320, 3, 2)))};
    torch::Tensor forward(const torch::Tensor& x) {
        return torch::cat({branch0->forward(x), branch1->forward(x), max_pool_3x3_2(x)}, 1);
    }
};
TORCH_MODULE(ReductionB);

// Figure 6, 1536 -> 1536 channels; two towers split into parallel 1x3 and 3x1 convolutions.
struct InceptionCImpl : torch::nn::Module {
    BasicConv2d branch0{register_module("branch0", conv_unit(1536, 256, 1))};
    BasicConv2d branch1_0{register_module("branch1_0", conv_unit(1536, 384, 1))};
    BasicConv2d branch1_1a{register_module("branch1_1a", conv_unit(384, 256, {1, 3}, 1, {0, 1}))};
    BasicConv2d branch1_1b{register_module("branch1_1b", conv_unit(384, 256, {3, 1}, 1, {1, 0}))};
    Seq branch2_0{register_module(
        "branch2_0", Seq(conv_unit(1536, 384, 1), conv_unit(384, 448, {3, 1}, 1, {1, 0}),
                         conv_unit(448, 512, {1, 3}, 1, {0, 1})))};
    BasicConv2d branch2_1a{register_module("branch2_1a", conv_unit(512, 256, {1, 3}, 1, {0, 1}))};
    BasicConv2d branch2_1b{register_module("branch2_1b", conv_unit(512, 256, {3, 1}, 1, {1, 0}))};
    BasicConv2d branch3{register_module("branch3", conv_unit(1536, 256, 1))};
    torch::Tensor forward(const torch::Tensor& x) {
        torch::Tensor b1 = branch1_0(x);
        torch::Tensor b2 = branch2_0->forward(x);
        return torch::cat({branch0(x), branch1_1a(b1), branch1_1b(b1), branch2_1a(b2),
                           branch2_1b(b2), branch3(avg_pool_3x3(x))},
                          1);
    }
};
TORCH_MODULE(InceptionC);

template <typename Block>
Seq repeat(int times) {
    Seq seq;
    for (int i = 0; i < times; ++i) seq->push_back(Block());
    return seq;
}

// Side of the final feature map: the stem's and reductions' valid 3x3 windows, in order.
std::int64_t feature_side(std::int64_t side) {
    side = conv_side(side, 3, 2);  // Conv2d_1a_3x3
    side = conv_side(side, 3, 1);  // Conv2d_2a_3x3 (Conv2d_2b_3x3 keeps the side)
    side = conv_side(side, 3, 2);  // Mixed_3a
    side = conv_side(side, 3, 1);  // Mixed_4a
    side = conv_side(side, 3, 2);  // Mixed_5a
    side = conv_side(side, 3, 2);  // reduction_a
    return conv_side(side, 3, 2);  // reduction_b
}

class InceptionV4Impl : public TrunkAndHeadNet {
public:
    explicit InceptionV4Impl(ModelConfig config) : TrunkAndHeadNet(std::move(config)) {
        const std::int64_t side = feature_side(config_.input_size);
        check_feature_side(config_, side);
        head_ =
            register_module("head", RegressionHead(config_, 1536, side, HeadSpec{{}, -1, 0.05}));
        init_convolutions(*this);
    }

    std::vector<torch::Tensor> l2_weights() override { return {}; }

private:
    // The last Inception-C block's output.
    torch::Tensor trunk(const torch::Tensor& images) override {
        torch::Tensor x = Conv2d_2b_3x3(Conv2d_2a_3x3(Conv2d_1a_3x3(images)));
        x = Mixed_5a(Mixed_4a(Mixed_3a(x)));
        x = reduction_a(inception_a->forward(x));
        x = reduction_b(inception_b->forward(x));
        return inception_c->forward(x);
    }

    // Declared in the order of the network, which is the order of registration.
    BasicConv2d Conv2d_1a_3x3{register_module("Conv2d_1a_3x3", conv_unit(1, 32, 3, 2))};
    BasicConv2d Conv2d_2a_3x3{register_module("Conv2d_2a_3x3", conv_unit(32, 32, 3))};
    BasicConv2d Conv2d_2b_3x3{register_module("Conv2d_2b_3x3", conv_unit(32, 64, 3, 1, 1))};
    Mixed3a Mixed_3a{register_module("Mixed_3a", Mixed3a())};
    Mixed4a Mixed_4a{register_module("Mixed_4a", Mixed4a())};
    Mixed5a Mixed_5a{register_module("Mixed_5a", Mixed5a())};
    Seq inception_a{register_module("inception_a", repeat<InceptionA>(4))};
    ReductionA reduction_a{register_module("reduction_a", ReductionA())};
    Seq inception_b{register_module("inception_b", repeat<InceptionB>(7))};
    ReductionB reduction_b{register_module("reduction_b", ReductionB())};
    Seq inception_c{register_module("inception_c", repeat<InceptionC>(3))};
};

}  // namespace

BoneAgeNet make_inceptionv4(const ModelConfig& config) {
    return std::make_shared<InceptionV4Impl>(config);
}

}  // namespace boneage::models
