#include "models/bf16_gemv.hpp"

#include <ATen/Parallel.h>
#include <immintrin.h>

#include <cstdint>
#include <cstring>

#include <boneage/cpu_features.hpp>

namespace boneage::fast {

namespace {

float bf16_to_float(std::uint16_t v) {
    const std::uint32_t bits = static_cast<std::uint32_t>(v) << 16;
    float f;
    std::memcpy(&f, &bits, sizeof f);
    return f;
}

// Rows [begin, end) of w x. Two accumulators of 16 lanes, each fed 32 products per step,
// hide the latency of the dot-product instruction.
__attribute__((target("avx512f,avx512bf16"))) void dot_rows(const std::uint16_t* w,
                                                              const std::uint16_t* x,
                                                              std::int64_t k, std::int64_t begin,
                                                              std::int64_t end, float* y) {
    for (std::int64_t r = begin; r < end; ++r) {
        const std::uint16_t* row = w + r * k;
        __m512 a0 = _mm512_setzero_ps(), a1 = _mm512_setzero_ps();
        std::int64_t i = 0;
        for (; i + 64 <= k; i += 64) {
            a0 = _mm512_dpbf16_ps(a0, (__m512bh)_mm512_loadu_si512(row + i),
                                  (__m512bh)_mm512_loadu_si512(x + i));
            a1 = _mm512_dpbf16_ps(a1, (__m512bh)_mm512_loadu_si512(row + i + 32),
                                  (__m512bh)_mm512_loadu_si512(x + i + 32));
        }
        // Lanes summed by hand: GCC 12 warns on its own reduction's undefined upper halves.
        alignas(64) float lanes[16];
        _mm512_store_ps(lanes, _mm512_add_ps(a0, a1));
        float sum = 0.0f;
        for (float lane : lanes) sum += lane;
        for (; i < k; ++i) sum += bf16_to_float(row[i]) * bf16_to_float(x[i]);
        y[r] += sum;
    }
}

}  // namespace

bool bf16_gemv_available() { return has_avx512_bf16(); }

torch::Tensor bf16_gemv(const torch::Tensor& w, const torch::Tensor& x, const torch::Tensor& b) {
    TORCH_CHECK(bf16_gemv_available(), "bf16_gemv needs AVX512_BF16");
    TORCH_CHECK(w.dim() == 2 && w.scalar_type() == torch::kBFloat16 && w.is_contiguous(),
                "bf16_gemv: the weight must be a contiguous bf16 matrix");
    TORCH_CHECK(x.dim() == 1 && x.size(0) == w.size(1) && x.scalar_type() == torch::kBFloat16,
                "bf16_gemv: the input must be a bf16 vector of ", w.size(1));
    TORCH_CHECK(b.dim() == 1 && b.size(0) == w.size(0) && b.scalar_type() == torch::kFloat32,
                "bf16_gemv: the bias must be an fp32 vector of ", w.size(0));
    torch::Tensor xc = x.contiguous();
    torch::Tensor y = b.clone();
    const auto* wp = reinterpret_cast<const std::uint16_t*>(w.data_ptr<at::BFloat16>());
    const auto* xp = reinterpret_cast<const std::uint16_t*>(xc.data_ptr<at::BFloat16>());
    float* yp = y.data_ptr<float>();
    const std::int64_t k = w.size(1);
    at::parallel_for(0, w.size(0), 1, [&](std::int64_t begin, std::int64_t end) {
        dot_rows(wp, xp, k, begin, end, yp);
    });
    return y;
}

}  // namespace boneage::fast
