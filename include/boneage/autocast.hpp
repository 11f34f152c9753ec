// bf16 autocast on the CPU for one scope, as inference (fast_path.hpp) and training
// (train.hpp) use it: matrix products and convolutions in bf16, everything else as it was.
//
//   { boneage::Bf16Autocast bf16(enabled);  y = net->forward(x, sex); }   // y may be bf16
#pragma once

#include <ATen/autocast_mode.h>

namespace boneage {

// Turns CPU autocast to bf16 on for its lifetime when `enabled`, then restores the previous
// state (also when the scope is left by an exception) and drops autocast's cast weights.
class Bf16Autocast {
public:
    explicit Bf16Autocast(bool enabled = true)
        : enabled_(enabled),
          was_enabled_(at::autocast::is_cpu_enabled()),
          was_dtype_(at::autocast::get_autocast_cpu_dtype()) {
        if (!enabled_) return;
        at::autocast::set_autocast_cpu_dtype(at::kBFloat16);
        at::autocast::set_cpu_enabled(true);
    }
    ~Bf16Autocast() {
        if (!enabled_) return;
        at::autocast::set_cpu_enabled(was_enabled_);
        at::autocast::set_autocast_cpu_dtype(was_dtype_);
        at::autocast::clear_cache();
    }
    Bf16Autocast(const Bf16Autocast&) = delete;
    Bf16Autocast& operator=(const Bf16Autocast&) = delete;

private:
    bool enabled_;
    bool was_enabled_;
    at::ScalarType was_dtype_;
};

}  // namespace boneage
