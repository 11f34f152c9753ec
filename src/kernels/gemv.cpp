#include "kernels/gemv.hpp"

#include <ATen/Parallel.h>
#include <immintrin.h>

// Without OpenMP at compile time, at::parallel_for (a header template) runs on one thread.
#ifndef _OPENMP
#error "compile with OpenMP (CMakeLists.txt links OpenMP::OpenMP_CXX)"
#endif

#include <algorithm>
#include <cstdint>
#include <vector>

#include <boneage/cpu_features.hpp>

namespace boneage::fast {

namespace {

// Lanes summed by hand: GCC 12 warns on its own reduction's undefined upper halves.
__attribute__((target("avx512f"))) float sum_lanes(__m512 v) {
    alignas(64) float lanes[16];
    _mm512_store_ps(lanes, v);
    float sum = 0.0f;
    for (float lane : lanes) sum += lane;
    return sum;
}

// Rows of w that share one pass over a step of the inputs, and inputs that share one pass over
// a step of those rows: their 8 x 16 x 2 accumulators (16 KB) stay in the first-level cache, the
// weight streams from memory once per 16 inputs, and the inputs' step is reread from cache.
constexpr std::int64_t kTileRows = 8;
constexpr std::int64_t kTileInputs = 16;

// y[j * rows_y + r] += w[r] . x[j] for the rows [begin, end) of w (each k long) and the n inputs
// x[j]. Each (row, input) sum takes one fixed order, whatever n and the tiling: two accumulators
// over the halves of each 64-element step, their lanes summed in order, then the tail.
__attribute__((target("avx512f,avx512bf16"))) void bf16_rows(const at::BFloat16* w,
                                                               const at::BFloat16* x,
                                                               std::int64_t n, std::int64_t k,
                                                               std::int64_t begin, std::int64_t end,
                                                               float* y, std::int64_t rows_y) {
    __m512 acc[kTileRows][kTileInputs][2];
    for (std::int64_t r0 = begin; r0 < end; r0 += kTileRows) {
        const std::int64_t rows = std::min(kTileRows, end - r0);
        for (std::int64_t j0 = 0; j0 < n; j0 += kTileInputs) {
            const std::int64_t inputs = std::min(kTileInputs, n - j0);
            for (std::int64_t r = 0; r < rows; ++r)
                for (std::int64_t j = 0; j < inputs; ++j)
                    acc[r][j][0] = acc[r][j][1] = _mm512_setzero_ps();
            std::int64_t i = 0;
            for (; i + 64 <= k; i += 64) {
                for (std::int64_t r = 0; r < rows; ++r) {
                    const at::BFloat16* row = w + (r0 + r) * k + i;
                    const __m512bh w0 = (__m512bh)_mm512_loadu_si512(row);
                    const __m512bh w1 = (__m512bh)_mm512_loadu_si512(row + 32);
                    for (std::int64_t j = 0; j < inputs; ++j) {
                        const at::BFloat16* xj = x + (j0 + j) * k + i;
                        acc[r][j][0] =
                            _mm512_dpbf16_ps(acc[r][j][0], w0, (__m512bh)_mm512_loadu_si512(xj));
                        acc[r][j][1] = _mm512_dpbf16_ps(acc[r][j][1], w1,
                                                        (__m512bh)_mm512_loadu_si512(xj + 32));
                    }
                }
            }
            for (std::int64_t r = 0; r < rows; ++r) {
                const at::BFloat16* row = w + (r0 + r) * k;
                for (std::int64_t j = 0; j < inputs; ++j) {
                    const at::BFloat16* xj = x + (j0 + j) * k;
                    float sum = sum_lanes(_mm512_add_ps(acc[r][j][0], acc[r][j][1]));
                    for (std::int64_t t = i; t < k; ++t)
                        sum += static_cast<float>(row[t]) * static_cast<float>(xj[t]);
                    y[(j0 + j) * rows_y + r0 + r] += sum;
                }
            }
        }
    }
}

// As bf16_rows, for fp32: steps of 32, two accumulators of 16.
__attribute__((target("avx512f"))) void fp32_rows(const float* w, const float* x, std::int64_t n,
                                                  std::int64_t k, std::int64_t begin,
                                                  std::int64_t end, float* y, std::int64_t rows_y) {
    __m512 acc[kTileRows][kTileInputs][2];
    for (std::int64_t r0 = begin; r0 < end; r0 += kTileRows) {
        const std::int64_t rows = std::min(kTileRows, end - r0);
        for (std::int64_t j0 = 0; j0 < n; j0 += kTileInputs) {
            const std::int64_t inputs = std::min(kTileInputs, n - j0);
            for (std::int64_t r = 0; r < rows; ++r)
                for (std::int64_t j = 0; j < inputs; ++j)
                    acc[r][j][0] = acc[r][j][1] = _mm512_setzero_ps();
            std::int64_t i = 0;
            for (; i + 32 <= k; i += 32) {
                for (std::int64_t r = 0; r < rows; ++r) {
                    const float* row = w + (r0 + r) * k + i;
                    const __m512 w0 = _mm512_loadu_ps(row);
                    const __m512 w1 = _mm512_loadu_ps(row + 16);
                    for (std::int64_t j = 0; j < inputs; ++j) {
                        const float* xj = x + (j0 + j) * k + i;
                        acc[r][j][0] = _mm512_fmadd_ps(w0, _mm512_loadu_ps(xj), acc[r][j][0]);
                        acc[r][j][1] = _mm512_fmadd_ps(w1, _mm512_loadu_ps(xj + 16), acc[r][j][1]);
                    }
                }
            }
            for (std::int64_t r = 0; r < rows; ++r) {
                const float* row = w + (r0 + r) * k;
                for (std::int64_t j = 0; j < inputs; ++j) {
                    const float* xj = x + (j0 + j) * k;
                    float sum = sum_lanes(_mm512_add_ps(acc[r][j][0], acc[r][j][1]));
                    for (std::int64_t t = i; t < k; ++t) sum += row[t] * xj[t];
                    y[(j0 + j) * rows_y + r0 + r] += sum;
                }
            }
        }
    }
}

// Rows per task: small layers stay on one thread rather than pay for waking the others.
std::int64_t grain(std::int64_t k) { return std::max<std::int64_t>(1, (1 << 16) / std::max<std::int64_t>(k, 1)); }

}  // namespace

bool bf16_gemv_available() { return has_avx512_bf16(); }

torch::Tensor gemv_rows(const torch::Tensor& w, const torch::Tensor& x, const torch::Tensor& b) {
    const bool bf16 = w.scalar_type() == torch::kBFloat16;
    TORCH_CHECK(w.dim() == 2 && w.is_contiguous() && (bf16 || w.scalar_type() == torch::kFloat32),
                "gemv: the weight must be a contiguous fp32 or bf16 matrix");
    TORCH_CHECK(x.dim() == 2 && x.size(1) == w.size(1) && x.scalar_type() == w.scalar_type(),
                "gemv: the inputs must be rows of ", w.size(1), " of the weight's type, got ",
                x.sizes(), " ", x.scalar_type());
    TORCH_CHECK(b.dim() == 1 && b.size(0) == w.size(0) && b.scalar_type() == torch::kFloat32,
                "gemv: the bias must be an fp32 vector of ", w.size(0));
    TORCH_CHECK(!bf16 || bf16_gemv_available(), "gemv: bf16 weights need AVX512_BF16");
    const std::int64_t n = x.size(0), rows = w.size(0), k = w.size(1);
    if (!bf16 && !cpu_features().avx512f) {
        // One matrix-vector product per input, so that here too the batch changes nothing.
        std::vector<torch::Tensor> out;
        for (std::int64_t j = 0; j < n; ++j) out.push_back(torch::addmv(b, w, x[j]));
        return n ? torch::stack(out) : torch::empty({0, rows});
    }
    torch::Tensor xc = x.contiguous();
    torch::Tensor y = b.unsqueeze(0).repeat({n, 1});
    float* yp = y.data_ptr<float>();
    at::parallel_for(0, rows, grain(k), [&](std::int64_t begin, std::int64_t end) {
        if (bf16)
            bf16_rows(w.data_ptr<at::BFloat16>(), xc.data_ptr<at::BFloat16>(), n, k, begin, end,
                      yp, rows);
        else
            fp32_rows(w.data_ptr<float>(), xc.data_ptr<float>(), n, k, begin, end, yp, rows);
    });
    return y;
}

torch::Tensor gemv(const torch::Tensor& w, const torch::Tensor& x, const torch::Tensor& b) {
    TORCH_CHECK(x.dim() == 1, "gemv: the input must be a vector, got ", x.sizes());
    return gemv_rows(w, x.unsqueeze(0), b)[0];
}

}  // namespace boneage::fast
