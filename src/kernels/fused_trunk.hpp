// The fused inference plan behind FastModel: convolutions with their batch norms folded in,
// weights packed once for oneDNN with the ReLU fused, and the regression head in fp32. Built
// from a net's module tree by the names its architecture file registers.
#pragma once

#include <boneage/fast_path.hpp>
#include <boneage/model.hpp>

#include <torch/torch.h>

#include <memory>
#include <optional>
#include <vector>

namespace boneage::fast {

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
// are bf16 already) and sums in fp32.
class FusedHead {
public:
    FusedHead(BoneAgeNetImpl& net, torch::ScalarType trunk_dtype);
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

// The fused trunk of `net` for its architecture, or null when the architecture has none (or
// its module tree is not the one expected).
std::unique_ptr<FusedTrunk> make_fused_trunk(BoneAgeNetImpl& net, torch::ScalarType dtype);

}  // namespace boneage::fast
