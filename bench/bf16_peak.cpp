// The ceilings the bf16 fast path runs under on this CPU: the AVX512-BF16 dot-product
// instruction in a loop with no memory traffic (per core and over the cores) and oneDNN's bf16
// matrix product on a large square through LibTorch, in GFLOP/s; and the rate at which the
// first dense layer of ResNet-50's flatten head (204,800 -> 256, bf16: 105 MB, read once per
// image) streams from memory, against a plain read of as many bytes, in GB/s.
// docs/PERFORMANCE.md sets the convolutions' own rates (from oneDNN's log) against these.
//
//   build/bench-bf16-peak [SECONDS]
#include <ATen/Parallel.h>
#include <fmt/format.h>
#include <immintrin.h>
#include <torch/torch.h>

#include <algorithm>
#include <atomic>
#include <boneage/cpu_features.hpp>
#include <boneage/parallel.hpp>
#include <chrono>
#include <cstdlib>
#include <thread>
#include <vector>

#include "kernels/gemv.hpp"

namespace {

using Clock = std::chrono::steady_clock;

// The flatten head's first layer of ResNet-50 at 320 px: 204,800 -> 256 in bf16.
constexpr std::int64_t kHeadRows = 256, kHeadInputs = 204800;
constexpr double kHeadBytes = kHeadRows * kHeadInputs * 2.0;

// Milliseconds of each call of `fn` made for `seconds`, after one untimed call.
template <class F>
std::vector<double> call_ms(double seconds, F&& fn) {
    fn();
    std::vector<double> ms;
    const auto start = Clock::now();
    while (std::chrono::duration<double>(Clock::now() - start).count() < seconds) {
        const auto t0 = Clock::now();
        fn();
        ms.push_back(std::chrono::duration<double, std::milli>(Clock::now() - t0).count());
    }
    return ms;
}

double median(std::vector<double> v) {
    std::nth_element(v.begin(), v.begin() + v.size() / 2, v.end());
    return v[v.size() / 2];
}

// Twelve independent accumulators hide the instruction's latency; each instruction does 16
// lanes x 2 products x (multiply + add) = 64 floating-point operations.
__attribute__((target("avx512f,avx512bf16"))) double dot_loop(std::int64_t iterations) {
    __m512bh a = (__m512bh)_mm512_set1_epi16(0x3f80);  // bf16 1.0
    __m512bh b = (__m512bh)_mm512_set1_epi16(0x3c00);  // bf16 2^-7
    __m512 acc[12];
    for (auto& v : acc) v = _mm512_setzero_ps();
    for (std::int64_t i = 0; i < iterations; ++i)
        for (auto& v : acc) v = _mm512_dpbf16_ps(v, a, b);
    __m512 sum = acc[0];
    for (int k = 1; k < 12; ++k) sum = _mm512_add_ps(sum, acc[k]);
    return _mm512_reduce_add_ps(sum);  // used, so the loop is not removed
}

// GFLOP/s of the dot-product loop on `threads` threads at once.
double instruction_peak(int threads, double seconds) {
    const std::int64_t iterations = 2'000'000;
    std::atomic<double> sink{0.0};
    std::vector<double> rates(threads);
    std::vector<std::thread> pool;
    for (int t = 0; t < threads; ++t)
        pool.emplace_back([&, t] {
            const auto start = Clock::now();
            std::int64_t done = 0;
            double s = 0.0;
            while (std::chrono::duration<double>(Clock::now() - start).count() < seconds) {
                s += dot_loop(iterations);
                done += iterations;
            }
            const double elapsed = std::chrono::duration<double>(Clock::now() - start).count();
            rates[t] = static_cast<double>(done) * 12 * 64 / elapsed / 1e9;
            sink = sink + s;
        });
    for (auto& th : pool) th.join();
    double total = 0.0;
    for (double r : rates) total += r;
    return total + 0.0 * sink;
}

// GFLOP/s of oneDNN's bf16 matrix product (LibTorch's at::matmul) on n x n x n, the best of
// a few calls after a warm-up.
double matmul_rate(int n, double seconds) {
    torch::NoGradGuard no_grad;
    const auto a = torch::randn({n, n}).to(torch::kBFloat16);
    const auto b = torch::randn({n, n}).to(torch::kBFloat16);
    const auto ms = call_ms(seconds, [&] { torch::matmul(a, b); });
    return 2.0 * n * n * static_cast<double>(n) / *std::min_element(ms.begin(), ms.end()) / 1e6;
}

// GB/s of the fast path's matrix-vector kernel on the flatten head's first layer, its median
// call after a warm-up (weights far larger than any cache, so it reads memory each time).
double head_stream_rate(double seconds) {
    torch::NoGradGuard no_grad;
    const auto w = (torch::randn({kHeadRows, kHeadInputs}) * 0.01).to(torch::kBFloat16);
    const auto x = torch::randn({kHeadInputs}).to(torch::kBFloat16);
    const auto b = torch::zeros({kHeadRows});
    return kHeadBytes / median(call_ms(seconds, [&] { boneage::fast::gemv(w, x, b); })) / 1e6;
}

// The floats of 16-float blocks [begin, end), summed with 512-bit loads.
__attribute__((target("avx512f"))) float sum_blocks(const float* data, std::int64_t begin,
                                                    std::int64_t end) {
    __m512 acc = _mm512_setzero_ps();
    for (std::int64_t i = begin; i < end; ++i)
        acc = _mm512_add_ps(acc, _mm512_loadu_ps(data + 16 * i));
    alignas(64) float lanes[16];
    _mm512_store_ps(lanes, acc);
    float sum = 0.0f;
    for (float lane : lanes) sum += lane;
    return sum;
}

// GB/s of a plain read of the same 105 MB, split over the threads as the kernel splits its
// rows: the pace the memory allows the head's layer.
double read_rate(double seconds) {
    const std::int64_t count = static_cast<std::int64_t>(kHeadBytes) / sizeof(float);
    const auto buffer = torch::ones({count});
    const float* data = buffer.data_ptr<float>();
    double total = 0.0;
    const auto ms = call_ms(seconds, [&] {
        std::vector<float> sums(at::get_num_threads(), 0.0f);
        at::parallel_for(0, count / 16, 1 << 14, [&](std::int64_t begin, std::int64_t end) {
            sums[at::get_thread_num()] += sum_blocks(data, begin, end);
        });
        for (float v : sums) total += v;
    });
    const double rate = kHeadBytes / median(ms) / 1e6;
    return total > 0.0 ? rate : 0.0;  // the sums are used, so the reads are not removed
}

}  // namespace

