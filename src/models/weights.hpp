// Moving weights between two nets of one architecture, inside the models stage.
#pragma once

#include <string>

#include <torch/torch.h>

namespace boneage::models {

// The one weight copy: every parameter and buffer of `to` from the one of the same name in
// `from`. Checks every name and shape before it copies anything, so a mismatch leaves `to`
// whole; throws UsageError naming the first tensor that is missing or of another shape
// (a copy_ would broadcast a smaller tensor silently). Names only in `from` are ignored, and
// so are the names of `to` that begin with `except_prefix` (when not empty): those keep
// their own values.
void copy_weights(const torch::nn::Module& from, torch::nn::Module& to,
                  const std::string& except_prefix = {});

}  // namespace boneage::models
