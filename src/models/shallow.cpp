// The paper's shallow network (Nasiri & Akbari Moafi, "Bone Age Prediction From Hand
// Radiographs", Section V): a few convolution + pooling blocks, then flatten, dense 32 ReLU,
// dense 16 ReLU with L2 0.01, dropout 0.05 and a linear output. The paper leaves the blocks
// unspecified; four 3x3 convolutions (same padding) with ReLU and 2x2 max pooling, 16, 32,
// 64 and 64 channels, bring 320 px to a 20 x 20 x 64 feature map.
#include <fmt/format.h>

#include <array>

#include "models/head.hpp"

namespace boneage::models {
namespace {

constexpr std::array<std::int64_t, 4> kBlockChannels = {16, 32, 64, 64};

class ShallowImpl : public TrunkAndHeadNet {
public:
    explicit ShallowImpl(ModelConfig config) : TrunkAndHeadNet(std::move(config)) {
        std::int64_t in = 1;
        std::int64_t side = config_.input_size;
        for (std::size_t i = 0; i < kBlockChannels.size(); ++i) {
            auto conv =
                torch::nn::Conv2d(torch::nn::Conv2dOptions(in, kBlockChannels[i], 3).padding(1));
            blocks_.push_back(register_module(fmt::format("conv{}", i + 1), conv));
            in = kBlockChannels[i];
            side = conv_side(side, 2, 2);
        }
        check_feature_side(config_, side);
        head_ = register_module(
            "head", RegressionHead(config_, in, side, HeadSpec{{32, 16}, /*l2_layer=*/1, 0.05}));
        init_convolutions(*this);
    }

    std::vector<torch::Tensor> l2_weights() override { return head_->l2_weights(); }

private:
    // The last block's pooled output.
    torch::Tensor trunk(const torch::Tensor& images) override {
        torch::Tensor x = images;
        for (auto& conv : blocks_) x = torch::max_pool2d(torch::relu(conv->forward(x)), 2, 2);
        return x;
    }

    std::vector<torch::nn::Conv2d> blocks_;
};

}  // namespace

BoneAgeNet make_shallow(const ModelConfig& config) { return std::make_shared<ShallowImpl>(config); }

}  // namespace boneage::models
