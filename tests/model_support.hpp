// Helpers for the tests that build networks (LibTorch tests only; support.hpp is for all).
#pragma once

#include <torch/torch.h>

#include <boneage/model.hpp>
#include <filesystem>
#include <nlohmann/json.hpp>

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

// A fresh shallow model on 64 px inputs (months = 120 + 40 y), written to `file` with
// `training` as its training metadata: the plumbing around a model needs no trained weights.
inline std::filesystem::path write_tiny_model(
    const std::filesystem::path& file, unsigned seed = 1,
    const nlohmann::json& training = nlohmann::json::object()) {
    torch::manual_seed(seed);
    ModelConfig config;
    config.input_size = 64;
    config.label_offset = 120;
    config.label_scale = 40;
    ModelMetadata meta;
    meta.config = config;
    meta.preprocess.output_size = 64;
    meta.training = training;
    save_model(file, make_model(config), meta);
    return file;
}

}  // namespace boneage::test
