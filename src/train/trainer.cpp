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
#include <fstream>
#include <future>
#include <limits>
#include <optional>
#include <sstream>


#include "train/batches.hpp"
#include "train/checkpoint.hpp"
#include "train/net_setup.hpp"
#include "train/preprocess_checks.hpp"
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
    BoneAgeNet net;
    std::unique_ptr<torch::optim::Optimizer> optimizer;
    EarlyStopping stopping;
    detail::WeightSnapshot best;
    std::vector<EpochStats> history;
    std::vector<double> step_ms;
    std::mt19937_64 order_rng;
    int epochs_done = 0;
    bool stopped_early = false;

    std::filesystem::path checkpoint() const { return dir / kCheckpointFile; }
};

void use_threads(int threads) {
    torch::set_num_threads(threads > 0 ? threads : default_thread_count());
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
// does not depend on it).
void start_from(const std::filesystem::path& file, const LoadedModel& from, BoneAgeNetImpl& net) {
    try {
        models::copy_weights(*from.net, net);
    } catch (const UsageError& e) {
        throw UsageError(fmt::format(
            "{}: cannot start from this model: {} (at input size {}; the head 'gap' does not "
            "depend on the size)",
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
void train_epoch(Run& run, int epoch, const TrainCallbacks& cb, EpochStats& stats) {
    const TrainOptions& o = run.options;
    const auto& rows = run.data.train_rows;
    const std::vector<std::size_t> order =
        detail::epoch_order(o.seed, epoch, rows.size(), run.order_rng);
    const int steps = detail::steps_in_epoch(rows.size(), o.batch_size, o.steps_per_epoch);
    if (cb.on_epoch_start) cb.on_epoch_start(epoch, o.epochs, steps);
    stats.lr = learning_rate_at(o, epoch, 1, steps);

    // Dropout draws from torch's generator: seed it per epoch so a resumed run repeats it.
    torch::manual_seed(o.seed * 1000 + static_cast<std::uint64_t>(epoch));
    run.net->train();
    double loss_sum = 0.0, abs_sum = 0.0, seen = 0.0;
    std::vector<double> epoch_ms, grad_norms;
    stats.clipped_steps = 0;
    // The next batch is read and augmented on a worker thread while this step runs; what a
    // batch holds depends only on (seed, epoch, rows), so the overlap changes no result.
    auto load = [&](int step) {
        const std::size_t begin = static_cast<std::size_t>(step - 1) * o.batch_size;
        const std::size_t end = std::min(order.size(), begin + o.batch_size);
        std::vector<std::size_t> batch_rows;
        for (std::size_t i = begin; i < end; ++i) batch_rows.push_back(rows[order[i]]);
        return detail::make_batch(*run.data.train, batch_rows, run.net->config().input_size, o,
                                  epoch, o.augment, /*threads=*/1);
    };
    std::future<detail::Batch> next = std::async(std::launch::async, load, 1);
    for (int step = 1; step <= steps; ++step) {
        const Clock::time_point t0 = Clock::now();  // a wait for the loader counts too
        const detail::Batch b = next.get();
        if (step < steps) next = std::async(std::launch::async, load, step + 1);

        set_learning_rate(*run.optimizer, learning_rate_at(o, epoch, step, steps));
        run.optimizer->zero_grad();
        torch::Tensor pred;
        {
            Bf16Autocast bf16(o.precision == "bf16");  // the loss and update stay fp32
            pred = run.net->forward(trains_channels_last(o) ? channels_last(b.images) : b.images,
                                    b.sex);
        }
        pred = pred.reshape({-1}).to(torch::kFloat32);
        const torch::Tensor loss =
            training_loss(o, run.net->config(), pred, b.ages) + l2_penalty(*run.net, o.l2);
        const double loss_value = loss.item<double>();
        if (!std::isfinite(loss_value)) diverged(run, epoch, step, steps, loss_value);
        loss.backward();
        if (o.clip_grad_norm > 0.0) {
            const double norm = torch::nn::utils::clip_grad_norm_(run.net->parameters(),
                                                                  o.clip_grad_norm);
            grad_norms.push_back(norm);
            if (norm > o.clip_grad_norm) ++stats.clipped_steps;
        }
        run.optimizer->step();

        const double n = static_cast<double>(b.ages.size(0));
        loss_sum += loss_value * n;
        abs_sum += (pred.detach() - b.ages).abs().sum().item<double>();
        seen += n;
        epoch_ms.push_back(ms_since(t0));
        if (cb.on_step) cb.on_step(step, steps, loss_sum / seen, abs_sum / seen);
    }
    run.step_ms.insert(run.step_ms.end(), epoch_ms.begin(), epoch_ms.end());
    stats.train_loss = loss_sum / seen;
    stats.train_mae = abs_sum / seen;
    stats.ms_per_step = median(epoch_ms);
    stats.grad_norm = grad_norms.empty() ? kNaN : median(grad_norms);
}

void validate_epoch(Run& run, EpochStats& stats) {
    stats.val_loss = stats.val_mae = stats.val_rmse = stats.val_msle = kNaN;
    if (run.data.val_rows.empty()) return;
    const ValidationMetrics m =
        measure(*run.net, *run.data.val, run.data.val_rows, run.options.batch_size);
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
        if (stats.best) run.best = detail::snapshot(*run.net);
        stats.seconds = ms_since(t0) / 1000.0;
        run.history.push_back(stats);
        run.epochs_done = epoch;
        save_run(run);
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
        {"ms_per_step", ms_per_step}};
}

// Puts the best epoch's weights back and writes the model file.
TrainResult finish(Run& run) {
    if (!run.best.empty()) detail::restore(*run.net, run.best);
    run.net->eval();

    TrainResult r;
    r.model_file = run.options.out;
    r.run_dir = run.dir;
    r.history = run.history;
    r.epochs_run = run.epochs_done;
    r.best_epoch = run.stopping.best_epoch();
    r.stopped_early = run.stopped_early;
    r.ms_per_step = median(run.step_ms);

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
    save_model(run.options.out, run.net, r.meta);
    return r;
}

}  // namespace

TrainResult train(const TrainOptions& options, const TrainCallbacks& callbacks) {
    validate(options);
    Run run(options, run_dir_of(options), EarlyStopping(options.early_stopping));
    check_validation(run);
    use_threads(options.threads);

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
        if (c.arch != config.arch || c.head != config.head || c.use_sex != config.use_sex)
            throw UsageError(fmt::format(
                "{}: cannot start from this model: it is {} with head {}{}, the run wants {} "
                "with head {}{}",
                options.init_from.string(), c.arch, c.head, c.use_sex ? " and sex" : "",
                config.arch, config.head, config.use_sex ? " and sex" : ""));
        // Its output already speaks in months through its own scaling, and its first layer
        // expects its own input normalisation: keep both.
        config.label_offset = c.label_offset;
        config.label_scale = c.label_scale;
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
    if (start) start_from(options.init_from, *start, *run.net);
    detail::set_batchnorm_momentum(*run.net, options.bn_momentum);
    // After the weights are drawn, and drawing nothing itself: the rest of the run is the
    // same as without it but for this one bias.
    if (options.init_output_bias == "mean")
        detail::set_output_bias_to_mean(*run.net, *run.data.train, run.data.train_rows,
                                        training_mean(run.data), options.batch_size);
    use_memory_format(*run.net, options);
    run.optimizer = make_optimizer(*run.net, options);

    std::error_code ec;
    std::filesystem::create_directories(run.dir, ec);
    if (ec)
        throw Error(ErrorKind::NotFound, run.dir,
                    "cannot create the run directory: " + ec.message());
    std::filesystem::remove(run.checkpoint(), ec);  // an earlier run's; this one starts over
    std::filesystem::remove(run.dir / kHistoryFile, ec);

    run_epochs(run, callbacks);
    return finish(run);
}

TrainResult resume_training(const std::filesystem::path& run_dir, const ResumeOptions& resume,
                            const TrainCallbacks& callbacks) {
    const std::filesystem::path file = run_dir / kCheckpointFile;
    detail::CheckpointState state = detail::read_checkpoint_state(file);
    TrainOptions options = state.options;
    if (resume.epochs) options.epochs = *resume.epochs;
    if (resume.learning_rate) options.learning_rate = *resume.learning_rate;
    if (resume.threads) options.threads = *resume.threads;
    options.run_dir = run_dir;
    validate(options);

    Run run(options, run_dir, EarlyStopping::from_state(state.early_stopping));
    check_validation(run);
    use_threads(options.threads);
    run.net = make_model(state.config);
    detail::set_batchnorm_momentum(*run.net, options.bn_momentum);
    run.optimizer = make_optimizer(*run.net, state.options);
    detail::load_checkpoint_tensors(file, *run.net, *run.optimizer, run.best);
    use_memory_format(*run.net, options);
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
