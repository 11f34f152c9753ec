// Device choice and mixed precision for training (device.hpp).
#include "train/device.hpp"

#include <fmt/format.h>

#include <ATen/autocast_mode.h>
#include <boneage/error.hpp>

namespace boneage::detail {

DeviceChoice choose_device(const std::string& requested, int cuda_devices, int local_rank) {
    DeviceChoice c;
    if (requested == "cpu") return c;
    if (requested != "cuda" && requested != "auto")
        throw UsageError(fmt::format("unknown device '{}' (cpu, cuda or auto)", requested));
    if (cuda_devices <= 0) {
        if (requested == "cuda")
            throw UsageError("--device cuda: no CUDA device is visible (or this build's "
                             "LibTorch has no CUDA); use --device cpu or auto");
        c.note = "no CUDA device (or a LibTorch without CUDA): training on the CPU";
        return c;
    }
    c.device = torch::Device(torch::kCUDA,
                             static_cast<c10::DeviceIndex>(std::max(0, local_rank) % cuda_devices));
    return c;
}

int cuda_device_count() {
    return torch::cuda::is_available() ? static_cast<int>(torch::cuda::device_count()) : 0;
}

bool built_with_cuda() {
#ifdef BONEAGE_WITH_CUDA
    return true;
#else
    return false;
#endif
}

TrainingAutocast::TrainingAutocast(const std::string& precision, const torch::Device& device) {
    if (precision == "fp32") return;
    if (device.is_cuda()) {
        gpu_ = true;
        was_enabled_ = at::autocast::is_enabled();
        was_dtype_ = at::autocast::get_autocast_gpu_dtype();
        at::autocast::set_autocast_gpu_dtype(precision == "fp16" ? at::kHalf : at::kBFloat16);
        at::autocast::set_enabled(true);
    } else {
        cpu_ = true;
        was_enabled_ = at::autocast::is_cpu_enabled();
        was_dtype_ = at::autocast::get_autocast_cpu_dtype();
        at::autocast::set_autocast_cpu_dtype(at::kBFloat16);
        at::autocast::set_cpu_enabled(true);
    }
}

TrainingAutocast::~TrainingAutocast() {
    if (gpu_) {
        at::autocast::set_enabled(was_enabled_);
        at::autocast::set_autocast_gpu_dtype(was_dtype_);
    }
    if (cpu_) {
        at::autocast::set_cpu_enabled(was_enabled_);
        at::autocast::set_autocast_cpu_dtype(was_dtype_);
    }
    if (gpu_ || cpu_) at::autocast::clear_cache();
}

bool LossScale::unscale_and_check(const std::vector<torch::Tensor>& parameters) {
    if (!enabled_) return true;
    torch::NoGradGuard no_grad;
    bool finite = true;
    for (const torch::Tensor& p : parameters) {
        if (!p.grad().defined()) continue;
        p.grad().div_(scale_);
        if (finite && !torch::isfinite(p.grad()).all().item<bool>()) finite = false;
    }
    if (!finite) {
        scale_ = std::max(1.0, scale_ / 2.0);
        good_steps_ = 0;
        return false;
    }
    if (++good_steps_ >= growth_interval_) {
        scale_ *= 2.0;
        good_steps_ = 0;
    }
    return true;
}

}  // namespace boneage::detail
