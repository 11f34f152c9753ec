// The end of ResNet-50's sixteen residual blocks at 320 px (shortcut added, ReLU), bf16
// channels-last as the fast path holds them: LibTorch's add_ then relu_ against the one-pass
// kernel (src/kernels/residual.cpp), median ms per pass over all sixteen blocks.
//
//   build/bench-residual-end [BATCH] [REPS]
#include <ATen/Parallel.h>
#include <fmt/format.h>
#include <torch/torch.h>

#include <algorithm>
#include <boneage/cpu_features.hpp>
#include <boneage/parallel.hpp>
#include <chrono>
#include <cstdlib>
#include <functional>
#include <utility>
#include <vector>

#include "kernels/residual.hpp"

namespace {

double median_ms(int reps, const std::function<void()>& pass) {
    for (int i = 0; i < 3; ++i) pass();
    std::vector<double> ms;
    for (int i = 0; i < reps; ++i) {
        const auto t0 = std::chrono::steady_clock::now();
        pass();
        ms.push_back(
            std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0)
                .count());
    }
    std::nth_element(ms.begin(), ms.begin() + reps / 2, ms.end());
    return ms[reps / 2];
}

}  // namespace

int main(int argc, char** argv) {
    const std::int64_t batch = argc > 1 ? std::atoll(argv[1]) : 1;
    const int reps = argc > 2 ? std::atoi(argv[2]) : 200;
    if (!boneage::has_avx512_bf16()) {
        fmt::print("this CPU has no AVX512_BF16: the kernel would fall back to LibTorch\n");
        return 1;
    }
    at::set_num_threads(boneage::default_thread_count());  // as boneage does
    torch::NoGradGuard no_grad;
    // Blocks per stage of ResNet-50 and their outputs at 320 px: channels, side.
    const std::vector<std::tuple<int, std::int64_t, std::int64_t>> stages = {
        {3, 256, 80}, {4, 512, 40}, {6, 1024, 20}, {3, 2048, 10}};
    std::vector<std::pair<torch::Tensor, torch::Tensor>> blocks;
    for (const auto& [count, channels, side] : stages)
        for (int i = 0; i < count; ++i) {
            auto make = [&] {
                return torch::randn({batch, channels, side, side})
                    .to(torch::kBFloat16)
                    .contiguous(torch::MemoryFormat::ChannelsLast);
            };
            blocks.emplace_back(make(), make());
        }
    const double libtorch = median_ms(reps, [&] {
        for (auto& [out, shortcut] : blocks) out.add_(shortcut).relu_();
    });
    const double fused = median_ms(reps, [&] {
        for (auto& [out, shortcut] : blocks) boneage::fast::add_relu_(out, shortcut);
    });
    fmt::print(
        "batch {}, {} threads, median of {}: add_ + relu_ {:.3f} ms, one pass {:.3f} ms per "
        "forward\n",
        batch, at::get_num_threads(), reps, libtorch, fused);
    return 0;
}
