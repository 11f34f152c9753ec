// Helpers for the tests that build networks (LibTorch tests only; support.hpp is for all).
#pragma once

#include <torch/torch.h>

#include <boneage/model.hpp>

namespace boneage::test {

// The net's own forward in evaluation mode, without gradients.
inline torch::Tensor eval_forward(BoneAgeNet& net, const torch::Tensor& images,
                                  const torch::Tensor& sex) {
    torch::NoGradGuard no_grad;
    net->eval();
    return net->forward(images, sex);
}

// Batch-norm statistics and affine terms drawn at random (a fresh net's are the identity),
// so that folding or storing them wrongly changes the outputs.
inline void randomise_batch_norms(torch::nn::Module& net) {
    torch::NoGradGuard no_grad;
    for (auto& m : net.modules(/*include_self=*/false)) {
        if (auto* bn = m->as<torch::nn::BatchNorm2d>()) {
            bn->running_mean.uniform_(-0.1, 0.1);
            bn->running_var.uniform_(0.5, 2.0);
            bn->weight.uniform_(0.5, 1.0);
            bn->bias.uniform_(-0.1, 0.1);
        }
    }
}

}  // namespace boneage::test
