// A dense layer applied to one input vector, or to each of a batch in the very order of sums it
// gets alone, on the OpenMP threads the convolutions use and without BLAS. OpenBLAS's worker
// threads keep spinning (sched_yield) after each call and, on a machine with few cores, take
// them from the next image's convolutions. bf16 weights (with AVX512_BF16 dot products and fp32
// sums) halve the bytes a layer too large for any cache reads: the first dense layer of the
// paper's flatten head on ResNet-50 at 320 px is 200 MB in fp32.
#pragma once

#include <torch/torch.h>

namespace boneage::fast {

// Whether this CPU runs bf16 weights natively here (AVX512_BF16, detected at run time).
bool bf16_gemv_available();

// w x + b: w a contiguous fp32 or bf16 matrix (rows x k), x a vector of k of the same type,
// b an fp32 vector of rows; the result in fp32. Every product of two bf16 numbers is exact in
// fp32, so with bf16 the only rounding is that of the sums.
torch::Tensor gemv(const torch::Tensor& w, const torch::Tensor& x, const torch::Tensor& b);

// gemv on each row of x (n x k, of w's type): n x rows in fp32, each row the same bits gemv
// gives for that row alone, so an image's answer does not depend on the batch it came in. The
// weight is read from memory once per call, not once per row of x.
torch::Tensor gemv_rows(const torch::Tensor& w, const torch::Tensor& x, const torch::Tensor& b);

}  // namespace boneage::fast
