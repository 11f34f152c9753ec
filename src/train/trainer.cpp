// The training loop: epochs of Adam steps on MSLE + L2, validation, early stopping, a
// checkpoint and a history row per epoch, and the model file at the end.
#include <fmt/format.h>

#include <algorithm>
#include <boneage/autocast.hpp>
#include <boneage/durable_file.hpp>
#include <boneage/error.hpp>
#include <boneage/memory_format.hpp>
#include <boneage/parallel.hpp>
#include <boneage/train.hpp>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <fstream>
#include <future>
#include <iterator>
#include <limits>
#include <optional>
#include <sstream>
#include <unistd.h>


#include "train/batches.hpp"
#include "train/checkpoint.hpp"
#include "train/device.hpp"
#include "train/distributed.hpp"
#include "train/gradient_buckets.hpp"
#include "train/net_setup.hpp"
#include "train/preprocess_checks.hpp"
#include "train/sync_batch_norm.hpp"
#include "models/weights.hpp"

namespace boneage {

namespace {

using Clock = std::chrono::steady_clock;
constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

double ms_since(Clock::time_point t0) {
    return std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
}

double median(std::vector<double> v) {
    if (v.empty()) return 0.0;
    std::sort(v.begin(), v.end());
    const std::size_t n = v.size();
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

// Everything a run carries from one epoch to the next.
struct Run {
    Run(TrainOptions o, std::filesystem::path d, EarlyStopping es)
        : options(std::move(o)),
          dir(std::move(d)),
          data(detail::open_train_data(options)),
          stopping(std::move(es)) {}

    TrainOptions options;
    std::filesystem::path dir;
    detail::TrainData data;
    detail::World world;          // the processes of the run; one by default
    detail::DeviceChoice device;  // where this process computes
    BoneAgeNet net;
    std::unique_ptr<torch::optim::Optimizer> optimizer;
    std::unique_ptr<detail::GradientBuckets> buckets;  // several processes: the all-reduce
    detail::LossScale loss_scale{false};               // fp16 only
    EarlyStopping stopping;
    detail::WeightSnapshot best;
    std::vector<EpochStats> history;
    std::vector<double> step_ms;
    std::mt19937_64 order_rng;
    int epochs_done = 0;
    bool stopped_early = false;

    std::filesystem::path checkpoint() const { return dir / kCheckpointFile; }
};

// All cores by default; several processes on one host share them.
void use_threads(int threads, const detail::ProcessEnv& env) {
    const int processes = std::max(1, env.local_world_size);
    torch::set_num_threads(threads > 0 ? threads
                                       : std::max(1, default_thread_count() / processes));
}

detail::ProcessEnv process_env() { return detail::process_env_from(std::getenv); }

struct Placement {
    detail::World world;
    detail::DeviceChoice device;
};

// Where this process computes, and the processes it trains with (none without a launcher):
// `o`'s device, backend and timeout.
Placement place(const TrainOptions& o, const detail::ProcessEnv& env) {
    Placement p;
    p.device = detail::choose_device(o.device, detail::cuda_device_count(), env.local_rank);
    // A build without CUDA has nothing to fall back from: it says nothing.
    if (!detail::built_with_cuda()) p.device.note.clear();
    if (!env.present) return p;
    if (!(o.dist_timeout_s >= 1.0))
        throw UsageError(fmt::format("the distributed timeout must be at least 1 s, not {}",
                                     o.dist_timeout_s));
    const std::string backend = detail::choose_backend(o.backend, p.device.device.is_cuda());
    p.world = detail::World::join(
        env, backend,
        std::chrono::milliseconds(static_cast<std::int64_t>(o.dist_timeout_s * 1000.0)));
    return p;
}

// The checkpoint a resumed run starts from, on every rank: rank 0 reads it from the run dir
// and hands its bytes to the others, which keep them in a temporary file while they load.
class CheckpointCopy {
public:
    CheckpointCopy(detail::World& world, const std::filesystem::path& file) : path_(file) {
        std::vector<std::uint8_t> bytes;
        if (world.is_root()) {
            std::ifstream in(file, std::ios::binary);
            if (in) bytes.assign(std::istreambuf_iterator<char>(in), {});
        }
        if (!world.distributed()) return;
        bytes = world.share_from_root("checkpoint", bytes);
        if (bytes.empty())  // every rank says so, rank 0 too
            throw Error(ErrorKind::NotFound, file,
                        fmt::format("{}: rank 0 has no readable checkpoint here", world.where()));
        if (world.is_root()) return;
        path_ = std::filesystem::temp_directory_path() /
                fmt::format("boneage-checkpoint-{}-rank{}.pt", ::getpid(), world.rank());
        std::ofstream out(path_, std::ios::binary);
        out.write(reinterpret_cast<const char*>(bytes.data()),
                  static_cast<std::streamsize>(bytes.size()));
        out.close();
        if (!out) throw Error(ErrorKind::CannotWrite, path_, "cannot keep the shared checkpoint");
        owned_ = true;
    }
    ~CheckpointCopy() {
        std::error_code ec;
        if (owned_) std::filesystem::remove(path_, ec);
    }
    CheckpointCopy(const CheckpointCopy&) = delete;
    CheckpointCopy& operator=(const CheckpointCopy&) = delete;
    const std::filesystem::path& path() const { return path_; }

private:
    std::filesystem::path path_;
    bool owned_ = false;
};

// Adam's moments follow the weights to a CUDA device.
void move_optimizer_state(torch::optim::Optimizer& optimizer, const torch::Device& device) {
    if (!device.is_cuda()) return;
    for (auto& [key, state] : optimizer.state()) {
        if (auto* adam = dynamic_cast<torch::optim::AdamParamState*>(state.get())) {
            adam->exp_avg(adam->exp_avg().to(device));
            adam->exp_avg_sq(adam->exp_avg_sq().to(device));
            if (adam->max_exp_avg_sq().defined())
                adam->max_exp_avg_sq(adam->max_exp_avg_sq().to(device));
        } else if (auto* adamw = dynamic_cast<torch::optim::AdamWParamState*>(state.get())) {
            adamw->exp_avg(adamw->exp_avg().to(device));
            adamw->exp_avg_sq(adamw->exp_avg_sq().to(device));
            if (adamw->max_exp_avg_sq().defined())
                adamw->max_exp_avg_sq(adamw->max_exp_avg_sq().to(device));
        }
    }
}

void check_split(const Run& run) {
    if (run.options.batch_size < run.world.size())
        throw UsageError(fmt::format("a batch of {} cannot be split between {} processes: the "
                                     "batch is the global one, give at least one image each",
                                     run.options.batch_size, run.world.size()));
}

// After the net exists: every rank starts from rank 0's weights (DistributedDataParallel's
// convention), moves to its device, and hooks its gradients into the all-reduce.
void prepare_net(Run& run) {
    const TrainOptions& o = run.options;
    if (o.dropout >= 0.0) detail::set_dropout(*run.net, o.dropout);
    detail::broadcast_module(run.world, *run.net);
    if (run.device.device.is_cuda()) run.net->to(run.device.device);
    run.loss_scale = detail::LossScale(o.precision == "fp16");
    if (o.precision == "fp16" && !run.device.device.is_cuda())
        throw UsageError("precision fp16 needs a CUDA device; on the CPU use bf16 or fp32");
}

void hook_gradients(Run& run) {
    run.buckets = std::make_unique<detail::GradientBuckets>(run.world, run.net->parameters());
}

std::unique_ptr<torch::optim::Optimizer> make_optimizer(BoneAgeNetImpl& net,
                                                        const TrainOptions& o) {
    // Keras' Adam defaults: beta 0.9 / 0.999, epsilon 1e-7. Without weight decay the paper's
    // plain Adam (its L2 is part of the loss, on the named layer only); with it, AdamW.
    if (o.weight_decay > 0.0)
        return std::make_unique<torch::optim::AdamW>(
            net.parameters(), torch::optim::AdamWOptions(o.learning_rate)
                                  .betas({0.9, 0.999})
                                  .eps(1e-7)
                                  .weight_decay(o.weight_decay));
    return std::make_unique<torch::optim::Adam>(
        net.parameters(), torch::optim::AdamOptions(o.learning_rate).betas({0.9, 0.999}).eps(1e-7));
}

void set_learning_rate(torch::optim::Optimizer& optimizer, double lr) {
    for (auto& group : optimizer.param_groups()) group.options().set_lr(lr);
}

// The rate of `step` (from 1) of `epoch` (from 1): a pure function of the two, so a resumed
// run follows the schedule exactly.
double learning_rate_at(const TrainOptions& o, int epoch, int step, int steps) {
    if (o.schedule != "cosine") return o.learning_rate;
    const double done = static_cast<double>(epoch - 1) * steps + (step - 1);
    const double total = static_cast<double>(o.epochs) * steps;
    const double warm = o.warmup_epochs * steps;
    if (done < warm) return o.learning_rate * (done + 1.0) / warm;
    const double progress = (done - warm) / std::max(1.0, total - warm);
    return o.learning_rate * 0.5 * (1.0 + std::cos(M_PI * std::min(1.0, progress)));
}

torch::Tensor training_loss(const TrainOptions& o, const ModelConfig& config,
                            const torch::Tensor& pred, const torch::Tensor& ages) {
    if (o.loss == "mae") return scaled_mae_loss(pred, ages, config.label_scale);
    return msle_loss(pred, ages);
}

// bf16 convolutions in oneDNN run fastest on channels-last tensors.
bool trains_channels_last(const TrainOptions& o) { return o.precision == "bf16"; }

void use_memory_format(BoneAgeNetImpl& net, const TrainOptions& o) {
    if (trains_channels_last(o)) use_channels_last(net);
}

// Fine-tuning: every parameter and buffer of `net` from the model file `file`, which must be
// of the same architecture, head and use of sex (the input size may differ where the head
// does not depend on it); with `layers` "trunk", those outside the head alone.
void start_from(const std::filesystem::path& file, const LoadedModel& from,
                BoneAgeNetImpl& net, const std::string& layers) {
    try {
        models::copy_weights(*from.net, net, layers == "trunk" ? "head." : "");
    } catch (const UsageError& e) {
        throw UsageError(fmt::format(
            "{}: cannot start from this model: {} (at input size {}; the head 'gap' does not "
            "depend on the size, and --init-layers trunk leaves the head out)",
            file.string(), e.reason(), from.meta.config.input_size));
    }
}

void check_validation(const Run& run) {
    const std::string& monitor = run.options.early_stopping.monitor;
    if (run.data.val_rows.empty() && monitor.rfind("val_", 0) == 0)
        throw UsageError(
            fmt::format("early stopping watches {} but there are no validation images: give a "
                        "validation cache, a val split above 0, or monitor train_loss",
                        monitor));
}

double training_mean(const detail::TrainData& data) {
    double sum = 0.0;
    for (std::size_t r : data.train_rows) sum += data.train->age_months(r);
    return sum / static_cast<double>(data.train_rows.size());
}

// Months = y * scale + offset: the mean and spread of the training ages, so the fresh linear
// output starts near the mean.
void set_label_scaling(ModelConfig& config, const detail::TrainData& data) {
    double sq = 0.0;
    const double n = static_cast<double>(data.train_rows.size());
    const double mean = training_mean(data);
    for (std::size_t r : data.train_rows) sq += std::pow(data.train->age_months(r) - mean, 2);
    config.label_offset = mean;
    config.label_scale = std::max(1.0, std::sqrt(sq / n));
}

// The training rows' pixel mean and SD, as the net's first step (model.hpp: normalise_input).
void set_input_normalisation(ModelConfig& config, const detail::TrainData& data) {
    const detail::PixelStats s = detail::pixel_stats(*data.train, data.train_rows);
    if (!(s.sd >= 1e-3))
        throw UsageError(fmt::format("{}: the training pixels hardly vary (SD {}); they cannot "
                                     "be normalised",
                                     data.train->path().string(), s.sd));
    config.input_mean = s.mean;
    config.input_std = s.sd;
}

void write_history_csv(const std::filesystem::path& file, const std::vector<EpochStats>& history) {
    std::string csv = "epoch,train_loss,train_mae,val_loss,val_mae,val_rmse,ms_per_step,seconds,lr\n";
    for (const EpochStats& s : history)
        csv += fmt::format("{},{:.6g},{:.6g},{:.6g},{:.6g},{:.6g},{:.3f},{:.3f},{:.6g}\n", s.epoch,
                           s.train_loss, s.train_mae, s.val_loss, s.val_mae, s.val_rmse,
                           s.ms_per_step, s.seconds, s.lr);
    write_file_atomically(file, csv);
}

void save_run(Run& run) {
    detail::CheckpointState state;
    state.epoch = run.epochs_done;
    state.options = run.options;
    state.config = run.net->config();
    state.early_stopping = run.stopping.state();
    state.history = run.history;
    state.step_ms = run.step_ms;
    std::ostringstream rng;
    rng << run.order_rng;
    state.order_rng = rng.str();
    state.stopped_early = run.stopped_early;
    detail::save_checkpoint(run.checkpoint(), state, *run.net, *run.optimizer, run.best);
    write_history_csv(run.dir / kHistoryFile, run.history);
}

double monitored(const EpochStats& s, const std::string& monitor) {
    if (monitor == "val_loss") return s.val_loss;
    if (monitor == "val_mae") return s.val_mae;
    if (monitor == "val_rmse") return s.val_rmse;
    if (monitor == "train_loss") return s.train_loss;
    return s.train_mae;
}

[[noreturn]] void diverged(const Run& run, int epoch, int step, int steps, double loss) {
    const std::string kept =
        run.epochs_done > 0
            ? fmt::format("the last good checkpoint (epoch {}) is kept", run.epochs_done)
            : std::string("no epoch finished, so there is no checkpoint");
    throw Error(ErrorKind::BadData, run.checkpoint(),
                fmt::format("training diverged: the loss is {} at epoch {}, step {} of {}; {} "
                            "(a lower learning rate may help)",
                            loss, epoch, step, steps, kept));
}

// One epoch of training steps; fills the train_* and timing fields of `stats`.
//
// With several processes every rank walks the same global order and takes its share of each
// global batch (detail::share_of), so the batches, and what each image's augmentation draws,
// are those of one process. Each rank's loss is its images' mean scaled by its share of the
// batch times the ranks, so the all-reduce's mean of the gradients is the gradient of the
// global batch's mean loss; the L2 term, the same on every rank, stays whole.
void train_epoch(Run& run, int epoch, const TrainCallbacks& cb, EpochStats& stats) {
    const TrainOptions& o = run.options;
    const auto& rows = run.data.train_rows;
    const std::vector<std::size_t> order =
        detail::epoch_order(o.seed, epoch, rows.size(), run.order_rng);
    const int ranks = run.world.size();
    const int steps =
        detail::steps_in_epoch(rows.size(), o.batch_size, o.steps_per_epoch, ranks);
    if (cb.on_epoch_start) cb.on_epoch_start(epoch, o.epochs, steps);
    stats.lr = learning_rate_at(o, epoch, 1, steps);

    // Dropout draws from torch's generator: seed it per epoch so a resumed run repeats it;
    // each rank's stream apart from the others'.
    torch::manual_seed(o.seed * 1000 + static_cast<std::uint64_t>(epoch) +
                       (static_cast<std::uint64_t>(run.world.rank()) << 40));
    run.net->train();
    double loss_sum = 0.0, abs_sum = 0.0, seen = 0.0;
    std::vector<double> epoch_ms, grad_norms, wait_ms;
    stats.clipped_steps = 0;
    const torch::Device device = run.device.device;
    // The next batch is read and augmented on a worker thread while this step runs; what a
    // batch holds depends only on (seed, epoch, rows), so the overlap changes no result.
    auto load = [&](int step) {
        const std::size_t begin = static_cast<std::size_t>(step - 1) * o.batch_size;
        const std::size_t end = std::min(order.size(), begin + o.batch_size);
        const detail::Share share = detail::share_of(end - begin, run.world.rank(), ranks);
        std::vector<std::size_t> batch_rows;
        for (std::size_t i = begin + share.begin; i < begin + share.end; ++i)
            batch_rows.push_back(rows[order[i]]);
        detail::Batch b = detail::make_batch(*run.data.train, batch_rows,
                                             run.net->config().input_size, o, epoch, o.augment,
                                             /*threads=*/1);
        return std::make_pair(std::move(b), end - begin);
    };
    // --batch-norm sync: this thread's forward passes normalise with the global batch.
    const models::BatchNormHookScope sync_bn(
        o.batch_norm == "sync" ? detail::sync_batch_norm_hook(run.world) : models::BatchNormHook());
    std::future<std::pair<detail::Batch, std::size_t>> next =
        std::async(std::launch::async, load, 1);
    for (int step = 1; step <= steps; ++step) {
        const Clock::time_point t0 = Clock::now();  // a wait for the loader counts too
        auto [b, global_count] = next.get();
        if (step < steps) next = std::async(std::launch::async, load, step + 1);
        if (device.is_cuda()) {
            b.images = b.images.to(device);
            b.ages = b.ages.to(device);
            b.sex = b.sex.to(device);
        }

        set_learning_rate(*run.optimizer, learning_rate_at(o, epoch, step, steps));
        run.optimizer->zero_grad();
        torch::Tensor pred;
        {
            detail::TrainingAutocast autocast(o.precision, device);  // loss and update stay fp32
            pred = run.net->forward(trains_channels_last(o) ? channels_last(b.images) : b.images,
                                    b.sex);
        }
        pred = pred.reshape({-1}).to(torch::kFloat32);
        const double n = static_cast<double>(b.ages.size(0));
        torch::Tensor data_loss = training_loss(o, run.net->config(), pred, b.ages);
        const torch::Tensor l2 = l2_penalty(*run.net, o.l2);
        torch::Tensor loss = data_loss + l2;
        const double loss_value = loss.item<double>();  // this rank's images
        if (!std::isfinite(loss_value)) diverged(run, epoch, step, steps, loss_value);
        if (ranks > 1)
            loss = data_loss * (n * ranks / static_cast<double>(global_count)) + l2;
        if (run.loss_scale.enabled()) loss = loss * run.loss_scale.scale();
        run.buckets->start();
        loss.backward();
        wait_ms.push_back(run.buckets->finish());
        const bool step_ok = run.loss_scale.unscale_and_check(run.net->parameters());
        if (o.clip_grad_norm > 0.0) {
            const double norm = torch::nn::utils::clip_grad_norm_(run.net->parameters(),
                                                                  o.clip_grad_norm);
            grad_norms.push_back(norm);
            if (norm > o.clip_grad_norm) ++stats.clipped_steps;
        }
        if (step_ok) run.optimizer->step();  // fp16: skipped when the gradients overflowed

        loss_sum += loss_value * n;
        abs_sum += (pred.detach() - b.ages).abs().sum().item<double>();
        seen += n;
        epoch_ms.push_back(ms_since(t0));
        if (cb.on_step) cb.on_step(step, steps, loss_sum / seen, abs_sum / seen);
    }
    run.step_ms.insert(run.step_ms.end(), epoch_ms.begin(), epoch_ms.end());
    // The epoch's figures over every rank's images.
    torch::Tensor sums = torch::tensor({loss_sum, abs_sum, seen}, torch::kFloat64);
    run.world.all_reduce_sum(sums);
    stats.train_loss = sums[0].item<double>() / sums[2].item<double>();
    stats.train_mae = sums[1].item<double>() / sums[2].item<double>();
    stats.ms_per_step = median(epoch_ms);
    stats.grad_norm = grad_norms.empty() ? kNaN : median(grad_norms);
    stats.allreduce_ms = run.world.distributed() ? median(wait_ms) : 0.0;
    // Local batch norm: each rank's running statistics saw only its images; keep rank 0's
    // everywhere, so validation and the checkpoint see one model (DDP's broadcast_buffers).
    detail::broadcast_module(run.world, *run.net, /*parameters=*/false, /*buffers=*/true);
}

// Every rank measures its share of the validation rows; the sums are then reduced.
ValidationMetrics measure_shared(Run& run) {
    const auto& rows = run.data.val_rows;
    if (!run.world.distributed())
        return measure(*run.net, *run.data.val, rows, run.options.batch_size);
    const detail::Share share = detail::share_of(rows.size(), run.world.rank(), run.world.size());
    ValidationMetrics mine;
    if (share.size() > 0)
        mine = measure(*run.net, *run.data.val,
                       std::vector<std::size_t>(rows.begin() + share.begin, rows.begin() + share.end),
                       run.options.batch_size);
    const double n = static_cast<double>(mine.n);
    torch::Tensor sums = torch::tensor(
        {n, mine.mae * n, mine.rmse * mine.rmse * n, mine.msle * n}, torch::kFloat64);
    run.world.all_reduce_sum(sums);
    ValidationMetrics all;
    all.n = static_cast<std::size_t>(sums[0].item<double>());
    const double total = sums[0].item<double>();
    all.mae = sums[1].item<double>() / total;
    all.rmse = std::sqrt(sums[2].item<double>() / total);
    all.msle = sums[3].item<double>() / total;
    return all;
}

void validate_epoch(Run& run, EpochStats& stats) {
    stats.val_loss = stats.val_mae = stats.val_rmse = stats.val_msle = kNaN;
    if (run.data.val_rows.empty()) return;
    const ValidationMetrics m = measure_shared(run);
    torch::NoGradGuard no_grad;
    stats.val_msle = m.msle;
    const double loss =
        run.options.loss == "mae" ? m.mae / run.net->config().label_scale : m.msle;
    stats.val_loss = loss + l2_penalty(*run.net, run.options.l2).item<double>();
    stats.val_mae = m.mae;
    stats.val_rmse = m.rmse;
}

void run_epochs(Run& run, const TrainCallbacks& cb) {
    for (int epoch = run.epochs_done + 1; epoch <= run.options.epochs && !run.stopped_early;
         ++epoch) {
        const Clock::time_point t0 = Clock::now();
        EpochStats stats;
        stats.epoch = epoch;
        train_epoch(run, epoch, cb, stats);
        validate_epoch(run, stats);
        run.stopped_early =
            run.stopping.update(epoch, monitored(stats, run.options.early_stopping.monitor));
        stats.best = run.stopping.improved();
        // Rank 0 decides; the others hold the same reduced figures, but one decision is sure
        // to end every rank's loop at the same epoch.
        torch::Tensor decision =
            torch::tensor({run.stopped_early ? 1.0 : 0.0, stats.best ? 1.0 : 0.0});
        run.world.broadcast(decision);
        run.stopped_early = decision[0].item<double>() > 0.5;
        stats.best = decision[1].item<double>() > 0.5;
        if (stats.best) run.best = detail::snapshot(*run.net);
        stats.seconds = ms_since(t0) / 1000.0;
        run.history.push_back(stats);
        run.epochs_done = epoch;
        if (run.world.is_root()) save_run(run);
        if (cb.on_epoch_end) cb.on_epoch_end(stats, run.options.epochs);
    }
}

nlohmann::json training_summary(const Run& run, double ms_per_step) {
    nlohmann::json history = nlohmann::json::array();
    for (const EpochStats& s : run.history) history.push_back(s);
    const TrainOptions& o = run.options;
    return {
        {"arch", o.arch},
        {"head", o.head},
        {"use_sex", o.use_sex},
        {"epochs_run", run.epochs_done},
        {"best_epoch", run.stopping.best_epoch()},
        {"stopped_early", run.stopped_early},
        {"train_cache", {{"path", o.train_cache.string()}, {"count", run.data.train_rows.size()}}},
        {"val_cache",
         o.val_cache.empty() ? nlohmann::json() : nlohmann::json(o.val_cache.string())},
        {"val_count", run.data.val_rows.size()},
        {"folds", o.folds >= 2 ? nlohmann::json{{"fold", o.fold}, {"of", o.folds}}
                               : nlohmann::json()},
        {"train_rows_excluded", run.data.excluded},
        {"init_from", o.init_from.empty() ? nlohmann::json() : nlohmann::json(o.init_from.string())},
        {"options", o},
        {"history", history},
        {"ms_per_step", ms_per_step},
        {"processes", run.world.size()}};
}

// Puts the best epoch's weights back and writes the model file (rank 0 only).
TrainResult finish(Run& run) {
    if (!run.best.empty()) detail::restore(*run.net, run.best);
    run.buckets.reset();
    if (run.device.device.is_cuda()) run.net->to(torch::kCPU);
    run.net->eval();

    TrainResult r;
    r.model_file = run.options.out;
    r.run_dir = run.dir;
    r.history = run.history;
    r.epochs_run = run.epochs_done;
    r.best_epoch = run.stopping.best_epoch();
    r.stopped_early = run.stopped_early;
    r.ms_per_step = median(run.step_ms);
    r.rank = run.world.rank();
    r.world_size = run.world.size();
    if (run.world.distributed()) r.process_group = run.world.where();
    r.device = run.device.device.str();
    r.device_note = run.device.note;

    r.meta.config = run.net->config();
    r.meta.weights_dtype = run.options.weights_dtype;
    r.meta.preprocess = run.data.train->settings();
    r.meta.preprocess_version = run.data.train->preprocess_version();  // what the weights saw
    r.meta.training = training_summary(run, r.ms_per_step);
    r.meta.validation = {{"n", run.data.val_rows.size()}};
    if (r.best_epoch > 0 && !run.data.val_rows.empty()) {
        const EpochStats& b = run.history.at(static_cast<std::size_t>(r.best_epoch - 1));
        r.meta.validation = {{"n", run.data.val_rows.size()},
                             {"epoch", b.epoch},
                             {"mae", b.val_mae},
                             {"rmse", b.val_rmse},
                             {"msle", b.val_msle}};
    }
    if (run.world.is_root()) save_model(run.options.out, run.net, r.meta);
    run.world.barrier();  // every rank ends once the model file is there
    return r;
}

}  // namespace

TrainResult train(const TrainOptions& options, const TrainCallbacks& callbacks) {
    validate(options);
    const detail::ProcessEnv env = process_env();
    Run run(options, run_dir_of(options), EarlyStopping(options.early_stopping));
    check_validation(run);
    use_threads(options.threads, env);
    Placement placed = place(options, env);
    run.world = placed.world;
    run.device = placed.device;
    check_split(run);

    ModelConfig config;
    config.arch = options.arch;
    config.head = options.head;
    config.use_sex = options.use_sex;
    config.input_size = options.input_size > 0 ? options.input_size : run.data.train->image_size();
    std::optional<LoadedModel> start;
    if (!options.init_from.empty()) {
        start = load_model(options.init_from);
        detail::check_preprocessing(options.init_from, *start, options);
        const ModelConfig& c = start->meta.config;
        const bool whole = options.init_layers == "all";
        if (c.arch != config.arch ||
            (whole && (c.head != config.head || c.use_sex != config.use_sex)))
            throw UsageError(fmt::format(
                "{}: cannot start from this model: it is {} with head {}{}, the run wants {} "
                "with head {}{}{}",
                options.init_from.string(), c.arch, c.head, c.use_sex ? " and sex" : "",
                config.arch, config.head, config.use_sex ? " and sex" : "",
                whole && c.arch == config.arch ? " (--init-layers trunk takes its trunk alone)"
                                               : ""));
        // A whole model's output already speaks in months through its own scaling: keep it.
        // A fresh head learns the scaling of this run's labels.
        if (whole) {
            config.label_offset = c.label_offset;
            config.label_scale = c.label_scale;
        } else {
            set_label_scaling(config, run.data);
        }
        // Its first layer expects its own input normalisation.
        config.input_mean = c.input_mean;
        config.input_std = c.input_std;
        if (options.input_norm == "dataset" && c.input_mean == 0.0 && c.input_std == 1.0)
            throw UsageError(fmt::format(
                "{}: cannot normalise the input of a run that starts from this model: it was "
                "trained on unnormalised images (leave out --input-norm; a model trained with "
                "it passes its normalisation on)",
                options.init_from.string()));
    } else {
        set_label_scaling(config, run.data);
        if (options.input_norm == "dataset") set_input_normalisation(config, run.data);
    }
    torch::manual_seed(options.seed);  // the initial weights
    run.net = make_model(config);
    if (start) start_from(options.init_from, *start, *run.net, options.init_layers);
    detail::set_batchnorm_momentum(*run.net, options.bn_momentum);
    // After the weights are drawn, and drawing nothing itself: the rest of the run is the
    // same as without it but for this one bias.
    if (options.init_output_bias == "mean")
        detail::set_output_bias_to_mean(*run.net, *run.data.train, run.data.train_rows,
                                        training_mean(run.data), options.batch_size);
    prepare_net(run);
    use_memory_format(*run.net, options);
    run.optimizer = make_optimizer(*run.net, options);
    hook_gradients(run);

    if (run.world.is_root()) {
        std::error_code ec;
        std::filesystem::create_directories(run.dir, ec);
        if (ec)
            throw Error(ErrorKind::NotFound, run.dir,
                        "cannot create the run directory: " + ec.message());
        std::filesystem::remove(run.checkpoint(), ec);  // an earlier run's; this one starts over
        std::filesystem::remove(run.dir / kHistoryFile, ec);
    }

    run_epochs(run, callbacks);
    return finish(run);
}

TrainResult resume_training(const std::filesystem::path& run_dir, const ResumeOptions& resume,
                            const TrainCallbacks& callbacks) {
    // The processes meet first: with several, only rank 0 needs to see the run dir.
    const detail::ProcessEnv env = process_env();
    TrainOptions launch;
    launch.device = resume.device.value_or(launch.device);
    launch.backend = resume.backend.value_or(launch.backend);
    launch.dist_timeout_s = resume.dist_timeout_s.value_or(launch.dist_timeout_s);
    Placement placed = place(launch, env);
    CheckpointCopy checkpoint(placed.world, run_dir / kCheckpointFile);
    const std::filesystem::path file = checkpoint.path();

    detail::CheckpointState state = detail::read_checkpoint_state(file);
    TrainOptions options = state.options;
    if (resume.epochs) options.epochs = *resume.epochs;
    if (resume.learning_rate) options.learning_rate = *resume.learning_rate;
    if (resume.threads) options.threads = *resume.threads;
    options.device = launch.device;
    options.backend = launch.backend;
    options.dist_timeout_s = launch.dist_timeout_s;
    options.run_dir = run_dir;
    validate(options);

    Run run(options, run_dir, EarlyStopping::from_state(state.early_stopping));
    run.world = placed.world;
    run.device = placed.device;
    check_validation(run);
    check_split(run);
    use_threads(options.threads, env);
    run.net = make_model(state.config);
    detail::set_batchnorm_momentum(*run.net, options.bn_momentum);
    run.optimizer = make_optimizer(*run.net, state.options);
    detail::load_checkpoint_tensors(file, *run.net, *run.optimizer, run.best);
    prepare_net(run);
    move_optimizer_state(*run.optimizer, run.device.device);
    use_memory_format(*run.net, options);
    hook_gradients(run);
    if (resume.learning_rate) set_learning_rate(*run.optimizer, *resume.learning_rate);
    run.history = std::move(state.history);
    run.step_ms = std::move(state.step_ms);
    std::istringstream rng(state.order_rng);
    rng >> run.order_rng;
    run.epochs_done = state.epoch;
    run.stopped_early = state.stopped_early;

    run_epochs(run, callbacks);
    return finish(run);
}

}  // namespace boneage
