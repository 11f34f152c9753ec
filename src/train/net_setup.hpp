// What a run sets on its network before the first step, beyond the architecture's own
// initialisation: the input normalisation measured on the training cache, the output bias
// that starts the predictions at the training mean, and the batch norms' momentum.
#pragma once

#include <torch/torch.h>

#include <boneage/dataset.hpp>
#include <boneage/model.hpp>
#include <cstddef>
#include <vector>

namespace boneage::detail {

struct PixelStats {
    double mean = 0.0;  // of the pixels scaled to [0, 1], as images_to_tensor scales them
    double sd = 0.0;    // population standard deviation, same scale
};

// Mean and SD of every pixel of `rows` of `cache` (all rows when empty), exact (a histogram of
// the 256 byte values). Throws boneage::UsageError when there are no pixels.
PixelStats pixel_stats(const PreparedCache& cache, const std::vector<std::size_t>& rows = {});

// Shifts the bias of the output layer ("head.output.bias") so that the net's mean prediction
// over `rows` of `cache` is `target_months`: measured in batches of `batch_size` at the net's
// input size, without augmentation, with the batch norms on batch statistics (as the first
// training steps see them; their running statistics are left as they were) and dropout off.
// At most `max_images` rows are used, the first ones. Returns the mean prediction before the
// shift. Throws boneage::Error (Internal) when the net has no output layer of that name.
double set_output_bias_to_mean(BoneAgeNetImpl& net, const PreparedCache& cache,
                               const std::vector<std::size_t>& rows, double target_months,
                               int batch_size, std::size_t max_images = 128);

// Sets the momentum of every BatchNorm2d below `module` (LibTorch's convention: the weight of
// the newest batch in the running statistics; Keras' momentum m is 1 - m here). Returns how
// many batch norms were set.
int set_batchnorm_momentum(torch::nn::Module& module, double momentum);

// Sets the rate of every Dropout below `module` (0: none, as in a run whose result must not
// depend on how a batch is split between processes). Returns how many were set.
int set_dropout(torch::nn::Module& module, double p);

}  // namespace boneage::detail
