// The fused inference plan behind FastModel: convolutions with their batch norms folded in,
// weights packed once for oneDNN with the ReLU fused, and the regression head in fp32. Built
// from a net's module tree by the names its architecture file registers; a tree other than the
// one the plan mirrors is an error that names the layer, never a silent change of path.
#pragma once

#include <boneage/fast_path.hpp>
#include <boneage/model.hpp>

#include <torch/torch.h>

#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace boneage::fast {

// A convolution and the batch norm after it (evaluation mode: running statistics) as one
// convolution, in double: weight w * g / sqrt(var + eps) per output channel, bias
// (b - mean) * g / sqrt(var + eps) + beta. `bn` null: the convolution's own weight and bias
// (zeros where it has none). The one place batch norms are folded, for the fused trunk and for
// fold_batchnorm alike.
struct FoldedConv {
    torch::Tensor weight, bias;
};
FoldedConv fold(const torch::nn::Conv2dImpl& conv, const torch::nn::BatchNorm2dImpl* bn);

// One convolution (+ folded batch norm) (+ ReLU), channels-last, in the trunk's dtype.
class FusedConv {
public:
    FusedConv(torch::nn::Conv2dImpl& conv, torch::nn::BatchNorm2dImpl* bn, bool relu,
              torch::ScalarType dtype);
    torch::Tensor operator()(const torch::Tensor& x);

private:
    torch::Tensor weight_, bias_;
    std::vector<std::int64_t> stride_, padding_;
    bool relu_;
    c10::IValue packed_;                    // the oneDNN context, made at the first call
    std::vector<std::int64_t> packed_for_;  // the input shape it was packed for
};

// The paper's regression head (models/head.hpp) in fp32 on the trunk's features. With a bf16
// trunk, a dense layer too large for any cache keeps its weights in bf16 (the trunk's features
// are bf16 already) and sums in fp32. Every dense layer runs one input at a time in the same
// order of sums (kernels/gemv.hpp), so an image's answer does not depend on its batch.
class FusedHead {
public:
    // The head of a net of `config`: its sex embedding (null without one), its dense ReLU
    // layers in order and its output layer.
    FusedHead(const ModelConfig& config, const torch::nn::LinearImpl* sex_embedding,
              const std::vector<const torch::nn::LinearImpl*>& dense,
              const torch::nn::LinearImpl& output, torch::ScalarType trunk_dtype);
    torch::Tensor operator()(const torch::Tensor& features, const torch::Tensor& sex) const;

private:
    struct Dense {
        torch::Tensor weight, bias;  // weight: fp32, undefined where weight_bf16 replaces it
        torch::Tensor weight_bf16;   // a layer too large for any cache, with a bf16 trunk
        torch::Tensor operator()(const torch::Tensor& x) const;
    };
    ModelConfig config_;
    std::optional<std::pair<torch::Tensor, torch::Tensor>> sex_embedding_;
    std::vector<Dense> dense_;
    Dense output_;
};

class FusedTrunk {
public:
    virtual ~FusedTrunk() = default;
    // Features of images already channels-last in the trunk's dtype.
    virtual torch::Tensor operator()(const torch::Tensor& images) = 0;
};

// Whether `arch` has a fused trunk here: shallow, resnet18 and resnet50. The others run their
// own forward.
bool has_fused_trunk(const std::string& arch);

struct FusedPlan {
    std::unique_ptr<FusedTrunk> trunk;
    std::optional<FusedHead> head;  // always set; optional for want of a default constructor
};

// The fused trunk and head of `net`, whose architecture has_fused_trunk. Throws boneage::Error
// (Internal) naming the layer when the module tree is not the one the plan mirrors: a layer it
// expects is missing or of another type, or a layer holding weights or buffers is left out of
// the plan (a layer the net's forward would use and the fused path would skip).
FusedPlan make_fused_plan(BoneAgeNetImpl& net, torch::ScalarType dtype);

}  // namespace boneage::fast
