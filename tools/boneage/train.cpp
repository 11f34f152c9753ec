// boneage train: the paper's training recipe on a prepared cache, with checkpoints and resume.
#include <fmt/format.h>

#include <boneage/error.hpp>
#include <boneage/train.hpp>
#include <cmath>
#include <cstdlib>
#include <iostream>
#include <memory>

#include "command.hpp"
#include "progress_bar.hpp"

namespace boneage::cli {

namespace {

struct TrainArgs {
    TrainOptions options;     // every setting; its defaults are the ones --help shows
    std::string train_cache;  // --train
    std::string val_cache;    // --val
    std::string out;          // --out
    std::string run_dir;      // --run-dir
    std::string fold;         // --fold k/K; empty: no cross-validation
    bool resume = false;      // continue the run in --run-dir from its last checkpoint
};

// "k/K" into options.fold and options.folds; a usage error for anything else, or beside an
// explicit split, which a fold replaces.
void set_fold(TrainOptions& o, const std::string& text, const CLI::App& sub) {
    const auto slash = text.find('/');
    auto whole = [](const std::string& digits) {
        if (digits.empty() || digits.size() > 4 ||
            digits.find_first_not_of("0123456789") != std::string::npos)
            return -1;
        return std::stoi(digits);
    };
    const int k = slash == std::string::npos ? -1 : whole(text.substr(0, slash));
    const int folds = slash == std::string::npos ? -1 : whole(text.substr(slash + 1));
    if (k < 0 || folds < 2 || k >= folds)
        throw UsageError(fmt::format(
            "--fold {}: expected k/K with at least 2 folds and 0 <= k < K (e.g. 0/5)", text));
    if (sub.count("--val-split") || sub.count("--val-cache-split"))
        throw UsageError("--fold chooses the validation ids itself: leave out --val-split and "
                         "--val-cache-split");
    o.fold = k;
    o.folds = folds;
}

std::string metric(double v, const char* format = "{:.2f}") {
    return std::isfinite(v) ? fmt::format(fmt::runtime(format), v) : std::string("-");
}

// "epoch 3/50  loss 0.0312  mae 14.21 | val loss 0.0301  mae 13.90  rmse 17.02 | 152 ms/step  41 s
// best"
std::string epoch_summary(const EpochStats& s, int epochs) {
    std::string line = fmt::format("epoch {}/{}  loss {}  mae {}", s.epoch, epochs,
                                   metric(s.train_loss, "{:.4f}"), metric(s.train_mae));
    if (std::isfinite(s.val_mae))
        line += fmt::format(" | val loss {}  mae {}  rmse {}", metric(s.val_loss, "{:.4f}"),
                            metric(s.val_mae), metric(s.val_rmse));
    if (std::isfinite(s.grad_norm))
        line += fmt::format(" | grad norm {:.3g} ({} clipped)", s.grad_norm, s.clipped_steps);
    line += fmt::format(" | {:.0f} ms/step  {}", s.ms_per_step, format_duration(s.seconds));
    if (s.allreduce_ms > 0.0) line += fmt::format("  (all-reduce wait {:.1f} ms/step)", s.allreduce_ms);
    if (s.best) line += "  best";
    return line;
}

TrainCallbacks progress_callbacks(std::unique_ptr<ProgressBar>& bar) {
    TrainCallbacks cb;
    cb.on_epoch_start = [&bar](int epoch, int epochs, int steps) {
        bar = std::make_unique<ProgressBar>(fmt::format("epoch {}/{}", epoch, epochs), steps);
    };
    cb.on_step = [&bar](int step, int, double loss, double mae) {
        bar->update(step, fmt::format("loss {:.4f}  mae {:.2f}", loss, mae));
    };
    cb.on_epoch_end = [&bar](const EpochStats& s, int epochs) {
        if (bar) bar->finish();
        bar.reset();
        std::cerr << epoch_summary(s, epochs) << "\n";
    };
    return cb;
}

// Under a launcher only rank 0 draws the progress: the ranks move in step.
bool shows_progress() {
    const char* rank = std::getenv("RANK");
    return rank == nullptr || *rank == '\0' || std::string(rank) == "0";
}

int run_train(TrainArgs& a, const CLI::App& sub) {
    std::unique_ptr<ProgressBar> bar;
    const TrainCallbacks cb = shows_progress() ? progress_callbacks(bar) : TrainCallbacks{};
    TrainResult r;
    if (a.resume) {
        std::filesystem::path dir = a.run_dir;
        if (dir.empty() && !a.out.empty()) dir = std::filesystem::path(a.out + ".run");
        if (dir.empty()) throw UsageError("--resume needs --run-dir (or the --out of the run)");
        ResumeOptions resume;
        if (sub.count("--epochs")) resume.epochs = a.options.epochs;
        if (sub.count("--lr")) resume.learning_rate = a.options.learning_rate;
        if (sub.count("--threads")) resume.threads = a.options.threads;
        if (sub.count("--device")) resume.device = a.options.device;
        if (sub.count("--backend")) resume.backend = a.options.backend;
        if (sub.count("--dist-timeout")) resume.dist_timeout_s = a.options.dist_timeout_s;
        r = resume_training(dir, resume, cb);
    } else {
        if (a.train_cache.empty())
            throw UsageError("--train is required (a cache from boneage prepare)");
        if (a.out.empty()) throw UsageError("--out is required (the model file to write)");
        TrainOptions o = a.options;
        o.train_cache = a.train_cache;
        o.val_cache = a.val_cache;
        o.out = a.out;
        o.run_dir = a.run_dir;
        if (!a.fold.empty()) set_fold(o, a.fold, sub);
        r = train(o, cb);
    }
    if (!r.device_note.empty()) std::cerr << "boneage train: " << r.device_note << "\n";
    if (r.rank != 0) {
        std::cerr << fmt::format("rank {} of {}: done; rank 0 wrote {}\n", r.rank, r.world_size,
                                 r.model_file.string());
        return kOk;
    }
    std::string best;
    if (r.best_epoch > 0 && r.meta.validation.contains("mae"))
        best = fmt::format(", val MAE {:.2f} months, RMSE {:.2f}",
                           r.meta.validation["mae"].get<double>(),
                           r.meta.validation["rmse"].get<double>());
    std::cerr << fmt::format("wrote {}: best epoch {} of {}{}{}; {:.0f} ms/step; run in {}{}\n",
                             r.model_file.string(), r.best_epoch, r.epochs_run, best,
                             r.stopped_early ? " (stopped early)" : "", r.ms_per_step,
                             r.run_dir.string(),
                             r.process_group.empty() ? "" : "; as " + r.process_group);
    return kOk;
}

const Command train_command{
    "train", "Train a bone-age model on a prepared cache (MSLE, Adam, L2, early stopping)",
    [](CLI::App& sub) -> std::function<int()> {
        auto a = std::make_shared<TrainArgs>();
        TrainOptions& o = a->options;
        EarlyStoppingOptions& es = o.early_stopping;
        sub.add_option("--arch", o.arch, "shallow | resnet50 | inceptionv4 | resnet18")
            ->check(CLI::IsMember({"shallow", "resnet50", "inceptionv4", "resnet18"}))
            ->capture_default_str();
        sub.add_option("--train", a->train_cache, "Prepared cache to train on (boneage prepare)")
            ->check(CLI::ExistingFile);
        sub.add_option("--val", a->val_cache,
                       "Prepared cache to validate on (default: split --train by id)")
            ->check(CLI::ExistingFile);
        sub.add_option("--out", a->out, "Model file to write");
        sub.add_option("--epochs", o.epochs, "Most epochs to run (with --resume: a new maximum)")
            ->check(CLI::PositiveNumber)
            ->capture_default_str();
        sub.add_option("--batch", o.batch_size,
                       "Images per step (with several processes: of all of them together)")
            ->check(CLI::PositiveNumber)
            ->capture_default_str();
        sub.add_option("--lr", o.learning_rate, "Adam learning rate (with --resume: from now on)")
            ->check(CLI::PositiveNumber)
            ->capture_default_str();
        sub.add_option("--l2", o.l2, "L2 factor on the named dense layer")
            ->check(CLI::NonNegativeNumber)
            ->capture_default_str();
        sub.add_option("--seed", o.seed, "Seed of weights, data order, augmentation and dropout")
            ->capture_default_str();
        sub.add_option("--val-split", o.val_split,
                       "Fraction of ids held out when --val is not given")
            ->check(CLI::Range(0.0, 0.99))
            ->capture_default_str();
        sub.add_option("--val-cache-split", o.val_cache_split,
                       "With --val: fraction of its ids that validate, by id hash (0: all); "
                       "ids that validate never train")
            ->check(CLI::Range(0.0, 0.99))
            ->capture_default_str();
        sub.add_option("--fold", a->fold,
                       "Cross-validation fold k/K: the ids of fold k validate (of --val when "
                       "given) and no id of it trains; replaces --val-split and "
                       "--val-cache-split");
        sub.add_option("--init-from", o.init_from,
                       "Model file whose weights start the run (fine-tuning; same arch, head "
                       "and use of sex)")
            ->check(CLI::ExistingFile);
        sub.add_option("--init-layers", o.init_layers,
                       "With --init-from: all (the whole net; same arch, head, use of sex and, "
                       "for a flatten head, input size) | trunk (the layers before the head; "
                       "the head starts fresh, so the input size, head and use of sex may "
                       "differ)")
            ->check(CLI::IsMember({"all", "trunk"}))
            ->capture_default_str();
        sub.add_flag("--allow-preprocess-mismatch", o.allow_preprocess_mismatch,
                     "Train on caches, or start from a model, made with another preprocessing "
                     "version than this build's (refused by default: the weights would learn "
                     "images this build no longer makes)");
        sub.add_option("--schedule", o.schedule,
                       "Learning rate: constant | cosine (warm-up, then cosine decay to 0)")
            ->check(CLI::IsMember({"constant", "cosine"}))
            ->capture_default_str();
        sub.add_option("--warmup-epochs", o.warmup_epochs, "Cosine: epochs of linear warm-up")
            ->check(CLI::NonNegativeNumber)
            ->capture_default_str();
        sub.add_option("--loss", o.loss, "msle (the paper's) | mae (absolute error / age spread)")
            ->check(CLI::IsMember({"msle", "mae"}))
            ->capture_default_str();
        sub.add_option("--weight-decay", o.weight_decay,
                       "Decoupled weight decay on every weight (AdamW); 0: plain Adam")
            ->check(CLI::NonNegativeNumber)
            ->capture_default_str();
        sub.add_option("--weights-dtype", o.weights_dtype,
                       "Weights in the model file: float32 | float16 (half the size)")
            ->check(CLI::IsMember({"float32", "float16"}))
            ->capture_default_str();
        AugmentSettings& aug = o.augment_settings;
        sub.add_option("--rotation", aug.rotation_deg, "Augmentation: most rotation, degrees")
            ->check(CLI::NonNegativeNumber)
            ->capture_default_str();
        sub.add_option("--shift", aug.shift, "Augmentation: most shift, fraction of the side")
            ->check(CLI::NonNegativeNumber)
            ->capture_default_str();
        sub.add_option("--scale", aug.scale, "Augmentation: most zoom, fraction")
            ->check(CLI::Range(0.0, 0.9))
            ->capture_default_str();
        sub.add_option("--contrast", aug.contrast, "Augmentation: most contrast change, fraction")
            ->check(CLI::Range(0.0, 0.9))
            ->capture_default_str();
        sub.add_option("--brightness", aug.brightness,
                       "Augmentation: most brightness change, fraction of full scale")
            ->check(CLI::NonNegativeNumber)
            ->capture_default_str();
        sub.add_option("--head", o.head, "flatten (the paper's) | gap (global average pooling)")
            ->check(CLI::IsMember({"flatten", "gap"}))
            ->capture_default_str();
        sub.add_flag("--use-sex", o.use_sex, "Feed sex into the head");
        sub.add_flag("--augment,!--no-augment", o.augment,
                     "Random rotation, shift, scale, contrast and brightness within the ranges "
                     "below (default: on)");
        sub.add_option("--precision", o.precision,
                       "fp32 | bf16 (autocast, fp32 master weights; fast where the CPU has "
                       "native bf16) | fp16 (CUDA only, with a dynamic loss scale)")
            ->check(CLI::IsMember({"fp32", "bf16", "fp16"}))
            ->capture_default_str();
        sub.add_option("--device", o.device,
                       "cpu | cuda | auto (CUDA device LOCAL_RANK when there is one, else the "
                       "CPU); with --resume: for the rest of the run")
            ->check(CLI::IsMember({"cpu", "cuda", "auto"}))
            ->capture_default_str();
        sub.add_option("--backend", o.backend,
                       "Between processes started by a launcher (RANK, WORLD_SIZE, LOCAL_RANK, "
                       "MASTER_ADDR, MASTER_PORT; docs/DISTRIBUTED.md): gloo | nccl | auto "
                       "(nccl on CUDA, else gloo)")
            ->check(CLI::IsMember({"gloo", "nccl", "auto"}))
            ->capture_default_str();
        sub.add_option("--dist-timeout", o.dist_timeout_s,
                       "Seconds to wait for the other processes, at the start and in every "
                       "all-reduce; a lost peer ends the run with an error after at most this")
            ->check(CLI::Range(1.0, 86400.0))
            ->capture_default_str();
        sub.add_option("--batch-norm", o.batch_norm,
                       "Several processes: local (each normalises its share of the batch; rank "
                       "0's running statistics are kept) | sync (the whole batch's statistics)")
            ->check(CLI::IsMember({"local", "sync"}))
            ->capture_default_str();
        sub.add_option("--dropout", o.dropout,
                       "Dropout rate of the head; below 0: the architecture's own (the paper's)")
            ->check(CLI::Range(-1.0, 0.99))
            ->capture_default_str();
        sub.add_option("--threads", o.threads,
                       "Torch threads (0: all cores, divided between a host's processes)")
            ->check(CLI::NonNegativeNumber)
            ->capture_default_str();
        sub.add_option("--run-dir", a->run_dir,
                       "Folder for checkpoints and history.csv (default: <out>.run)");
        sub.add_flag("--resume", a->resume,
                     "Continue the run in --run-dir from its last checkpoint; only --epochs, --lr, "
                     "--threads, --device, --backend and --dist-timeout may change (and the "
                     "number of processes)");
        sub.add_option("--monitor", es.monitor,
                       "Early-stopping metric: val_mae | val_loss | val_rmse | "
                       "train_loss | train_mae")
            ->check(CLI::IsMember({"val_mae", "val_loss", "val_rmse", "train_loss", "train_mae"}))
            ->capture_default_str();
        sub.add_option("--patience", es.patience, "Epochs without improvement before stopping")
            ->check(CLI::PositiveNumber)
            ->capture_default_str();
        sub.add_option("--min-delta", es.min_delta,
                       "Least change of the metric that counts as improvement")
            ->check(CLI::NonNegativeNumber)
            ->capture_default_str();
        sub.add_option("--input-size", o.input_size,
                       "Model input side in pixels (0: the cache's size)")
            ->check(CLI::NonNegativeNumber)
            ->capture_default_str();
        sub.add_option("--steps-per-epoch", o.steps_per_epoch,
                       "Most steps per epoch (0: the whole set)")
            ->check(CLI::NonNegativeNumber)
            ->capture_default_str();
        sub.add_option("--init-output-bias", o.init_output_bias,
                       "none (the layer's own initialisation) | mean (set so the fresh net's "
                       "mean prediction on training images is the training mean)")
            ->check(CLI::IsMember({"none", "mean"}))
            ->capture_default_str();
        sub.add_option("--clip-grad-norm", o.clip_grad_norm,
                       "Rescale the gradients to at most this global L2 norm before each step "
                       "(0: no clipping)")
            ->check(CLI::NonNegativeNumber)
            ->capture_default_str();
        sub.add_option("--bn-momentum", o.bn_momentum,
                       "Batch-norm momentum, LibTorch's convention: weight of the newest batch "
                       "in the running statistics (Keras' 0.99 is 0.01 here)")
            ->check(CLI::Range(0.0, 1.0))
            ->capture_default_str();
        sub.add_option("--input-norm", o.input_norm,
                       "none | dataset (the net subtracts the training pixels' mean and divides "
                       "by their SD; stored in the model file, so inference does the same)")
            ->check(CLI::IsMember({"none", "dataset"}))
            ->capture_default_str();
        return [a, &sub] { return run_train(*a, sub); };
    }};

}  // namespace

}  // namespace boneage::cli
