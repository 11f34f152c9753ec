// A dense layer applied to one input vector with bf16 weights and fp32 sums, on AVX512_BF16
// dot products. At batch 1 a layer whose weights do not fit in cache runs at the speed of
// memory, so halving their bytes nearly halves its time: the first dense layer of the paper's
// flatten head on ResNet-50 at 320 px reads 200 MB in fp32 for each image.
#pragma once

#include <torch/torch.h>

namespace boneage::fast {

// Whether this CPU can run the kernel (AVX512_BF16, detected at run time).
bool bf16_gemv_available();

// w x + b: w a contiguous bf16 matrix (rows x k), x a bf16 vector of k, b an fp32 vector of
// rows; the result in fp32. Every product of two bf16 numbers is exact in fp32, so the only
// rounding is that of the sums.
torch::Tensor bf16_gemv(const torch::Tensor& w, const torch::Tensor& x, const torch::Tensor& b);

}  // namespace boneage::fast
