// An ensemble: whole models of their own (each with its own head, label scale and sex input)
// whose months are averaged. Independently trained nets err in partly different ways, so
// their mean errs less than either; the members are registered as "member0", "member1", ...
// so one model file carries them all under those prefixes.
#include <fmt/format.h>

#include <boneage/error.hpp>
#include <boneage/model.hpp>

#include "models/weights.hpp"

namespace boneage {
namespace models {
namespace {

class EnsembleImpl : public BoneAgeNetImpl {
public:
    explicit EnsembleImpl(ModelConfig config) : BoneAgeNetImpl(std::move(config)) {
        for (std::size_t i = 0; i < config_.members.size(); ++i)
            members_.push_back(
                register_module(fmt::format("member{}", i), make_model(config_.members[i])));
    }

    torch::Tensor forward(const torch::Tensor& images, const torch::Tensor& sex) override {
        torch::Tensor sum = members_.front()->forward(images, sex);
        for (std::size_t i = 1; i < members_.size(); ++i)
            sum = sum + members_[i]->forward(images, sex);
        return sum / static_cast<double>(members_.size());
    }

    std::vector<torch::Tensor> l2_weights() override {
        std::vector<torch::Tensor> all;
        for (const BoneAgeNet& m : members_)
            for (torch::Tensor& w : m->l2_weights()) all.push_back(w);
        return all;
    }

    const std::vector<BoneAgeNet>& members() const { return members_; }

private:
    std::vector<BoneAgeNet> members_;
};

}  // namespace

BoneAgeNet make_ensemble(const ModelConfig& config) {
    // Rebuilt from the members, so a config that claims another size or sex use is corrected.
    return std::make_shared<EnsembleImpl>(ensemble_config(config.members));
}

}  // namespace models

ModelConfig ensemble_config(std::vector<ModelConfig> members) {
    if (members.empty()) throw UsageError("an ensemble needs at least one member");
    ModelConfig c;
    c.arch = "ensemble";
    c.head = "mean";
    c.input_size = members.front().input_size;
    c.use_sex = false;
    for (std::size_t i = 0; i < members.size(); ++i) {
        const ModelConfig& m = members[i];
        if (m.arch == "ensemble")
            throw UsageError(fmt::format("ensemble member {} is itself an ensemble", i + 1));
        if (m.input_size != c.input_size)
            throw UsageError(fmt::format(
                "ensemble members differ in input size: member 1 takes {} px, member {} takes {}",
                c.input_size, i + 1, m.input_size));
        c.use_sex = c.use_sex || m.use_sex;
    }
    c.members = std::move(members);
    return c;
}

std::vector<BoneAgeNet> ensemble_members(const BoneAgeNet& net) {
    if (const auto* ensemble = dynamic_cast<const models::EnsembleImpl*>(net.get()))
        return ensemble->members();
    return {net};
}

LoadedModel combine_models(const std::vector<LoadedModel>& members,
                           const std::string& weights_dtype) {
    std::vector<ModelConfig> configs;
    nlohmann::json trained = nlohmann::json::array();
    for (std::size_t i = 0; i < members.size(); ++i) {
        const LoadedModel& m = members[i];
        if (nlohmann::json(m.meta.preprocess) != nlohmann::json(members.front().meta.preprocess))
            throw UsageError(fmt::format(
                "ensemble members differ in preprocessing: member {} is not prepared as member 1",
                i + 1));
        if (m.meta.preprocess_version != members.front().meta.preprocess_version)
            throw UsageError(fmt::format(
                "ensemble members differ in preprocessing: member {} was trained on "
                "preprocessing version {}, member 1 on version {}",
                i + 1, m.meta.preprocess_version, members.front().meta.preprocess_version));
        configs.push_back(m.net->config());
        trained.push_back({{"training", m.meta.training},
                           {"validation", m.meta.validation},
                           {"weights_dtype", m.meta.weights_dtype},
                           {"model_version", m.meta.model_version}});
    }
    LoadedModel out;
    out.net = make_model(ensemble_config(std::move(configs)));
    const std::vector<BoneAgeNet> targets = ensemble_members(out.net);
    for (std::size_t i = 0; i < members.size(); ++i)
        models::copy_weights(*members[i].net, *targets[i]);
    out.net->eval();
    out.meta.config = out.net->config();
    out.meta.preprocess = members.front().meta.preprocess;
    out.meta.preprocess_version = members.front().meta.preprocess_version;
    out.meta.training = {{"members", trained}};
    out.meta.weights_dtype = weights_dtype;
    return out;
}

}  // namespace boneage
