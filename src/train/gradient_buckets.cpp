// Bucketed, overlapped all-reduce of gradients (gradient_buckets.hpp).
#include "train/gradient_buckets.hpp"

#include <fmt/format.h>

#include <boneage/error.hpp>
#include <chrono>

namespace boneage::detail {

GradientBuckets::GradientBuckets(World& world, std::vector<torch::Tensor> parameters,
                                 std::size_t first_bucket_bytes, std::size_t bucket_bytes)
    : world_(world) {
    if (!world_.distributed()) return;
    for (torch::Tensor& p : parameters)
        if (p.requires_grad()) params_.push_back(p);
    bucket_of_.resize(params_.size());
    offset_of_.resize(params_.size());
    arrived_.assign(params_.size(), false);
    // Reverse order: the output layer's gradients come first in the backward pass.
    std::size_t bytes = 0;
    for (std::size_t k = params_.size(); k-- > 0;) {
        const std::size_t cap = buckets_.size() <= 1 ? first_bucket_bytes : bucket_bytes;
        if (buckets_.empty() || (bytes > 0 && bytes + params_[k].nbytes() > cap)) {
            buckets_.emplace_back();
            bytes = 0;
        }
        Bucket& b = buckets_.back();
        bucket_of_[k] = buckets_.size() - 1;
        offset_of_[k] = bytes / sizeof(float);
        b.members.push_back(k);
        bytes += params_[k].numel() * sizeof(float);
    }
    for (Bucket& b : buckets_) {
        std::int64_t n = 0;
        for (std::size_t k : b.members) n += params_[k].numel();
        b.flat = torch::zeros({n}, params_.front().options().dtype(torch::kFloat32));
    }
    for (std::size_t k = 0; k < params_.size(); ++k) {
        if (params_[k].scalar_type() != torch::kFloat32)
            throw Error(ErrorKind::Internal,
                        fmt::format("parameter {} is {}, the gradient buckets hold float32", k,
                                    c10::toString(params_[k].scalar_type())));
        hook_ids_.push_back(params_[k].register_hook(
            [this, k](const torch::Tensor& grad) { on_gradient(k, grad); }));
    }
}

GradientBuckets::~GradientBuckets() {
    for (std::size_t k = 0; k < hook_ids_.size(); ++k) params_[k].remove_hook(hook_ids_[k]);
}

void GradientBuckets::start() {
    for (Bucket& b : buckets_) {
        b.waiting = b.members.size();
        b.started = false;
        b.pending.clear();
    }
    arrived_.assign(params_.size(), false);
    next_to_start_ = 0;
}

void GradientBuckets::on_gradient(std::size_t k, const torch::Tensor& grad) {
    // Autograd runs CPU hooks on the thread that called backward(), one at a time.
    Bucket& b = buckets_[bucket_of_[k]];
    if (arrived_[k]) return;  // a second contribution would need summing; autograd sums first
    arrived_[k] = true;
    b.flat.narrow(0, static_cast<std::int64_t>(offset_of_[k]), grad.numel())
        .copy_(grad.detach().reshape(-1));
    --b.waiting;
    start_ready_buckets();
}

void GradientBuckets::start_ready_buckets() {
    while (next_to_start_ < buckets_.size() && buckets_[next_to_start_].waiting == 0) {
        Bucket& b = buckets_[next_to_start_++];
        b.pending.push_back(world_.all_reduce_sum_async(b.flat));
        b.started = true;
    }
}

double GradientBuckets::finish() {
    if (!world_.distributed()) return 0.0;
    for (std::size_t k = 0; k < params_.size(); ++k) {
        if (arrived_[k]) continue;
        Bucket& b = buckets_[bucket_of_[k]];
        b.flat.narrow(0, static_cast<std::int64_t>(offset_of_[k]), params_[k].numel()).zero_();
        arrived_[k] = true;
        --b.waiting;
    }
    start_ready_buckets();
    const auto t0 = std::chrono::steady_clock::now();
    for (Bucket& b : buckets_)
        for (PendingReduce& p : b.pending) p.wait();
    const double waited =
        std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
    torch::NoGradGuard no_grad;
    const double ranks = static_cast<double>(world_.size());
    for (Bucket& b : buckets_) {
        b.flat.div_(ranks);
        for (std::size_t k : b.members) {
            torch::Tensor& p = params_[k];
            const torch::Tensor mean =
                b.flat.narrow(0, static_cast<std::int64_t>(offset_of_[k]), p.numel())
                    .view(p.sizes());
            if (!p.grad().defined())
                p.mutable_grad() = mean.clone().contiguous(p.suggest_memory_format());
            else
                p.mutable_grad().copy_(mean);
        }
    }
    return waited;
}

}  // namespace boneage::detail
