// Moving weights between two nets of one architecture, inside the models stage.
#pragma once

#include <torch/torch.h>

namespace boneage::models {

// Copies every parameter and buffer of `from` into the one of the same name in `to`, which
// must be built from the same configuration (a missing name or another shape is a LibTorch
// error: a programming error here, not a user's).
void copy_weights(const torch::nn::Module& from, torch::nn::Module& to);

}  // namespace boneage::models
