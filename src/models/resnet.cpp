// ResNet (He, Zhang, Ren, Sun, "Deep Residual Learning for Image Recognition",
// arXiv:1512.03385) on one input channel, with torchvision's layout and names (conv1, bn1,
// layer1..layer4, each block conv1/bn1/conv2/bn2[/conv3/bn3] and downsample): a 7x7 stem,
// max pooling, four stages of residual blocks, widths 64, 128, 256, 512. The depths differ
// only by their table below.
//
// ResNet-50 is one of the paper's models (Section V): bottleneck blocks 3-4-6-3 (stride on
// the 3x3 convolution), then flatten, dense 256, 128, 64, 32 ReLU with L2 0.01 on the fourth,
// dropout 0.01 and a linear output.
//
// ResNet-18 is not in the paper; it is the compact trunk of the bundled model: basic blocks
// 2-2-2-2 (stride on the first 3x3 convolution), then dense 256 ReLU, dropout 0.2 and a
// linear output that starts at zero, so a fresh net predicts exactly the label offset (the
// training mean), which keeps the first epochs of training stable.
#include <fmt/format.h>

#include <array>

#include "models/batch_norm.hpp"
#include "models/head.hpp"

namespace boneage::models {
namespace {

torch::nn::Conv2d conv(std::int64_t in, std::int64_t out, std::int64_t kernel,
                       std::int64_t stride = 1, std::int64_t pad = 0) {
    return torch::nn::Conv2d(
        torch::nn::Conv2dOptions(in, out, kernel).stride(stride).padding(pad).bias(false));
}

// The 1x1 convolution and batch norm that bring the shortcut to the block's output shape.
torch::nn::Sequential shortcut(std::int64_t in, std::int64_t out, std::int64_t stride) {
    return torch::nn::Sequential(conv(in, out, 1, stride), torch::nn::BatchNorm2d(out));
}

// The shortcut's convolution, then its batch norm (through batch_norm, as every other one).
torch::Tensor shortcut_forward(torch::nn::Sequential& shortcut, const torch::Tensor& x) {
    return batch_norm(*shortcut[1]->as<torch::nn::BatchNorm2d>(),
                      shortcut[0]->as<torch::nn::Conv2d>()->forward(x));
}

// Two 3x3 convolutions (the first carrying the stride), added to the shortcut.
class BasicBlockImpl : public torch::nn::Module {
public:
    static constexpr std::int64_t kExpansion = 1;

    BasicBlockImpl(std::int64_t in, std::int64_t width, std::int64_t stride)
        : conv1(register_module("conv1", conv(in, width, 3, stride, 1))),
          bn1(register_module("bn1", torch::nn::BatchNorm2d(width))),
          conv2(register_module("conv2", conv(width, width, 3, 1, 1))),
          bn2(register_module("bn2", torch::nn::BatchNorm2d(width))) {
        if (stride != 1 || in != width)
            downsample = register_module("downsample", shortcut(in, width, stride));
    }

    torch::Tensor forward(const torch::Tensor& x) {
        torch::Tensor out = torch::relu(batch_norm(*bn1, conv1->forward(x)));
        out = batch_norm(*bn2, conv2->forward(out));
        return torch::relu(out + (downsample ? shortcut_forward(downsample, x) : x));
    }

    // Declared in registration order, which is also the order of initialisation.
    torch::nn::Conv2d conv1;
    torch::nn::BatchNorm2d bn1;
    torch::nn::Conv2d conv2;
    torch::nn::BatchNorm2d bn2;
    torch::nn::Sequential downsample{nullptr};
};
TORCH_MODULE(BasicBlock);

// 1x1 reduce, 3x3 (carrying the stride), 1x1 expand by 4, added to the shortcut.
class BottleneckImpl : public torch::nn::Module {
public:
    static constexpr std::int64_t kExpansion = 4;

