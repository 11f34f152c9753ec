// The end of a residual block: the shortcut added to the block's output and the ReLU, in one
// pass over memory. LibTorch runs them as two passes (add_, then relu_), and at batch 1 the
// sixteen blocks of ResNet-50 spend 2-3 ms of a 50 ms pass on them here (bench/residual_end.cpp).
#pragma once

#include <torch/torch.h>

namespace boneage::fast {

// out = max(out + shortcut, 0), in place. Both tensors of the same shape, dtype (fp32 or bf16)
// and strides, dense; otherwise, or without AVX-512, LibTorch's add_ and relu_. The result is
// the same bits as LibTorch's: the ReLU commutes with rounding the sum to the dtype.
torch::Tensor& add_relu_(torch::Tensor& out, const torch::Tensor& shortcut);

}  // namespace boneage::fast