int main(int argc, char** argv) {
    const double seconds = argc > 1 ? std::atof(argv[1]) : 3.0;
    if (!boneage::has_avx512_bf16()) {
        fmt::print("this CPU has no AVX512-BF16; nothing to measure\n");
        return 1;
    }
    const int cores = boneage::default_thread_count();
    fmt::print("| measure | threads | GFLOP/s |\n| --- | ---: | ---: |\n");
    fmt::print("| vdpbf16ps loop | 1 | {:.1f} |\n", instruction_peak(1, seconds));
    fmt::print("| vdpbf16ps loop | {} | {:.1f} |\n", cores, instruction_peak(cores, seconds));
    for (int threads : {1, cores}) {
        at::set_num_threads(threads);
        fmt::print("| oneDNN bf16 matmul 2048^3 | {} | {:.1f} |\n", threads,
                   matmul_rate(2048, seconds));
    }
    at::set_num_threads(cores);
    const double gbs = head_stream_rate(seconds);
    fmt::print("\n| measure | threads | GB/s | ms per image |\n| --- | ---: | ---: | ---: |\n");
    fmt::print("| flatten head's first layer, bf16 (105 MB) | {} | {:.1f} | {:.2f} |\n", cores, gbs,
               kHeadBytes / gbs / 1e6);
    const double plain = read_rate(seconds);
    fmt::print("| plain read of 105 MB | {} | {:.1f} | {:.2f} |\n", cores, plain,
               kHeadBytes / plain / 1e6);
    return 0;
}
