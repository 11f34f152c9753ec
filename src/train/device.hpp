// Where a run computes: the CPU, or a CUDA device when this build's LibTorch has CUDA and a GPU
// is visible; and the autocast that --precision asks for on that device.
#pragma once

#include <torch/torch.h>

#include <string>

namespace boneage::detail {

struct DeviceChoice {
    torch::Device device{torch::kCPU};
    std::string note;  // why "auto" chose the CPU; empty otherwise
};

// "cpu", "cuda" or "auto" for a process with `local_rank` among the processes of its host,
// given `cuda_devices` visible CUDA devices (0 in a build without CUDA). "cuda" takes device
// local_rank (modulo the count); "auto" takes it when there is one and the CPU otherwise, with
// a note saying so. Throws boneage::UsageError for "cuda" without a device, and for an unknown
// name. A pure function, so it is tested without a GPU.
DeviceChoice choose_device(const std::string& requested, int cuda_devices, int local_rank);

// CUDA devices visible to this process; 0 when LibTorch was built without CUDA.
int cuda_device_count();

// Whether this build found a LibTorch with CUDA (CMake defines BONEAGE_WITH_CUDA).
bool built_with_cuda();

// Autocast for the forward pass of one step: bf16 on the CPU (boneage::Bf16Autocast), bf16 or
// fp16 on a CUDA device; nothing for "fp32". Restores the previous state when it ends.
class TrainingAutocast {
public:
    TrainingAutocast(const std::string& precision, const torch::Device& device);
    ~TrainingAutocast();
    TrainingAutocast(const TrainingAutocast&) = delete;
    TrainingAutocast& operator=(const TrainingAutocast&) = delete;

private:
    bool cpu_ = false, gpu_ = false;
    bool was_enabled_ = false;
    at::ScalarType was_dtype_ = at::kFloat;
};

// fp16's dynamic loss scale (what torch.cuda.amp.GradScaler does): the loss is multiplied by
// scale() before backward; unscale_and_check() divides the gradients back and says whether
// they are all finite. A step with an overflow is skipped and the scale halves; after
// `growth_interval` good steps in a row it doubles.
class LossScale {
public:
    explicit LossScale(bool enabled, double initial = 65536.0, int growth_interval = 2000)
        : enabled_(enabled), scale_(enabled ? initial : 1.0), growth_interval_(growth_interval) {}
    bool enabled() const { return enabled_; }
    double scale() const { return scale_; }
    // Returns true when the optimizer may step.
    bool unscale_and_check(const std::vector<torch::Tensor>& parameters);

private:
    bool enabled_;
    double scale_;
    int growth_interval_;
    int good_steps_ = 0;
};

}  // namespace boneage::detail
