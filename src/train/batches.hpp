// The training data of a run: which cache rows train and which validate, the order of each
// epoch, and the assembly of one batch (augmentation, tensors, resize).
#pragma once

#include <torch/torch.h>

#include <boneage/dataset.hpp>
#include <boneage/train.hpp>
#include <cstdint>
#include <memory>
#include <random>
#include <vector>

namespace boneage::detail {

struct TrainData {
    std::unique_ptr<PreparedCache> train;
    std::unique_ptr<PreparedCache> val_owned;  // set when a separate validation cache is used
    const PreparedCache* val = nullptr;        // train.get() or val_owned.get()
    std::vector<std::size_t> train_rows;
    std::vector<std::size_t> val_rows;
    std::size_t excluded = 0;  // training rows left out because their id validates
};

// Opens the caches of `options` and splits them: a separate val cache (all of it, or its ids
// in in_validation_split(val_cache_split)), whose ids are then left out of training; or the
// training cache's ids hashed by in_validation_split(val_split). With folds, the ids of the
// fold validate (from the val cache when there is one) and train in neither cache. Throws
// boneage::Error naming a cache that cannot be read, and boneage::UsageError when no training
// rows remain.
TrainData open_train_data(const TrainOptions& options);

// The row order of `epoch`: a permutation of 0..count-1 that depends only on (seed, epoch).
// `rng` is reseeded from them, so its state after the call is known too.
std::vector<std::size_t> epoch_order(std::uint64_t seed, int epoch, std::size_t count,
                                     std::mt19937_64& rng);

// Steps in an epoch of `count` images: full batches, plus the remainder unless it is a single
// image (batch norm cannot train on one) or, with `ranks` processes, too small to give each a
// row; capped by steps_per_epoch when set. For 1 or 2 ranks the epoch is the same.
int steps_in_epoch(std::size_t count, int batch_size, int steps_per_epoch, int ranks = 1);

// The distributed sampler: the positions [begin, end) of `rank`'s share of a global batch of
// `count` rows among `ranks` processes, a contiguous slice; the shares differ by at most one
// row and cover the batch in rank order, so the global batch is the same for any world size.
struct Share {
    std::size_t begin = 0, end = 0;
    std::size_t size() const { return end - begin; }
};
Share share_of(std::size_t count, int rank, int ranks);

struct Batch {
    torch::Tensor images;  // N x 1 x S x S float in [0, 1], S = the model's input size
    torch::Tensor ages;    // N months, float
    torch::Tensor sex;     // N, 1 male 0 female, float
};

// The batch of cache rows `rows`; augmented per (seed, epoch, row) when `augment` is set, on
// `threads` threads (0: one per core).
Batch make_batch(const PreparedCache& cache, const std::vector<std::size_t>& rows, int input_size,
                 const TrainOptions& options, int epoch, bool augment, int threads = 0);

}  // namespace boneage::detail
