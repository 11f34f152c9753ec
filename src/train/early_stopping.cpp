// Early stopping as the paper describes it: watch a metric, stop when it has not improved by
// a threshold for a number of epochs, and remember the best epoch so its weights come back.
#include <fmt/format.h>

#include <boneage/error.hpp>
#include <boneage/train.hpp>
#include <cmath>
#include <limits>

namespace boneage {

namespace {
const char* const kMonitors[] = {"val_loss", "val_mae", "val_rmse", "train_loss", "train_mae"};

bool known_monitor(const std::string& m) {
    for (const char* k : kMonitors)
        if (m == k) return true;
    return false;
}

// JSON has no infinity; the best value before the first epoch is written as null.
nlohmann::json number_or_null(double v) {
    return std::isfinite(v) ? nlohmann::json(v) : nlohmann::json();
}
}  // namespace

void to_json(nlohmann::json& j, const EarlyStoppingOptions& o) {
    j = {{"monitor", o.monitor},
         {"mode", o.mode},
         {"patience", o.patience},
         {"min_delta", o.min_delta}};
}

void from_json(const nlohmann::json& j, EarlyStoppingOptions& o) {
    EarlyStoppingOptions d;
    o.monitor = j.value("monitor", d.monitor);
    o.mode = j.value("mode", d.mode);
    o.patience = j.value("patience", d.patience);
    o.min_delta = j.value("min_delta", d.min_delta);
}

EarlyStopping::EarlyStopping(EarlyStoppingOptions options) : options_(std::move(options)) {
    if (!known_monitor(options_.monitor))
        throw UsageError(
            fmt::format("early stopping: unknown monitor '{}' (val_loss, val_mae, "
                        "val_rmse, train_loss or train_mae)",
                        options_.monitor));
    if (options_.mode != "min" && options_.mode != "max")
        throw UsageError(
            fmt::format("early stopping: mode must be min or max, not '{}'", options_.mode));
    if (options_.patience < 1)
        throw UsageError(
            fmt::format("early stopping: patience must be at least 1, not {}", options_.patience));
    if (!(options_.min_delta >= 0.0))
        throw UsageError(
            fmt::format("early stopping: min_delta must be >= 0, not {}", options_.min_delta));
    best_ = options_.mode == "min" ? std::numeric_limits<double>::infinity()
                                   : -std::numeric_limits<double>::infinity();
}

bool EarlyStopping::update(int epoch, double value) {
    const bool beats = options_.mode == "min" ? value < best_ - options_.min_delta
                                              : value > best_ + options_.min_delta;
    // The first finite value always counts, whatever min_delta says.
    improved_ = !std::isnan(value) && (beats || best_epoch_ == 0);
    if (improved_) {
        best_ = value;
        best_epoch_ = epoch;
        wait_ = 0;
    } else {
        ++wait_;
    }
    stop_ = wait_ >= options_.patience;
    return stop_;
}

nlohmann::json EarlyStopping::state() const {
    return {{"options", options_}, {"best", number_or_null(best_)}, {"best_epoch", best_epoch_},
            {"wait", wait_},       {"improved", improved_},         {"stop", stop_}};
}

EarlyStopping EarlyStopping::from_state(const nlohmann::json& state) {
    EarlyStopping es(state.at("options").get<EarlyStoppingOptions>());
    if (!state.at("best").is_null()) es.best_ = state.at("best").get<double>();
    es.best_epoch_ = state.at("best_epoch").get<int>();
    es.wait_ = state.at("wait").get<int>();
    es.improved_ = state.at("improved").get<bool>();
    es.stop_ = state.at("stop").get<bool>();
    return es;
}

}  // namespace boneage
