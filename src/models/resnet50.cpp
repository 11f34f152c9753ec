// ResNet-50 (He, Zhang, Ren, Sun, "Deep Residual Learning for Image Recognition",
// arXiv:1512.03385): a 7x7 stem, then bottleneck blocks 3-4-6-3 with torchvision's layout
// (stride on the 3x3 convolution) and names (conv1, bn1, layer1..layer4, downsample), on one
// input channel. The paper's head (Section V): flatten, dense 256, 128, 64, 32 ReLU with
// L2 0.01 on the fourth, dropout 0.01 and a linear output.
#include <fmt/format.h>

#include <array>

#include "models/head.hpp"

namespace boneage::models {
namespace {

torch::nn::Conv2d conv(std::int64_t in, std::int64_t out, std::int64_t kernel,
                       std::int64_t stride = 1, std::int64_t pad = 0) {
    return torch::nn::Conv2d(
        torch::nn::Conv2dOptions(in, out, kernel).stride(stride).padding(pad).bias(false));
}

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
        if (stride != 1 || in != width * kExpansion) {
            downsample = register_module(
                "downsample", torch::nn::Sequential(conv(in, width * kExpansion, 1, stride),
                                                    torch::nn::BatchNorm2d(width * kExpansion)));
        }
    }

    torch::Tensor forward(const torch::Tensor& x) {
        torch::Tensor out = torch::relu(bn1->forward(conv1->forward(x)));
        out = torch::relu(bn2->forward(conv2->forward(out)));
        out = bn3->forward(conv3->forward(out));
        return torch::relu(out + (downsample ? downsample->forward(x) : x));
    }

    // Declared in registration order, which is also the order of initialisation.
    torch::nn::Conv2d conv1;
    torch::nn::BatchNorm2d bn1;
    torch::nn::Conv2d conv2;
    torch::nn::BatchNorm2d bn2;
    torch::nn::Conv2d conv3;
    torch::nn::BatchNorm2d bn3;
    torch::nn::Sequential downsample{nullptr};
};
TORCH_MODULE(Bottleneck);

constexpr std::array<std::int64_t, 4> kBlocks = {3, 4, 6, 3};
constexpr std::array<std::int64_t, 4> kWidths = {64, 128, 256, 512};

class ResNet50Impl : public BoneAgeNetImpl {
public:
    explicit ResNet50Impl(ModelConfig config) : BoneAgeNetImpl(std::move(config)) {
        conv1_ = register_module("conv1", conv(1, 64, 7, 2, 3));
        bn1_ = register_module("bn1", torch::nn::BatchNorm2d(64));
        std::int64_t side = conv_side(conv_side(config_.input_size, 7, 2, 3), 3, 2, 1);
        std::int64_t in = 64;
        for (std::size_t i = 0; i < kBlocks.size(); ++i) {
            const std::int64_t stride = i == 0 ? 1 : 2;
            torch::nn::Sequential layer;
            for (std::int64_t b = 0; b < kBlocks[i]; ++b) {
                layer->push_back(Bottleneck(in, kWidths[i], b == 0 ? stride : 1));
                in = kWidths[i] * BottleneckImpl::kExpansion;
            }
            layers_.push_back(register_module(fmt::format("layer{}", i + 1), layer));
            side = conv_side(side, 3, stride, 1);
        }
        check_feature_side(config_, side);
        head_ = register_module(
            "head",
            RegressionHead(config_, in, side, HeadSpec{{256, 128, 64, 32}, /*l2_layer=*/3, 0.01}));
        init_convolutions(*this);
    }

    torch::Tensor forward(const torch::Tensor& images, const torch::Tensor& sex) override {
        check_inputs(config_, images, sex);
        torch::Tensor x = torch::relu(bn1_->forward(conv1_->forward(images)));
        x = torch::max_pool2d(x, 3, 2, 1);
        for (auto& layer : layers_) x = layer->forward(x);
        return to_months(config_, head_->forward(x, sex));
    }

    std::vector<torch::Tensor> l2_weights() override { return head_->l2_weights(); }

private:
    torch::nn::Conv2d conv1_{nullptr};
    torch::nn::BatchNorm2d bn1_{nullptr};
    std::vector<torch::nn::Sequential> layers_;
    RegressionHead head_{nullptr};
};

}  // namespace

BoneAgeNet make_resnet50(const ModelConfig& config) {
    return std::make_shared<ResNet50Impl>(config);
}

}  // namespace boneage::models
