// Synchronised batch norm (PyTorch's SyncBatchNorm) for training on several processes: every
// batch norm of the net normalises with the mean and variance of the whole global batch, summed
// over the ranks, and its backward pass sums the two gradient terms that depend on them the
// same way, so the result is that of one process on the whole batch.
#pragma once

#include <torch/torch.h>

#include "models/batch_norm.hpp"
#include "train/distributed.hpp"

namespace boneage::detail {

// The hook (models/batch_norm.hpp) that makes every batch norm of a forward pass in training
// mode the synchronised one over `world`, which must outlive every backward pass after it.
// Empty for a single-process world: the batch norms are then their own.
models::BatchNormHook sync_batch_norm_hook(World& world);

// The synchronised normalisation of `x` (N x C x H x W) by `bn` in training mode: updates its
// running statistics and batch count as BatchNorm2d does, with the global batch's statistics.
torch::Tensor sync_batch_norm(torch::nn::BatchNorm2dImpl& bn, const torch::Tensor& x,
                              World& world);

}  // namespace boneage::detail
