// The paper's training recipe (Sections V-VI): mean squared logarithmic error, Adam at 0.001,
// L2 0.01 on the named dense layer, dropout, and early stopping that keeps the best weights;
// with checkpoints every epoch so a stopped run resumes to the same result.
//
//   boneage::TrainOptions o;
//   o.arch = "shallow";  o.train_cache = "train.bin";  o.out = "shallow.bin";  o.epochs = 30;
//   boneage::TrainResult r = boneage::train(o);       // writes shallow.bin and shallow.bin.run/
//   r = boneage::resume_training("shallow.bin.run");  // after an interruption: same weights
#pragma once

#include <torch/torch.h>

#include <boneage/augment.hpp>
#include <boneage/dataset.hpp>
#include <boneage/model.hpp>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <limits>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

namespace boneage {

// ---------------------------------------------------------------------------------------------
// Loss and regularisation

// Keras' mean squared logarithmic error: mean((log(max(pred, eps) + 1) - log(max(target, eps)
// + 1))^2) with eps = 1e-7, over every element. Both tensors hold months and have the same
// shape; returns a scalar. Throws boneage::Error (Internal) when the shapes differ.
torch::Tensor msle_loss(const torch::Tensor& pred_months, const torch::Tensor& target_months);

// Mean absolute error in months divided by `label_scale` (the spread of the training ages), so
// the loss is near 1 for a constant guess whatever the age range. Shapes as msle_loss.
torch::Tensor scaled_mae_loss(const torch::Tensor& pred_months, const torch::Tensor& target_months,
                              double label_scale);

// Keras' kernel_regularizer l2(factor): factor x the sum of squares of net->l2_weights(), a
// scalar to add to the loss. Weights outside l2_weights() never enter it.
torch::Tensor l2_penalty(BoneAgeNetImpl& net, double factor = 0.01);

// ---------------------------------------------------------------------------------------------
// Early stopping

struct EarlyStoppingOptions {
    std::string monitor = "val_mae";  // val_loss | val_mae | val_rmse | train_loss | train_mae
    std::string mode = "min";         // "min": lower is better; "max": higher is better
    int patience = 5;                 // stop after this many epochs in a row without improvement
    double min_delta = 0.1;           // an improvement must beat the best by at least this much
};

void to_json(nlohmann::json& j, const EarlyStoppingOptions& o);
void from_json(const nlohmann::json& j, EarlyStoppingOptions& o);

// Watches one metric per epoch. An epoch improves when its value beats the best so far by at
// least min_delta (the first epoch always does); the others count towards `patience`, and the
// count restarts at each improvement. Epochs are numbered from 1.
class EarlyStopping {
public:
    // Throws boneage::UsageError for an unknown monitor or mode, patience < 1 or min_delta < 0.
    explicit EarlyStopping(EarlyStoppingOptions options = {});

    // Records the metric of `epoch`; returns true when training should stop now. A NaN value
    // never improves.
    bool update(int epoch, double value);

    bool improved() const { return improved_; }  // whether the last update() improved
    bool should_stop() const { return stop_; }
    int best_epoch() const { return best_epoch_; }  // 0 before the first update()
    double best_value() const { return best_; }
    int epochs_without_improvement() const { return wait_; }
    const EarlyStoppingOptions& options() const { return options_; }

