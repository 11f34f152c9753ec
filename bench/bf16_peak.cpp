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
#include <chrono>
#include <cstdlib>
#include <thread>
#include <vector>

#include "models/gemv.hpp"

namespace {

using Clock = std::chrono::steady_clock;

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
    auto c = torch::matmul(a, b);
    double best = 0.0;
    const auto start = Clock::now();
    while (std::chrono::duration<double>(Clock::now() - start).count() < seconds) {
        const auto t0 = Clock::now();
        c = torch::matmul(a, b);
        const double s = std::chrono::duration<double>(Clock::now() - t0).count();
        best = std::max(best, 2.0 * n * n * static_cast<double>(n) / s / 1e9);
    }
    return best;
}

// GB/s of the fast path's matrix-vector kernel on the flatten head's first layer, its median
// call after a warm-up (weights far larger than any cache, so it reads memory each time).
double head_stream_rate(double seconds) {
    torch::NoGradGuard no_grad;
    const auto w = (torch::randn({256, 204800}) * 0.01).to(torch::kBFloat16);
    const auto x = torch::randn({204800}).to(torch::kBFloat16);
    const auto b = torch::zeros({256});
    auto y = boneage::fast::gemv(w, x, b);
    std::vector<double> ms;
    const auto start = Clock::now();
    while (std::chrono::duration<double>(Clock::now() - start).count() < seconds) {
        const auto t0 = Clock::now();
        y = boneage::fast::gemv(w, x, b);
        ms.push_back(std::chrono::duration<double, std::milli>(Clock::now() - t0).count());
    }
    std::nth_element(ms.begin(), ms.begin() + ms.size() / 2, ms.end());
    const double bytes = static_cast<double>(w.numel()) * 2.0;
    return bytes / (ms[ms.size() / 2] / 1e3) / 1e9;
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
    const std::int64_t count = 256 * 204800 * 2 / sizeof(float);
    const auto buffer = torch::ones({count});
    const float* data = buffer.data_ptr<float>();
    std::vector<double> ms;
    double total = 0.0;
    const auto start = Clock::now();
    while (std::chrono::duration<double>(Clock::now() - start).count() < seconds) {
        std::vector<float> sums(at::get_num_threads(), 0.0f);
        const auto t0 = Clock::now();
        at::parallel_for(0, count / 16, 1 << 14, [&](std::int64_t begin, std::int64_t end) {
            sums[at::get_thread_num()] += sum_blocks(data, begin, end);
        });
        ms.push_back(std::chrono::duration<double, std::milli>(Clock::now() - t0).count());
        for (float v : sums) total += v;
    }
    std::nth_element(ms.begin(), ms.begin() + ms.size() / 2, ms.end());
    const double rate =
        static_cast<double>(count) * sizeof(float) / (ms[ms.size() / 2] / 1e3) / 1e9;
    return total > 0.0 ? rate : 0.0;  // the sums are used, so the reads are not removed
}

}  // namespace

int main(int argc, char** argv) {
    const double seconds = argc > 1 ? std::atof(argv[1]) : 3.0;
    if (!boneage::has_avx512_bf16()) {
        fmt::print("this CPU has no AVX512-BF16; nothing to measure\n");
        return 1;
    }
    const int cores = static_cast<int>(std::thread::hardware_concurrency());
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
               256.0 * 204800 * 2 / 1e9 / gbs * 1e3);
    const double plain = read_rate(seconds);
    fmt::print("| plain read of 105 MB | {} | {:.1f} | {:.2f} |\n", cores, plain,
               256.0 * 204800 * 2 / 1e9 / plain * 1e3);
    return 0;
}
