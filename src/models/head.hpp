// The regression heads of the paper's three models (Section V) in one place: the trunk's
// feature map is flattened (the paper) or averaged over space ("gap"), optionally joined by
// a small embedding of the sex, then passed through a dense ReLU stack, dropout and one
// linear output.
#pragma once

#include <torch/torch.h>

#include <boneage/model.hpp>
#include <cstdint>
#include <vector>

namespace boneage::models {

// What differs between the three heads.
struct HeadSpec {
    std::vector<std::int64_t> dense;  // widths of the ReLU dense layers, in order
    int l2_layer = -1;                // index into `dense` of the layer carrying L2, -1: none
    double dropout = 0.0;             // dropout before the output layer
};

// Width of the sex embedding joined to the trunk's features when ModelConfig::use_sex.
constexpr std::int64_t kSexEmbedding = 16;

// Layers are named dense1..denseN, dropout and output; the sex embedding is sex_embedding.
class RegressionHeadImpl : public torch::nn::Module {
public:
    // `channels` x `side` x `side` is the trunk's feature map at the configured input size.
    RegressionHeadImpl(const ModelConfig& config, std::int64_t channels, std::int64_t side,
                       HeadSpec spec);

    // Returns y (N), the output before label scaling.
    torch::Tensor forward(const torch::Tensor& features, const torch::Tensor& sex);

    // The weight of the dense layer that carries L2, or nothing.
    std::vector<torch::Tensor> l2_weights() const;

    // Number of features entering the dense stack (after flatten or pooling, before sex).
    std::int64_t feature_count() const { return feature_count_; }

    // Sets the output layer's weight and bias to zero, so the head's y starts at 0 and the
    // net's months at the label offset.
    void zero_output();

private:
    bool gap_ = false;
    bool use_sex_ = false;
    std::int64_t feature_count_ = 0;
    HeadSpec spec_;
    torch::nn::Linear sex_embedding_{nullptr};
    std::vector<torch::nn::Linear> dense_;
    torch::nn::Dropout dropout_{nullptr};
    torch::nn::Linear output_{nullptr};
};
TORCH_MODULE(RegressionHead);

// Checks images (N x 1 x S x S, S the configured size) and sex before a forward pass.
void check_inputs(const ModelConfig& config, const torch::Tensor& images, const torch::Tensor& sex);
// The two halves of check_inputs: the images alone, and `count` sexes when the model uses sex.
void check_images(const ModelConfig& config, const torch::Tensor& images);
void check_sex(const ModelConfig& config, std::int64_t count, const torch::Tensor& sex);

// months = y * label_scale + label_offset.
torch::Tensor to_months(const ModelConfig& config, const torch::Tensor& y);

// A network of one convolutional trunk and a RegressionHead, as every architecture here is:
// forward, features and head written once (forward is exactly head(features(x))); each
// architecture supplies its trunk and registers head_.
class TrunkAndHeadNet : public BoneAgeNetImpl {
public:
    using BoneAgeNetImpl::BoneAgeNetImpl;

    torch::Tensor forward(const torch::Tensor& images, const torch::Tensor& sex) override {
        check_inputs(config_, images, sex);
        return head(trunk(normalise_input(config_, images)), sex);
    }

    bool has_features() const override { return true; }

    torch::Tensor features(const torch::Tensor& images) override {
        check_images(config_, images);
        return trunk(normalise_input(config_, images));
    }

    torch::Tensor head(const torch::Tensor& features, const torch::Tensor& sex) override {
        check_sex(config_, features.size(0), sex);
        return to_months(config_, head_->forward(features, sex));
    }

protected:
    // The last convolutional stage's activations, N x C x h x w.
    virtual torch::Tensor trunk(const torch::Tensor& images) = 0;

    RegressionHead head_{nullptr};
};

// He (Kaiming) normal initialisation of every convolution below `module`, fan-out, as
// torchvision does; batch norms start as the identity. Does nothing on a thread where a
// SkipWeightInit lives.
void init_convolutions(torch::nn::Module& module);

// While one lives, init_convolutions on this thread leaves the weights as the layers' own
// constructors drew them: for a net whose every weight is overwritten next (a model file being
// loaded), where drawing them a second time is wasted time (a tenth of a second per ResNet).
class SkipWeightInit {
public:
    SkipWeightInit();
    ~SkipWeightInit();
    SkipWeightInit(const SkipWeightInit&) = delete;
    SkipWeightInit& operator=(const SkipWeightInit&) = delete;

private:
    bool previous_;
};

// Side of a convolution's or pooling's output: floor((in + 2 pad - kernel) / stride) + 1,
// or 0 when the window does not fit.
constexpr std::int64_t conv_side(std::int64_t in, std::int64_t kernel, std::int64_t stride,
                                 std::int64_t pad = 0) {
    return in + 2 * pad < kernel ? 0 : (in + 2 * pad - kernel) / stride + 1;
}

// Throws UsageError when the trunk's feature map would be empty at this input size.
void check_feature_side(const ModelConfig& config, std::int64_t side);

// The builders make_model dispatches to, one per architecture file.
BoneAgeNet make_shallow(const ModelConfig& config);
BoneAgeNet make_resnet18(const ModelConfig& config);
BoneAgeNet make_resnet50(const ModelConfig& config);
BoneAgeNet make_inceptionv4(const ModelConfig& config);
BoneAgeNet make_ensemble(const ModelConfig& config);

}  // namespace boneage::models