    // The whole state, for checkpoints; from_state() restores it exactly.
    nlohmann::json state() const;
    static EarlyStopping from_state(const nlohmann::json& state);

private:
    EarlyStoppingOptions options_;
    double best_;
    int best_epoch_ = 0;
    int wait_ = 0;
    bool improved_ = false;
    bool stop_ = false;
};

// ---------------------------------------------------------------------------------------------
// The trainer

// Every setting of a run. The defaults below are the paper's where it gives one; `boneage
// train --help` prints them from this struct.
struct TrainOptions {
    std::string arch = "shallow";       // shallow | resnet50 | inceptionv4 | resnet18
    std::string head = "flatten";       // flatten (the paper's) | gap
    bool use_sex = false;               // feed sex to the head (the paper does not)
    std::filesystem::path train_cache;  // prepared cache to train on (required)
    std::filesystem::path val_cache;    // prepared cache to validate on; empty: split train_cache
    double val_split = 0.15;            // without val_cache: fraction of ids held out, by id hash
    double val_cache_split = 0.0;       // with val_cache: fraction of its ids that validate, by
                                        // the same hash; 0: all of them
    int folds = 0;                      // cross-validation: with 2 or more, the ids of fold
    int fold = 0;                       // `fold` (fold_of in dataset.hpp) validate, replacing
                                        // both splits above, and no id of that fold trains, in
                                        // either cache; 0 folds: no cross-validation
    std::filesystem::path out;          // model file written at the end (required)
    std::filesystem::path run_dir;      // checkpoints and history.csv; empty: "<out>.run"
    std::filesystem::path init_from;    // model file whose weights start the run (fine-tuning);
                                        // its label scaling is kept; empty: fresh weights
    std::string init_layers = "all";    // with init_from: all (the whole net, its label scaling
                                        // kept) | trunk (every layer before the head; the head
                                        // starts fresh, so the input size and head may change)
    bool allow_preprocess_mismatch = false;  // train on caches, or start from a model, made
                                             // with another preprocessing version than this
                                             // build's (kPreprocessVersion); refused otherwise
    int epochs = 50;                    // most epochs to run
    int batch_size = 16;                // images per step
    double learning_rate = 0.001;       // Adam (0.01 overshot, 0.0001 was too slow)
    std::string schedule = "constant";  // constant | cosine: linear warm-up, then cosine decay
                                        // to 0 at the end of the last epoch
    double warmup_epochs = 0.0;         // cosine: epochs of linear warm-up from 0
    std::string loss = "msle";          // msle (the paper's) | mae: absolute error over the
                                        // label spread
    double l2 = 0.01;                   // factor on the squared l2_weights() of the model
    double weight_decay = 0.0;          // decoupled (AdamW) decay on every weight; 0: plain Adam
    std::uint64_t seed = 42;            // fixes initial weights, data order, augmentation, dropout
    bool augment = true;                // random rotation, shift, scale, contrast, brightness
    AugmentSettings augment_settings;   // their ranges
    std::string precision = "fp32";     // fp32 | bf16: autocast with fp32 master weights and
                                        // channels-last activations (on the CPU) | fp16: CUDA
                                        // autocast with a dynamic loss scale (CUDA only)
    std::string weights_dtype = "float32";  // of the model file: float32 | float16
    int threads = 0;                    // torch threads; 0: all cores
    int input_size = 0;                 // model input side; 0: the cache's image size
    int steps_per_epoch = 0;            // most steps per epoch; 0: the whole training set
    EarlyStoppingOptions early_stopping;  // monitor, patience, min_delta
    // For the deep networks; each default leaves the recipe as it was.
    std::string init_output_bias = "none";  // none: the layer's own initialisation | mean: set so
                                            // the fresh net's mean prediction on training images
                                            // is the training mean (fresh weights only)
    double clip_grad_norm = 0.0;        // rescale the gradients to at most this global L2 norm
                                        // before each step; 0: no clipping
    double bn_momentum = 0.1;           // of every batch norm, LibTorch's convention (weight of
                                        // the newest batch); 0.1 is what they are built with;
                                        // Keras' 0.99 is 0.01 here
    std::string input_norm = "none";    // none | dataset: the net subtracts the training
                                        // cache's pixel mean and divides by its SD (kept in
                                        // the model's config, so inference does the same)
    double dropout = -1.0;              // the head's dropout rate; below 0: the architecture's
                                        // own (the paper's)
    // Where and how the run computes. Started by a launcher (torchrun, SLURM, a Kubernetes
    // operator, scripts/train-distributed), the process reads its place from RANK,
    // WORLD_SIZE, LOCAL_RANK, MASTER_ADDR and MASTER_PORT and joins the others; batch_size is
    // then the global batch, split between the ranks (docs/DISTRIBUTED.md).
    std::string device = "auto";        // cpu | cuda | auto: CUDA device LOCAL_RANK when there
                                        // is one, else the CPU
    std::string backend = "auto";       // gloo | nccl | auto: nccl on CUDA, gloo otherwise
    double dist_timeout_s = 300.0;      // the rendezvous and every collective: a peer that is
                                        // gone ends the run with an error after at most this
    std::string batch_norm = "local";   // local: each rank normalises with its own part of the
                                        // batch, rank 0's running statistics are kept | sync:
                                        // with the whole global batch's statistics, as one
                                        // process would
};

void to_json(nlohmann::json& j, const TrainOptions& o);
void from_json(const nlohmann::json& j, TrainOptions& o);

// Checks the options without touching any file. Throws boneage::UsageError naming the field.
void validate(const TrainOptions& options);

// One row of history.csv.
struct EpochStats {
    int epoch = 0;             // from 1
    double train_loss = 0.0;   // mean over the epoch's steps of loss + L2 (what Adam minimises)
    double train_mae = 0.0;    // months, in training mode (augmentation and dropout on)
    double val_loss = 0.0;     // the training loss (without augmentation and dropout) on the
                               // validation set, as Keras' val_loss; NaN if none
    double val_mae = 0.0;      // months; NaN without a validation set
    double val_rmse = 0.0;     // months; NaN without a validation set
    double val_msle = 0.0;     // MSLE alone; NaN without a validation set
    double ms_per_step = 0.0;  // median wall time of one training step
    double seconds = 0.0;      // wall time of the epoch, validation included
    double lr = 0.0;           // learning rate used
    bool best = false;         // early stopping counted it as an improvement
    double grad_norm = std::numeric_limits<double>::quiet_NaN();  // with clip_grad_norm:
                               // median global gradient norm before clipping; NaN without
    int clipped_steps = 0;     // with clip_grad_norm: steps whose norm was over the limit
    double allreduce_ms = 0.0;  // several processes: median per step of the time spent waiting
                                // for the gradients' all-reduce (the part not overlapped with
                                // the backward pass); 0 for one process
};

void to_json(nlohmann::json& j, const EpochStats& s);
void from_json(const nlohmann::json& j, EpochStats& s);

// What the trainer reports while it runs. Each member is optional.
struct TrainCallbacks {
    // Before the first step of an epoch: epoch (from 1), the run's max epochs, steps to come.
    std::function<void(int epoch, int epochs, int steps)> on_epoch_start;
    // After each step: step (from 1), and the running means of loss and MAE over the epoch.
    std::function<void(int step, int steps, double loss, double mae)> on_step;
    // After validation and the checkpoint of an epoch.
    std::function<void(const EpochStats& stats, int epochs)> on_epoch_end;
};

struct TrainResult {
    std::filesystem::path model_file;
    std::filesystem::path run_dir;
    std::vector<EpochStats> history;
    int epochs_run = 0;
    int best_epoch = 0;
    bool stopped_early = false;  // patience ran out before the last epoch
    double ms_per_step = 0.0;    // median over every training step of the run
    ModelMetadata meta;          // as written into the model file
    int rank = 0;                // this process's rank; only rank 0 writes files
    int world_size = 1;          // processes that trained together
    std::string process_group;   // several processes: "rank 0 of 2 (tcp://host:port, gloo)"
    std::string device = "cpu";  // where this process trained ("cpu", "cuda:0")
    std::string device_note;     // why --device auto chose the CPU, where a GPU was possible
};

// Trains a fresh model on options.train_cache, writing a checkpoint into the run dir after
// every epoch (history.csv beside it), then restores the best epoch's weights and writes the
// model file. Under a launcher's environment (TrainOptions::device) every process calls this
// with the same options; each trains on its share of every batch and rank 0 alone writes. Starts over when the run dir holds an earlier run. Throws boneage::UsageError
// for bad options, boneage::Error naming the file when a cache cannot be read, and
// boneage::Error naming the epoch and step when the loss becomes NaN or infinite (the last
// good checkpoint stays in the run dir).
TrainResult train(const TrainOptions& options, const TrainCallbacks& callbacks = {});

// What a resumed run may change; everything else comes from the checkpoint.
struct ResumeOptions {
    std::optional<int> epochs;            // a new maximum, to extend a finished run
    std::optional<double> learning_rate;  // a new rate (a cosine schedule's peak) from the next step on
    std::optional<int> threads;           // torch threads (results may differ between counts)
    // Launch settings: the resumed run may use another device, backend or number of processes
    // (the global batch stays the same, so does the order of the data).
    std::optional<std::string> device;
    std::optional<std::string> backend;
    std::optional<double> dist_timeout_s;
};

// Continues the run in `run_dir` from its last checkpoint: the same weights an uninterrupted
// run with the same options reaches. With several processes rank 0 reads the checkpoint and
// hands it to the others, which need not see run_dir. Throws boneage::Error (NotFound/BadData) naming the
// checkpoint when there is none or it is damaged, and as train() does.
TrainResult resume_training(const std::filesystem::path& run_dir, const ResumeOptions& resume = {},
                            const TrainCallbacks& callbacks = {});

// The run dir of `options`: options.run_dir, or "<out>.run".
std::filesystem::path run_dir_of(const TrainOptions& options);

// File names inside a run dir.
constexpr const char* kCheckpointFile = "checkpoint.pt";
constexpr const char* kHistoryFile = "history.csv";

// Errors of a model on some rows of a cache, in months (msle: the MSLE alone).
struct ValidationMetrics {
    std::size_t n = 0;
    double mae = 0.0, rmse = 0.0, msle = 0.0;
};

// Runs `net` in eval mode without gradients over `rows` of `cache` (all rows when empty), in
// batches of `batch_size`, at the model's input size, and returns its errors. Leaves the
// net in eval mode.
ValidationMetrics measure(BoneAgeNetImpl& net, const PreparedCache& cache,
                          const std::vector<std::size_t>& rows = {}, int batch_size = 16);

}  // namespace boneage
