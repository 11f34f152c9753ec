// Channels-last tensors that LibTorch, and oneDNN behind it, read as channels-last.
//
//   boneage::use_channels_last(*net);                  // every convolution weight
//   torch::Tensor x = boneage::channels_last(images);  // N x 1 x H x W
#pragma once

#include <torch/torch.h>

namespace boneage {

// A channels-last copy of a 4-d tensor whose strides say so even where a dimension of size one
// makes channels-first and channels-last the same bytes (one input channel, 1x1 kernels).
// LibTorch reads such tensors as channels-first, and oneDNN then packs weights for, and runs,
// its blocked layout instead, reordering activations and weights on every call.
torch::Tensor channels_last(const torch::Tensor& t);

// Every 4-d parameter of `module` (its convolution weights) made channels-last in place, as above.
void use_channels_last(torch::nn::Module& module);

}  // namespace boneage
