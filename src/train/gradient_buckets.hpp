// Gradient averaging across the ranks of a run, overlapped with the backward pass: the
// parameters are grouped into buckets in the reverse of their registration order (about the
// order autograd produces their gradients), a hook on each parameter copies its gradient into
// its bucket, and a full bucket starts its all-reduce at once while autograd goes on with the
// earlier layers. This is what PyTorch's DistributedDataParallel does (its Reducer); LibTorch's
// C++ API has no DDP module, so the trainer does it with the same parts.
#pragma once

#include <torch/torch.h>

#include <cstddef>
#include <vector>

#include "train/distributed.hpp"

namespace boneage::detail {

class GradientBuckets {
public:
    // DDP's defaults: a small first bucket so the first all-reduce starts early, then 25 MiB.
    static constexpr std::size_t kFirstBucketBytes = 1u << 20;
    static constexpr std::size_t kBucketBytes = 25u << 20;

    // Hooks every parameter of `parameters` that requires a gradient. `world` must outlive
    // this object. With a single-process world it hooks nothing and finish() does nothing.
    GradientBuckets(World& world, std::vector<torch::Tensor> parameters,
                    std::size_t first_bucket_bytes = kFirstBucketBytes,
                    std::size_t bucket_bytes = kBucketBytes);
    ~GradientBuckets();
    GradientBuckets(const GradientBuckets&) = delete;
    GradientBuckets& operator=(const GradientBuckets&) = delete;

    // Before each backward pass.
    void start();
    // After it: starts the buckets still waiting (parameters that got no gradient count as
    // zero), waits for every all-reduce, and sets each parameter's grad to the mean over the
    // ranks. Returns the milliseconds spent waiting, the all-reduce time not hidden behind
    // the backward pass. Throws boneage::Error when a peer is lost.
    double finish();

    std::size_t bucket_count() const { return buckets_.size(); }

private:
    struct Bucket {
        std::vector<std::size_t> members;  // indices into params_
        torch::Tensor flat;                // their gradients, one after the other
        std::size_t waiting = 0;           // members whose gradient has not come this step
        bool started = false;
        std::vector<PendingReduce> pending;
    };
    void on_gradient(std::size_t param, const torch::Tensor& grad);
    void start_ready_buckets();

    World& world_;
    std::vector<torch::Tensor> params_;
    std::vector<std::size_t> bucket_of_, offset_of_;
    std::vector<bool> arrived_;
    std::vector<unsigned> hook_ids_;
    std::vector<Bucket> buckets_;
    std::size_t next_to_start_ = 0;  // buckets start strictly in order, the same on every rank
};

}  // namespace boneage::detail
