// The checkpoint of a run: one file in the run dir, rewritten atomically after every epoch,
// holding all a resumed run needs to continue exactly where the last epoch ended.
#pragma once

#include <torch/torch.h>

#include <boneage/model.hpp>
#include <boneage/train.hpp>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <random>
#include <string>
#include <vector>

namespace boneage::detail {

// A copy of every parameter and buffer of a net, in named_parameters() then named_buffers()
// order, so the best epoch's weights can be put back.
struct WeightSnapshot {
    std::vector<torch::Tensor> tensors;
    bool empty() const { return tensors.empty(); }
};

WeightSnapshot snapshot(torch::nn::Module& net);
// Copies `s` into `net`. Throws boneage::Error (Internal) when the shapes do not match.
void restore(torch::nn::Module& net, const WeightSnapshot& s);

// The plain-data part of a checkpoint (stored as JSON inside the archive).
struct CheckpointState {
    int epoch = 0;  // epochs completed
    TrainOptions options;
    ModelConfig config;
    nlohmann::json early_stopping;  // EarlyStopping::state()
    std::vector<EpochStats> history;
    std::vector<double> step_ms;  // every training step so far, for the median
    std::string order_rng;        // the std::mt19937_64 that shuffles epochs
    bool stopped_early = false;
};

// Writes model weights, Adam state, best weights, the torch CPU generator state and `state`
// to `file` through a temporary file and a rename. Throws boneage::Error on I/O failure.
void save_checkpoint(const std::filesystem::path& file, const CheckpointState& state,
                     BoneAgeNetImpl& net, torch::optim::Optimizer& optimizer,
                     const WeightSnapshot& best);

// Reads the plain-data part only. Throws boneage::Error (NotFound, BadData) naming the file.
CheckpointState read_checkpoint_state(const std::filesystem::path& file);

// Loads weights, Adam state, best weights and the torch generator state into objects built
// from the checkpoint's own state. Throws boneage::Error (BadData) naming the file.
void load_checkpoint_tensors(const std::filesystem::path& file, BoneAgeNetImpl& net,
                             torch::optim::Optimizer& optimizer, WeightSnapshot& best);

}  // namespace boneage::detail
