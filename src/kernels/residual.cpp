#include "kernels/residual.hpp"

#include <ATen/Parallel.h>
#include <immintrin.h>

// Without OpenMP at compile time, at::parallel_for (a header template) runs on one thread.
#ifndef _OPENMP
#error "compile with OpenMP (CMakeLists.txt links OpenMP::OpenMP_CXX)"
#endif

#include <algorithm>
#include <boneage/cpu_features.hpp>
#include <cstdint>

namespace boneage::fast {

namespace {

// Elements per task (512 KB of bf16): the sum is bound by memory, and a second thread pays
// only on the larger blocks.
constexpr std::int64_t kGrain = 1 << 18;

// The zero-masked forms of the intrinsics below, with every lane kept: the plain ones merge
// into an undefined register, which GCC 12 reports as maybe uninitialised.
constexpr __mmask16 kAll = 0xFFFF;

// The maximum takes zero first, so a NaN passes through as it does LibTorch's ReLU.
__attribute__((target("avx512f"))) void fp32_add_relu(float* out, const float* in,
                                                      std::int64_t begin, std::int64_t end) {
    const __m512 zero = _mm512_setzero_ps();
    std::int64_t i = begin;
    for (; i + 16 <= end; i += 16)
        _mm512_storeu_ps(out + i,
                         _mm512_maskz_max_ps(kAll, zero,
                                             _mm512_maskz_add_ps(kAll, _mm512_loadu_ps(out + i),
                                                                 _mm512_loadu_ps(in + i))));
    for (; i < end; ++i) out[i] = std::max(out[i] + in[i], 0.0f);
}

__attribute__((target("avx512f"))) inline __m512 widen(const at::BFloat16* p) {
    const __m256i half = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p));
    return _mm512_castsi512_ps(
        _mm512_maskz_slli_epi32(kAll, _mm512_maskz_cvtepu16_epi32(kAll, half), 16));
}

// bf16 is widened to fp32 (exact), summed, clamped at zero and rounded back to nearest even
// with the AVX512_BF16 conversion: what LibTorch's bf16 add does, one element at a time.
__attribute__((target("avx512f,avx512bf16"))) void bf16_add_relu(at::BFloat16* out,
                                                                 const at::BFloat16* in,
                                                                 std::int64_t begin,
                                                                 std::int64_t end) {
    const __m512 zero = _mm512_setzero_ps();
    std::int64_t i = begin;
    for (; i + 16 <= end; i += 16) {
        const __m512 sum = _mm512_maskz_max_ps(
            kAll, zero, _mm512_maskz_add_ps(kAll, widen(out + i), widen(in + i)));
        _mm256_storeu_si256(reinterpret_cast<__m256i*>(out + i), (__m256i)_mm512_cvtneps_pbh(sum));
    }
    for (; i < end; ++i)
        out[i] =
            at::BFloat16(std::max(static_cast<float>(out[i]) + static_cast<float>(in[i]), 0.0f));
}

bool fusable(const torch::Tensor& out, const torch::Tensor& shortcut) {
    if (out.scalar_type() != shortcut.scalar_type() || out.sizes() != shortcut.sizes() ||
        out.strides() != shortcut.strides() || !out.is_non_overlapping_and_dense())
        return false;
    if (out.scalar_type() == torch::kFloat32) return cpu_features().avx512f;
    if (out.scalar_type() == torch::kBFloat16) return has_avx512_bf16();
    return false;
}

}  // namespace

torch::Tensor& add_relu_(torch::Tensor& out, const torch::Tensor& shortcut) {
    if (!fusable(out, shortcut)) return out.add_(shortcut).relu_();
    const std::int64_t n = out.numel();
    // Same strides and dense: both are the same permutation of one flat array.
    if (out.scalar_type() == torch::kFloat32) {
        float* o = out.data_ptr<float>();
        const float* s = shortcut.data_ptr<float>();
        at::parallel_for(0, n, kGrain,
                         [&](std::int64_t b, std::int64_t e) { fp32_add_relu(o, s, b, e); });
    } else {
        auto* o = out.data_ptr<at::BFloat16>();
        const auto* s = shortcut.data_ptr<at::BFloat16>();
        at::parallel_for(0, n, kGrain,
                         [&](std::int64_t b, std::int64_t e) { bf16_add_relu(o, s, b, e); });
    }
    return out;
}

}  // namespace boneage::fast