    BottleneckImpl(std::int64_t in, std::int64_t width, std::int64_t stride)
        : conv1(register_module("conv1", conv(in, width, 1))),
          bn1(register_module("bn1", torch::nn::BatchNorm2d(width))),
          conv2(register_module("conv2", conv(width, width, 3, stride, 1))),
          bn2(register_module("bn2", torch::nn::BatchNorm2d(width))),
          conv3(register_module("conv3", conv(width, width * kExpansion, 1))),
          bn3(register_module("bn3", torch::nn::BatchNorm2d(width * kExpansion))) {
        if (stride != 1 || in != width * kExpansion)
            downsample = register_module("downsample", shortcut(in, width * kExpansion, stride));
    }

    torch::Tensor forward(const torch::Tensor& x) {
        torch::Tensor out = torch::relu(batch_norm(*bn1, conv1->forward(x)));
        out = torch::relu(batch_norm(*bn2, conv2->forward(out)));
        out = batch_norm(*bn3, conv3->forward(out));
        return torch::relu(out + (downsample ? shortcut_forward(downsample, x) : x));
    }

    torch::nn::Conv2d conv1;
    torch::nn::BatchNorm2d bn1;
    torch::nn::Conv2d conv2;
    torch::nn::BatchNorm2d bn2;
    torch::nn::Conv2d conv3;
    torch::nn::BatchNorm2d bn3;
    torch::nn::Sequential downsample{nullptr};
};
TORCH_MODULE(Bottleneck);

// What differs between the depths.
struct ResNetSpec {
    std::array<std::int64_t, 4> blocks;  // residual blocks per stage
    HeadSpec head;
    bool zero_output = false;  // start the output layer at zero
};

const ResNetSpec kResNet18{{2, 2, 2, 2}, HeadSpec{{256}, /*l2_layer=*/-1, 0.2}, true};
const ResNetSpec kResNet50{{3, 4, 6, 3}, HeadSpec{{256, 128, 64, 32}, /*l2_layer=*/3, 0.01}};

constexpr std::array<std::int64_t, 4> kWidths = {64, 128, 256, 512};

template <typename Block>
class ResNetImpl : public TrunkAndHeadNet {
public:
    ResNetImpl(ModelConfig config, const ResNetSpec& spec) : TrunkAndHeadNet(std::move(config)) {
        conv1_ = register_module("conv1", conv(1, 64, 7, 2, 3));
        bn1_ = register_module("bn1", torch::nn::BatchNorm2d(64));
        std::int64_t side = conv_side(conv_side(config_.input_size, 7, 2, 3), 3, 2, 1);
        std::int64_t in = 64;
        for (std::size_t i = 0; i < spec.blocks.size(); ++i) {
            const std::int64_t stride = i == 0 ? 1 : 2;
            torch::nn::Sequential layer;
            for (std::int64_t b = 0; b < spec.blocks[i]; ++b) {
                layer->push_back(Block(in, kWidths[i], b == 0 ? stride : 1));
                in = kWidths[i] * Block::ContainedType::kExpansion;
            }
            layers_.push_back(register_module(fmt::format("layer{}", i + 1), layer));
            side = conv_side(side, 3, stride, 1);
        }
        check_feature_side(config_, side);
        head_ = register_module("head", RegressionHead(config_, in, side, spec.head));
        init_convolutions(*this);
        if (spec.zero_output) head_->zero_output();
    }

    std::vector<torch::Tensor> l2_weights() override { return head_->l2_weights(); }

private:
    // layer4's output.
    torch::Tensor trunk(const torch::Tensor& images) override {
        torch::Tensor x = torch::relu(batch_norm(*bn1_, conv1_->forward(images)));
        x = torch::max_pool2d(x, 3, 2, 1);
        for (auto& layer : layers_) x = layer->forward(x);
        return x;
    }

    torch::nn::Conv2d conv1_{nullptr};
    torch::nn::BatchNorm2d bn1_{nullptr};
    std::vector<torch::nn::Sequential> layers_;
};

}  // namespace

BoneAgeNet make_resnet18(const ModelConfig& config) {
    return std::make_shared<ResNetImpl<BasicBlock>>(config, kResNet18);
}

BoneAgeNet make_resnet50(const ModelConfig& config) {
    return std::make_shared<ResNetImpl<Bottleneck>>(config, kResNet50);
}

}  // namespace boneage::models
