// What training refuses about the meaning of its inputs: caches and a starting model made with
// another preprocessing version than this build's, and a validation cache preprocessed unlike
// the training cache.
#pragma once

#include <boneage/model.hpp>
#include <boneage/train.hpp>

#include <filesystem>

#include "train/batches.hpp"

namespace boneage::detail {

// Throws boneage::UsageError naming the cache and both versions when a cache of `data` was made
// with another preprocessing version than this build's (unless
// options.allow_preprocess_mismatch), and naming both caches and the first field that differs
// when the validation cache is preprocessed unlike the training cache (always: its numbers
// would measure images the model is not trained on).
void check_preprocessing(const TrainData& data, const TrainOptions& options);

// Throws boneage::UsageError naming `file` and both versions when the model training starts
// from was trained on another preprocessing version than this build's, unless
// options.allow_preprocess_mismatch.
void check_preprocessing(const std::filesystem::path& file, const LoadedModel& from,
                         const TrainOptions& options);

}  // namespace boneage::detail
