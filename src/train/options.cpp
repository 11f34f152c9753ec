// TrainOptions and EpochStats to and from JSON (checkpoints and model files carry them), and
// the checks that reject a bad run before it touches any file.
#include <fmt/format.h>

#include <boneage/error.hpp>
#include <boneage/train.hpp>
#include <cmath>
#include <limits>

namespace boneage {

namespace {
nlohmann::json number_or_null(double v) {
    return std::isfinite(v) ? nlohmann::json(v) : nlohmann::json();
}

double number_or_nan(const nlohmann::json& j, const char* key) {
    if (!j.contains(key) || j.at(key).is_null()) return std::numeric_limits<double>::quiet_NaN();
    return j.at(key).get<double>();
}
}  // namespace

void to_json(nlohmann::json& j, const TrainOptions& o) {
    const AugmentSettings& a = o.augment_settings;
    j = {{"arch", o.arch},
         {"head", o.head},
         {"use_sex", o.use_sex},
         {"train_cache", o.train_cache.string()},
         {"val_cache", o.val_cache.string()},
         {"val_split", o.val_split},
         {"val_cache_split", o.val_cache_split},
         {"folds", o.folds},
         {"fold", o.fold},
         {"init_from", o.init_from.string()},
         {"init_layers", o.init_layers},
         {"allow_preprocess_mismatch", o.allow_preprocess_mismatch},
         {"out", o.out.string()},
         {"run_dir", o.run_dir.string()},
         {"epochs", o.epochs},
         {"batch_size", o.batch_size},
         {"learning_rate", o.learning_rate},
         {"schedule", o.schedule},
         {"warmup_epochs", o.warmup_epochs},
         {"loss", o.loss},
         {"l2", o.l2},
         {"weight_decay", o.weight_decay},
         {"seed", o.seed},
         {"augment", o.augment},
         {"augment_settings",
          {{"rotation_deg", a.rotation_deg},
           {"shift", a.shift},
           {"scale", a.scale},
           {"contrast", a.contrast},
           {"brightness", a.brightness}}},
         {"precision", o.precision},
         {"weights_dtype", o.weights_dtype},
         {"threads", o.threads},
         {"input_size", o.input_size},
         {"steps_per_epoch", o.steps_per_epoch},
         {"early_stopping", o.early_stopping},
         {"init_output_bias", o.init_output_bias},
         {"clip_grad_norm", o.clip_grad_norm},
         {"bn_momentum", o.bn_momentum},
         {"input_norm", o.input_norm},
         {"dropout", o.dropout},
         {"device", o.device},
         {"backend", o.backend},
         {"dist_timeout_s", o.dist_timeout_s},
         {"batch_norm", o.batch_norm}};
}

void from_json(const nlohmann::json& j, TrainOptions& o) {
    const TrainOptions d;
    o.arch = j.value("arch", d.arch);
    o.head = j.value("head", d.head);
    o.use_sex = j.value("use_sex", d.use_sex);
    o.train_cache = j.value("train_cache", std::string());
    o.val_cache = j.value("val_cache", std::string());
    o.val_split = j.value("val_split", d.val_split);
    o.val_cache_split = j.value("val_cache_split", d.val_cache_split);
    o.folds = j.value("folds", d.folds);
    o.fold = j.value("fold", d.fold);
    o.init_from = j.value("init_from", std::string());
    o.init_layers = j.value("init_layers", d.init_layers);
    o.allow_preprocess_mismatch = j.value("allow_preprocess_mismatch", d.allow_preprocess_mismatch);
    o.out = j.value("out", std::string());
    o.run_dir = j.value("run_dir", std::string());
    o.epochs = j.value("epochs", d.epochs);
    o.batch_size = j.value("batch_size", d.batch_size);
    o.learning_rate = j.value("learning_rate", d.learning_rate);
    o.schedule = j.value("schedule", d.schedule);
    o.warmup_epochs = j.value("warmup_epochs", d.warmup_epochs);
    o.loss = j.value("loss", d.loss);
    o.l2 = j.value("l2", d.l2);
    o.weight_decay = j.value("weight_decay", d.weight_decay);
    o.seed = j.value("seed", d.seed);
    o.augment = j.value("augment", d.augment);
    if (j.contains("augment_settings")) {
        const nlohmann::json& a = j.at("augment_settings");
        const AugmentSettings da;
        o.augment_settings.rotation_deg = a.value("rotation_deg", da.rotation_deg);
        o.augment_settings.shift = a.value("shift", da.shift);
        o.augment_settings.scale = a.value("scale", da.scale);
        o.augment_settings.contrast = a.value("contrast", da.contrast);
        o.augment_settings.brightness = a.value("brightness", da.brightness);
    }
    o.precision = j.value("precision", d.precision);
    o.weights_dtype = j.value("weights_dtype", d.weights_dtype);
    o.threads = j.value("threads", d.threads);
    o.input_size = j.value("input_size", d.input_size);
    o.steps_per_epoch = j.value("steps_per_epoch", d.steps_per_epoch);
    if (j.contains("early_stopping"))
        o.early_stopping = j.at("early_stopping").get<EarlyStoppingOptions>();
    o.init_output_bias = j.value("init_output_bias", d.init_output_bias);
    o.clip_grad_norm = j.value("clip_grad_norm", d.clip_grad_norm);
    o.bn_momentum = j.value("bn_momentum", d.bn_momentum);
    o.input_norm = j.value("input_norm", d.input_norm);
    o.dropout = j.value("dropout", d.dropout);
    o.device = j.value("device", d.device);
    o.backend = j.value("backend", d.backend);
    o.dist_timeout_s = j.value("dist_timeout_s", d.dist_timeout_s);
    o.batch_norm = j.value("batch_norm", d.batch_norm);
}

void validate(const TrainOptions& o) {
    if (o.arch != "shallow" && o.arch != "resnet50" && o.arch != "inceptionv4" &&
        o.arch != "resnet18")
        throw UsageError(fmt::format(
            "unknown arch '{}' (shallow, resnet50, inceptionv4 or resnet18)", o.arch));
    if (o.head != "flatten" && o.head != "gap")
        throw UsageError(fmt::format("unknown head '{}' (flatten or gap)", o.head));
    if (o.train_cache.empty()) throw UsageError("no training cache given");
    if (o.out.empty()) throw UsageError("no output model file given");
    if (o.val_cache.empty() && !(o.val_split >= 0.0 && o.val_split < 1.0))
        throw UsageError(fmt::format("val_split must be in [0, 1), not {}", o.val_split));
    if (o.epochs < 1) throw UsageError(fmt::format("epochs must be at least 1, not {}", o.epochs));
    if (o.batch_size < 1)
        throw UsageError(fmt::format("batch size must be at least 1, not {}", o.batch_size));
    if (!(o.learning_rate > 0.0) || !std::isfinite(o.learning_rate))
        throw UsageError(
            fmt::format("learning rate must be a positive number, not {}", o.learning_rate));
    if (!(o.l2 >= 0.0) || !std::isfinite(o.l2))
        throw UsageError(fmt::format("L2 factor must be >= 0, not {}", o.l2));
    if (!(o.val_cache_split >= 0.0 && o.val_cache_split < 1.0))
        throw UsageError(
            fmt::format("val_cache_split must be in [0, 1), not {}", o.val_cache_split));
    if (o.schedule != "constant" && o.schedule != "cosine")
        throw UsageError(fmt::format("unknown schedule '{}' (constant or cosine)", o.schedule));
    if (!(o.warmup_epochs >= 0.0) || o.warmup_epochs > o.epochs)
        throw UsageError(fmt::format("warm-up must be 0 to {} epochs, not {}", o.epochs,
                                     o.warmup_epochs));
    if (o.loss != "msle" && o.loss != "mae")
        throw UsageError(fmt::format("unknown loss '{}' (msle or mae)", o.loss));
    if (!(o.weight_decay >= 0.0) || !std::isfinite(o.weight_decay))
        throw UsageError(fmt::format("weight decay must be >= 0, not {}", o.weight_decay));
    if (o.precision != "fp32" && o.precision != "bf16" && o.precision != "fp16")
        throw UsageError(
            fmt::format("unknown precision '{}' (fp32, bf16 or fp16)", o.precision));
    if (o.weights_dtype != "float32" && o.weights_dtype != "float16")
        throw UsageError(
            fmt::format("unknown weights dtype '{}' (float32 or float16)", o.weights_dtype));
    if (o.threads < 0) throw UsageError(fmt::format("threads must be >= 0, not {}", o.threads));
    // The bounds a model file is held to when it is loaded: a run must not write a file that
    // cannot be read back.
    if (o.input_size < 0 || (o.input_size > 0 && (o.input_size < 32 || o.input_size > 1024)))
        throw UsageError(fmt::format(
            "input size must be 0 (the cache's) or 32 to 1024, not {}", o.input_size));
    if (o.steps_per_epoch < 0)
        throw UsageError(fmt::format("steps per epoch must be >= 0, not {}", o.steps_per_epoch));
    if (o.folds != 0 && (o.folds < 2 || o.fold < 0 || o.fold >= o.folds))
        throw UsageError(fmt::format("fold {} of {}: the folds must be at least 2 and the fold "
                                     "0 to folds - 1",
                                     o.fold, o.folds));
    if (o.folds != 0 && o.val_cache_split > 0.0)
        throw UsageError("give either a cross-validation fold or val_cache_split, not both");
    if (o.init_output_bias != "none" && o.init_output_bias != "mean")
        throw UsageError(
            fmt::format("unknown init_output_bias '{}' (none or mean)", o.init_output_bias));
    if (o.init_layers != "all" && o.init_layers != "trunk")
        throw UsageError(fmt::format("unknown init_layers '{}' (all or trunk)", o.init_layers));
    if (o.init_layers == "trunk" && o.init_from.empty())
        throw UsageError("init_layers trunk takes the trunk of a model file: give init_from");
    if (o.init_output_bias == "mean" && !o.init_from.empty() && o.init_layers == "all")
        throw UsageError("init_output_bias mean sets up a fresh output layer; a run that starts "
                         "from a whole model file keeps that model's output (init_layers trunk "
                         "starts the head fresh)");
    if (!(o.clip_grad_norm >= 0.0) || !std::isfinite(o.clip_grad_norm))
        throw UsageError(
            fmt::format("clip_grad_norm must be >= 0 (0: off), not {}", o.clip_grad_norm));
    if (!(o.bn_momentum >= 0.0 && o.bn_momentum <= 1.0))
        throw UsageError(fmt::format("bn_momentum must be in [0, 1], not {}", o.bn_momentum));
    if (o.input_norm != "none" && o.input_norm != "dataset")
        throw UsageError(fmt::format("unknown input_norm '{}' (none or dataset)", o.input_norm));
    if (!(o.dropout < 1.0) || std::isnan(o.dropout))
        throw UsageError(fmt::format("dropout must be below 1 (below 0: the architecture's), "
                                     "not {}",
                                     o.dropout));
    if (o.device != "auto" && o.device != "cpu" && o.device != "cuda")
        throw UsageError(fmt::format("unknown device '{}' (cpu, cuda or auto)", o.device));
    if (o.backend != "auto" && o.backend != "gloo" && o.backend != "nccl")
        throw UsageError(fmt::format("unknown backend '{}' (gloo, nccl or auto)", o.backend));
    if (!(o.dist_timeout_s >= 1.0) || !std::isfinite(o.dist_timeout_s))
        throw UsageError(fmt::format("the distributed timeout must be at least 1 s, not {}",
                                     o.dist_timeout_s));
    if (o.batch_norm != "local" && o.batch_norm != "sync")
        throw UsageError(fmt::format("unknown batch_norm '{}' (local or sync)", o.batch_norm));
    const AugmentSettings& a = o.augment_settings;
    if (a.rotation_deg < 0 || a.shift < 0 || a.scale < 0 || a.scale >= 1 || a.contrast < 0 ||
        a.contrast >= 1 || a.brightness < 0)
        throw UsageError("augmentation ranges must be >= 0, and scale and contrast below 1");
    EarlyStopping check(o.early_stopping);  // throws on a bad monitor, mode, patience or delta
    (void)check;
}

std::filesystem::path run_dir_of(const TrainOptions& o) {
    if (!o.run_dir.empty()) return o.run_dir;
    std::filesystem::path p = o.out;
    p += ".run";
    return p;
}

void to_json(nlohmann::json& j, const EpochStats& s) {
    j = {{"epoch", s.epoch},
         {"train_loss", number_or_null(s.train_loss)},
         {"train_mae", number_or_null(s.train_mae)},
         {"val_loss", number_or_null(s.val_loss)},
         {"val_mae", number_or_null(s.val_mae)},
         {"val_rmse", number_or_null(s.val_rmse)},
         {"val_msle", number_or_null(s.val_msle)},
         {"ms_per_step", s.ms_per_step},
         {"seconds", s.seconds},
         {"lr", s.lr},
         {"best", s.best},
         {"grad_norm", number_or_null(s.grad_norm)},
         {"clipped_steps", s.clipped_steps},
         {"allreduce_ms", s.allreduce_ms}};
}

void from_json(const nlohmann::json& j, EpochStats& s) {
    s.epoch = j.at("epoch").get<int>();
    s.train_loss = number_or_nan(j, "train_loss");
    s.train_mae = number_or_nan(j, "train_mae");
    s.val_loss = number_or_nan(j, "val_loss");
    s.val_mae = number_or_nan(j, "val_mae");
    s.val_rmse = number_or_nan(j, "val_rmse");
    s.val_msle = number_or_nan(j, "val_msle");
    s.ms_per_step = j.value("ms_per_step", 0.0);
    s.seconds = j.value("seconds", 0.0);
    s.lr = j.value("lr", 0.0);
    s.best = j.value("best", false);
    s.grad_norm = number_or_nan(j, "grad_norm");
    s.clipped_steps = j.value("clipped_steps", 0);
    s.allreduce_ms = j.value("allreduce_ms", 0.0);
}

}  // namespace boneage
