// The training objective: Keras' MSLE plus the paper's L2 on one named dense layer.
#include <fmt/format.h>

#include <boneage/error.hpp>
#include <boneage/train.hpp>

namespace boneage {

namespace {
// Keras clips both sides at its backend epsilon before the logarithm.
constexpr double kEpsilon = 1e-7;

std::string shape_of(const torch::Tensor& t) {
    std::string s = "[";
    for (std::int64_t i = 0; i < t.dim(); ++i) s += (i ? ", " : "") + std::to_string(t.size(i));
    return s + "]";
}
}  // namespace

torch::Tensor msle_loss(const torch::Tensor& pred_months, const torch::Tensor& target_months) {
    if (pred_months.sizes() != target_months.sizes())
        throw Error(ErrorKind::Internal,
                    fmt::format("msle_loss: prediction shape {} differs from target shape {}",
                                shape_of(pred_months), shape_of(target_months)));
    torch::Tensor first = torch::log1p(pred_months.clamp_min(kEpsilon));
    torch::Tensor second = torch::log1p(target_months.to(pred_months.dtype()).clamp_min(kEpsilon));
    return (first - second).pow(2).mean();
}

torch::Tensor scaled_mae_loss(const torch::Tensor& pred_months, const torch::Tensor& target_months,
                              double label_scale) {
    if (pred_months.sizes() != target_months.sizes())
        throw Error(ErrorKind::Internal,
                    fmt::format("scaled_mae_loss: prediction shape {} differs from target shape {}",
                                shape_of(pred_months), shape_of(target_months)));
    return (pred_months - target_months.to(pred_months.dtype())).abs().mean() / label_scale;
}

torch::Tensor l2_penalty(BoneAgeNetImpl& net, double factor) {
    torch::Tensor sum;
    for (const torch::Tensor& w : net.l2_weights()) {
        torch::Tensor s = w.pow(2).sum();
        sum = sum.defined() ? sum + s : s;
    }
    if (!sum.defined()) return torch::zeros({});
    return sum * factor;
}

}  // namespace boneage
