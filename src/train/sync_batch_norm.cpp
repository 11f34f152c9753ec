// Synchronised batch norm: the statistics and the backward terms summed over the ranks.
#include "train/sync_batch_norm.hpp"

#include <fmt/format.h>

#include <boneage/error.hpp>

namespace boneage::detail {

namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

// Per channel: over the batch and both spatial axes.
const std::vector<std::int64_t> kReduceDims = {0, 2, 3};

torch::Tensor per_channel(const torch::Tensor& v) { return v.view({1, -1, 1, 1}); }

// The world travels to backward() in the context's saved data, which holds IValues: as its
// address. It outlives every backward pass of the run (sync_batch_norm_hook's contract).
std::int64_t address_of(World& world) { return reinterpret_cast<std::int64_t>(&world); }
World& world_at(std::int64_t address) { return *reinterpret_cast<World*>(address); }

class SyncBatchNormFunction : public torch::autograd::Function<SyncBatchNormFunction> {
public:
    static torch::Tensor forward(AutogradContext* ctx, const torch::Tensor& x_in,
                                 const torch::Tensor& weight, const torch::Tensor& bias,
                                 torch::Tensor running_mean, torch::Tensor running_var,
                                 double momentum, double eps, std::int64_t world_address) {
        World& world = world_at(world_address);
        const torch::Tensor x = x_in.to(torch::kFloat32);
        const std::int64_t channels = x.size(1);
        // Sums in float64: the variance is E[x^2] - E[x]^2 over the global batch.
        torch::Tensor stats = torch::cat({x.sum(kReduceDims, false, torch::kFloat64),
                                          x.pow(2).sum(kReduceDims, false, torch::kFloat64),
                                          torch::full({1}, static_cast<double>(x.numel() / channels),
                                                      torch::kFloat64)});
        world.all_reduce_sum(stats);
        const double count = stats[2 * channels].item<double>();
        const torch::Tensor mean64 = stats.narrow(0, 0, channels) / count;
        const torch::Tensor var64 =
            (stats.narrow(0, channels, channels) / count - mean64.pow(2)).clamp_min(0.0);
        const torch::Tensor mean = mean64.to(torch::kFloat32);
        const torch::Tensor invstd = (var64 + eps).rsqrt().to(torch::kFloat32);
        {
            torch::NoGradGuard no_grad;
            running_mean.mul_(1.0 - momentum).add_(mean, momentum);
            running_var.mul_(1.0 - momentum)
                .add_((var64 * (count / std::max(1.0, count - 1.0))).to(torch::kFloat32),
                      momentum);
        }
        ctx->save_for_backward({x, weight, mean, invstd});
        ctx->saved_data["count"] = count;
        ctx->saved_data["world"] = world_address;
        ctx->saved_data["dtype"] = static_cast<std::int64_t>(x_in.scalar_type());
        const torch::Tensor y =
            (x - per_channel(mean)) * per_channel(invstd * weight) + per_channel(bias);
        return y.to(x_in.scalar_type());
    }

    static variable_list backward(AutogradContext* ctx, variable_list grad_outputs) {
        const variable_list saved = ctx->get_saved_variables();
        const torch::Tensor &x = saved[0], &weight = saved[1], &mean = saved[2],
                            &invstd = saved[3];
        const double count = ctx->saved_data["count"].toDouble();
        World& world = world_at(ctx->saved_data["world"].toInt());
        const torch::Tensor dy = grad_outputs[0].to(torch::kFloat32);
        const torch::Tensor xhat = (x - per_channel(mean)) * per_channel(invstd);
        // This rank's share; the weight and bias gradients are averaged with the others'
        // by the gradient all-reduce, like every other parameter's.
        const torch::Tensor sum_dy = dy.sum(kReduceDims);
        const torch::Tensor sum_dy_xhat = (dy * xhat).sum(kReduceDims);
        torch::Tensor both = torch::cat({sum_dy, sum_dy_xhat});
        world.all_reduce_sum(both);
        const std::int64_t channels = x.size(1);
        const torch::Tensor mean_dy = both.narrow(0, 0, channels) / count;
        const torch::Tensor mean_dy_xhat = both.narrow(0, channels, channels) / count;
        const torch::Tensor dx = (dy - per_channel(mean_dy) - xhat * per_channel(mean_dy_xhat)) *
                                 per_channel(invstd * weight);
        const auto dtype = static_cast<at::ScalarType>(ctx->saved_data["dtype"].toInt());
        return {dx.to(dtype), sum_dy_xhat, sum_dy, torch::Tensor(), torch::Tensor(),
                torch::Tensor(), torch::Tensor(), torch::Tensor()};
    }
};

}  // namespace

torch::Tensor sync_batch_norm(torch::nn::BatchNorm2dImpl& bn, const torch::Tensor& x,
                              World& world) {
    TORCH_CHECK(x.dim() == 4, "batch norm input must be N x C x H x W, got ", x.sizes());
    TORCH_CHECK(bn.options.affine() && bn.options.track_running_stats(),
                "synchronised batch norm needs affine weights and running statistics");
    // BatchNorm2d's own bookkeeping: the batch count, and the cumulative average when the
    // momentum is unset.
    double momentum = bn.options.momentum().value_or(0.0);
    {
        torch::NoGradGuard no_grad;
        bn.num_batches_tracked.add_(1);
    }
    if (!bn.options.momentum().has_value())
        momentum = 1.0 / static_cast<double>(bn.num_batches_tracked.item<std::int64_t>());
    return SyncBatchNormFunction::apply(x, bn.weight, bn.bias, bn.running_mean, bn.running_var,
                                        momentum, bn.options.eps(), address_of(world));
}

models::BatchNormHook sync_batch_norm_hook(World& world) {
    if (!world.distributed()) return {};
    return [&world](torch::nn::BatchNorm2dImpl& bn, const torch::Tensor& x) {
        return sync_batch_norm(bn, x, world);
    };
}

}  // namespace boneage::detail
