// How the networks call their batch norms: through batch_norm() below, which is
// torch::nn::BatchNorm2d's own forward unless a hook is set for the calling thread. Training
// on several processes sets one for its forward passes: the synchronised batch norm
// (src/train/sync_batch_norm.hpp), which normalises with the whole global batch's statistics.
// The modules stay torch::nn::BatchNorm2d, with their names, so files, folding and the fused
// kernels see nothing of it.
#pragma once

#include <torch/torch.h>

#include <functional>
#include <utility>

namespace boneage::models {

using BatchNormHook =
    std::function<torch::Tensor(torch::nn::BatchNorm2dImpl& bn, const torch::Tensor& x)>;

namespace detail {
inline BatchNormHook& batch_norm_hook() {
    thread_local BatchNormHook hook;
    return hook;
}
}  // namespace detail

// `bn` applied to `x`: the hook's result in training mode when one is set on this thread,
// else bn.forward(x).
inline torch::Tensor batch_norm(torch::nn::BatchNorm2dImpl& bn, const torch::Tensor& x) {
    const BatchNormHook& hook = detail::batch_norm_hook();
    if (hook && bn.is_training()) return hook(bn, x);
    return bn.forward(x);
}

// Sets `hook` for the calling thread for its lifetime (an empty one changes nothing), then
// puts back what was there.
class BatchNormHookScope {
public:
    explicit BatchNormHookScope(BatchNormHook hook) {
        if (!hook) return;
        previous_ = std::exchange(detail::batch_norm_hook(), std::move(hook));
        set_ = true;
    }
    ~BatchNormHookScope() {
        if (set_) detail::batch_norm_hook() = std::move(previous_);
    }
    BatchNormHookScope(const BatchNormHookScope&) = delete;
    BatchNormHookScope& operator=(const BatchNormHookScope&) = delete;

private:
    BatchNormHook previous_;
    bool set_ = false;
};

}  // namespace boneage::models
