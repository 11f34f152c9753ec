#include "kernels/gemv.hpp"

#include <ATen/Parallel.h>
#include <immintrin.h>

// Without OpenMP at compile time, at::parallel_for (a header template) runs on one thread.
#ifndef _OPENMP
#error "compile with OpenMP (CMakeLists.txt links OpenMP::OpenMP_CXX)"
#endif

#include <cstdint>

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

// Rows [begin, end) of w x, added to y. Two accumulators hide the latency of the multiply-add.
__attribute__((target("avx512f,avx512bf16"))) void bf16_rows(const at::BFloat16* w,
                                                               const at::BFloat16* x,
                                                               std::int64_t k, std::int64_t begin,
                                                               std::int64_t end, float* y) {
    for (std::int64_t r = begin; r < end; ++r) {
        const at::BFloat16* row = w + r * k;
        __m512 a0 = _mm512_setzero_ps(), a1 = _mm512_setzero_ps();
        std::int64_t i = 0;
        for (; i + 64 <= k; i += 64) {
            a0 = _mm512_dpbf16_ps(a0, (__m512bh)_mm512_loadu_si512(row + i),
                                  (__m512bh)_mm512_loadu_si512(x + i));
            a1 = _mm512_dpbf16_ps(a1, (__m512bh)_mm512_loadu_si512(row + i + 32),
                                  (__m512bh)_mm512_loadu_si512(x + i + 32));
        }
        float sum = sum_lanes(_mm512_add_ps(a0, a1));
        for (; i < k; ++i) sum += static_cast<float>(row[i]) * static_cast<float>(x[i]);
        y[r] += sum;
    }
}

__attribute__((target("avx512f"))) void fp32_rows(const float* w, const float* x, std::int64_t k,
                                                  std::int64_t begin, std::int64_t end, float* y) {
    for (std::int64_t r = begin; r < end; ++r) {
        const float* row = w + r * k;
        __m512 a0 = _mm512_setzero_ps(), a1 = _mm512_setzero_ps();
        std::int64_t i = 0;
        for (; i + 32 <= k; i += 32) {
            a0 = _mm512_fmadd_ps(_mm512_loadu_ps(row + i), _mm512_loadu_ps(x + i), a0);
            a1 = _mm512_fmadd_ps(_mm512_loadu_ps(row + i + 16), _mm512_loadu_ps(x + i + 16), a1);
        }
        float sum = sum_lanes(_mm512_add_ps(a0, a1));
        for (; i < k; ++i) sum += row[i] * x[i];
        y[r] += sum;
    }
}

// Rows per task: small layers stay on one thread rather than pay for waking the others.
std::int64_t grain(std::int64_t k) { return std::max<std::int64_t>(1, (1 << 16) / std::max<std::int64_t>(k, 1)); }

}  // namespace

bool bf16_gemv_available() { return has_avx512_bf16(); }

torch::Tensor gemv(const torch::Tensor& w, const torch::Tensor& x, const torch::Tensor& b) {
    const bool bf16 = w.scalar_type() == torch::kBFloat16;
    TORCH_CHECK(w.dim() == 2 && w.is_contiguous() && (bf16 || w.scalar_type() == torch::kFloat32),
                "gemv: the weight must be a contiguous fp32 or bf16 matrix");
    TORCH_CHECK(x.dim() == 1 && x.size(0) == w.size(1) && x.scalar_type() == w.scalar_type(),
                "gemv: the input must be a vector of ", w.size(1), " of the weight's type");
    TORCH_CHECK(b.dim() == 1 && b.size(0) == w.size(0) && b.scalar_type() == torch::kFloat32,
                "gemv: the bias must be an fp32 vector of ", w.size(0));
    TORCH_CHECK(!bf16 || bf16_gemv_available(), "gemv: bf16 weights need AVX512_BF16");
    if (!bf16 && !cpu_features().avx512f) return torch::addmv(b, w, x);
    torch::Tensor xc = x.contiguous();
    torch::Tensor y = b.clone();
    float* yp = y.data_ptr<float>();
    const std::int64_t k = w.size(1);
    at::parallel_for(0, w.size(0), grain(k), [&](std::int64_t begin, std::int64_t end) {
        if (bf16)
            bf16_rows(w.data_ptr<at::BFloat16>(), xc.data_ptr<at::BFloat16>(), k, begin, end, yp);
        else
            fp32_rows(w.data_ptr<float>(), xc.data_ptr<float>(), k, begin, end, yp);
    });
    return y;
}

}  // namespace boneage::fast
