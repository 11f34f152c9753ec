// boneage ensemble: one model file that averages several trained models, for a model that errs
// less than any one of them; int8 weights keep two ResNet-18s in the size of one float16.
#include "command.hpp"

#include <boneage/error.hpp>
#include <boneage/model.hpp>

#include <fmt/format.h>

#include <filesystem>
#include <iostream>
#include <memory>

namespace boneage::cli {

namespace {

struct EnsembleArgs {
    std::vector<std::string> members;    // model files to average
    std::string out;                     // the ensemble's model file
    std::string weights_dtype = "int8";  // how the file stores the weights
    int views = 1;                       // test-time views prediction averages by default
};

int run_ensemble(const EnsembleArgs& a) {
    std::vector<LoadedModel> members;
    for (const std::string& file : a.members) members.push_back(load_model(file));
    LoadedModel ensemble = combine_models(members, a.weights_dtype);
    ensemble.meta.views = a.views;
    save_model(a.out, ensemble.net, ensemble.meta);
    std::cerr << fmt::format("wrote {}: the mean of {} models, {} weights, {} test-time view{}, "
                             "{:.1f} MB\n",
                             a.out, members.size(), a.weights_dtype, a.views,
                             a.views == 1 ? "" : "s",
                             static_cast<double>(std::filesystem::file_size(a.out)) / 1e6);
    return kOk;
}

const Command ensemble_command{
    "ensemble", "Combine trained models into one model file that averages their predictions",
    [](CLI::App& sub) -> std::function<int()> {
        auto a = std::make_shared<EnsembleArgs>();
        sub.add_option("models", a->members,
                       "Model files to average (same preprocessing and input size)")
            ->required()
            ->check(CLI::ExistingFile);
        sub.add_option("--out", a->out, "The ensemble's model file")->required();
        sub.add_option("--weights-dtype", a->weights_dtype,
                       "How the file stores the weights: int8 (a quarter of float32, one scale "
                       "per output channel), float16 or float32")
            ->check(CLI::IsMember({"int8", "float16", "float32"}))
            ->capture_default_str();
        sub.add_option("--tta", a->views,
                       "test-time views that predict, evaluate and serve average with this file "
                       "unless their --tta says otherwise (1 to " +
                           std::to_string(kMaxViews) + "; choose it by cross-validation)")
            ->check(CLI::Range(1, kMaxViews))
            ->capture_default_str();
        return [a] { return run_ensemble(*a); };
    }};

}  // namespace

}  // namespace boneage::cli
