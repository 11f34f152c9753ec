// Splits, epoch order and batch assembly for the trainer.
#include "train/batches.hpp"
#include "train/preprocess_checks.hpp"

#include <fmt/format.h>

#include <boneage/error.hpp>
#include <boneage/parallel.hpp>
#include <random>
#include <string>
#include <unordered_set>

namespace boneage::detail {

TrainData open_train_data(const TrainOptions& options) {
    TrainData data;
    data.train = std::make_unique<PreparedCache>(options.train_cache);
    if (options.folds >= 2) {
        // Cross-validation: fold membership decides on both sides by the id alone, so a
        // patient of the fold stays out of training in every cache, whether or not the
        // validation cache holds it.
        auto in_fold = [&](const std::string& id) {
            return fold_of(id, options.folds) == options.fold;
        };
        if (!options.val_cache.empty()) {
            data.val_owned = std::make_unique<PreparedCache>(options.val_cache);
            data.val = data.val_owned.get();
            for (std::size_t i = 0; i < data.val->size(); ++i)
                if (in_fold(data.val->id(i))) data.val_rows.push_back(i);
            for (std::size_t i = 0; i < data.train->size(); ++i) {
                if (in_fold(data.train->id(i)))
                    ++data.excluded;
                else
                    data.train_rows.push_back(i);
            }
        } else {
            data.val = data.train.get();
            for (std::size_t i = 0; i < data.train->size(); ++i)
                (in_fold(data.train->id(i)) ? data.val_rows : data.train_rows).push_back(i);
        }
    } else if (!options.val_cache.empty()) {
        data.val_owned = std::make_unique<PreparedCache>(options.val_cache);
        data.val = data.val_owned.get();
        const double fraction = options.val_cache_split;
        std::unordered_set<std::string> val_ids;
        for (std::size_t i = 0; i < data.val->size(); ++i) {
            if (fraction > 0.0 && !in_validation_split(data.val->id(i), fraction)) continue;
            data.val_rows.push_back(i);
            val_ids.insert(data.val->id(i));
        }
        // The same patient can be in both caches (thumbnails and full-size radiographs): an
        // id that validates never trains.
        for (std::size_t i = 0; i < data.train->size(); ++i) {
            if (val_ids.count(data.train->id(i)))
                ++data.excluded;
            else
                data.train_rows.push_back(i);
        }
    } else {
        data.val = data.train.get();
        for (std::size_t i = 0; i < data.train->size(); ++i) {
            const bool held_out = options.val_split > 0.0 &&
                                  in_validation_split(data.train->id(i), options.val_split);
            (held_out ? data.val_rows : data.train_rows).push_back(i);
        }
    }
    check_preprocessing(data, options);
    if (data.train_rows.size() < 2)
        throw UsageError(
            fmt::format("{}: {} training images after the validation split; at least 2 are needed",
                        options.train_cache.string(), data.train_rows.size()));
    return data;
}

std::vector<std::size_t> epoch_order(std::uint64_t seed, int epoch, std::size_t count,
                                     std::mt19937_64& rng) {
    std::seed_seq seq{static_cast<std::uint32_t>(seed), static_cast<std::uint32_t>(seed >> 32),
                      static_cast<std::uint32_t>(epoch)};
    rng.seed(seq);
    std::vector<std::size_t> order(count);
    for (std::size_t i = 0; i < count; ++i) order[i] = i;
    // Fisher-Yates with a plain modulo draw (bias below 2^-40 for any real dataset), written
    // out so the order is the same with every standard library.
    for (std::size_t i = count; i > 1; --i) std::swap(order[i - 1], order[rng() % i]);
    return order;
}

int steps_in_epoch(std::size_t count, int batch_size, int steps_per_epoch, int ranks) {
    const std::size_t bs = static_cast<std::size_t>(batch_size);
    std::size_t steps = count / bs;
    const std::size_t rest = count % bs;
    if ((rest >= 2 && rest >= static_cast<std::size_t>(ranks)) || (rest == 1 && bs == 1)) ++steps;
    if (steps_per_epoch > 0 && steps > static_cast<std::size_t>(steps_per_epoch))
        steps = steps_per_epoch;
    return static_cast<int>(steps);
}

Share share_of(std::size_t count, int rank, int ranks) {
    const std::size_t r = static_cast<std::size_t>(rank), n = static_cast<std::size_t>(ranks);
    return {count * r / n, count * (r + 1) / n};
}

Batch make_batch(const PreparedCache& cache, const std::vector<std::size_t>& rows, int input_size,
                 const TrainOptions& options, int epoch, bool augment, int threads) {
    const int size = cache.image_size();
    const std::size_t pixels = static_cast<std::size_t>(size) * size;
    std::vector<const std::uint8_t*> images(rows.size());
    std::vector<std::uint8_t> augmented;
    if (augment) {
        augmented.resize(rows.size() * pixels);
        parallel_for(rows.size(), threads, [&](std::size_t i) {
            const Augmentation a =
                draw_augmentation(options.seed, epoch, rows[i], options.augment_settings);
            augment_image(cache.image(rows[i]), size, a, augmented.data() + i * pixels);
        });
        for (std::size_t i = 0; i < rows.size(); ++i) images[i] = augmented.data() + i * pixels;
    } else {
        for (std::size_t i = 0; i < rows.size(); ++i) images[i] = cache.image(rows[i]);
    }
    Batch b;
    b.images = resize_batch(images_to_tensor(images, size), input_size);
    std::vector<float> ages(rows.size()), sex(rows.size());
    for (std::size_t i = 0; i < rows.size(); ++i) {
        ages[i] = static_cast<float>(cache.age_months(rows[i]));
        sex[i] = cache.male(rows[i]) ? 1.0f : 0.0f;
    }
    b.ages = torch::tensor(ages);
    b.sex = torch::tensor(sex);
    return b;
}

}  // namespace boneage::detail
