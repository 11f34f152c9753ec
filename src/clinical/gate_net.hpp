// The hand gate's network, shared by its verdict (hand_gate.cpp) and its training.
#pragma once

#include <fmt/format.h>
#include <torch/torch.h>

#include <boneage/hand_gate.hpp>
#include <vector>

namespace boneage {

inline constexpr int kGateClasses = 1 + static_cast<int>(kNegativeKinds.size());

// Four 3x3 convolution stages halve 64 px to 4; two dense layers read the 4x4 map, which keeps
// where things are (fingers above a palm), not only what is there.
struct GateNetImpl : torch::nn::Module {
    GateNetImpl() {
        const int widths[] = {1, 16, 32, 64, 64};
        for (int i = 0; i < 4; ++i) {
            convs.push_back(register_module(
                fmt::format("conv{}", i + 1),
                torch::nn::Conv2d(
                    torch::nn::Conv2dOptions(widths[i], widths[i + 1], 3).padding(1).bias(false))));
            norms.push_back(
                register_module(fmt::format("bn{}", i + 1), torch::nn::BatchNorm2d(widths[i + 1])));
        }
        fc1 = register_module("fc1", torch::nn::Linear(64 * 4 * 4, 64));
        fc2 = register_module("fc2", torch::nn::Linear(64, kGateClasses));
        drop = register_module("drop", torch::nn::Dropout(0.3));
    }

    // x: N x 1 x 64 x 64, grey levels scaled to about [-2, 2]. Returns class logits.
    torch::Tensor forward(torch::Tensor x) {
        for (std::size_t i = 0; i < convs.size(); ++i)
            x = torch::max_pool2d(torch::relu(norms[i]->forward(convs[i]->forward(x))), 2);
        x = drop->forward(torch::relu(fc1->forward(x.flatten(1))));
        return fc2->forward(x);
    }

    std::vector<torch::nn::Conv2d> convs;
    std::vector<torch::nn::BatchNorm2d> norms;
    torch::nn::Linear fc1{nullptr}, fc2{nullptr};
    torch::nn::Dropout drop{nullptr};
};

}  // namespace boneage
