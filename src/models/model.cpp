// What the architectures share: their configuration and the factory.
#include <fmt/format.h>
#include <fmt/ranges.h>

#include <boneage/error.hpp>
#include <boneage/model.hpp>
#include <cstring>

#include "models/head.hpp"
#include "models/weights.hpp"

namespace boneage {

void to_json(nlohmann::json& j, const ModelConfig& c) {
    j = nlohmann::json{{"arch", c.arch},
                       {"head", c.head},
                       {"use_sex", c.use_sex},
                       {"input_size", c.input_size},
                       {"label_offset", c.label_offset},
                       {"label_scale", c.label_scale}};
    // Only when set: a model without normalisation is written as it always was.
    if (c.input_mean != 0.0 || c.input_std != 1.0) {
        j["input_mean"] = c.input_mean;
        j["input_std"] = c.input_std;
    }
    if (!c.members.empty()) j["members"] = c.members;
}

// Fields omitted keep their defaults (checkpoints rely on it); a model file is held to every
// key before it gets here (model_file.cpp).
void from_json(const nlohmann::json& j, ModelConfig& c) {
    const ModelConfig d;
    c.arch = j.value("arch", d.arch);
    c.head = j.value("head", d.head);
    c.use_sex = j.value("use_sex", d.use_sex);
    c.input_size = j.value("input_size", d.input_size);
    c.label_offset = j.value("label_offset", d.label_offset);
    c.label_scale = j.value("label_scale", d.label_scale);
    c.input_mean = j.value("input_mean", d.input_mean);
    c.input_std = j.value("input_std", d.input_std);
    c.members = j.value("members", std::vector<ModelConfig>{});
}

BoneAgeNet make_model(const ModelConfig& config) {
    if (config.arch == "ensemble") return models::make_ensemble(config);
    if (config.head != "flatten" && config.head != "gap")
        throw UsageError(fmt::format("unknown head '{}' (expected flatten or gap)", config.head));
    if (config.input_size < 1)
        throw UsageError(fmt::format("input size must be positive, got {}", config.input_size));
    if (config.arch == "shallow") return models::make_shallow(config);
    if (config.arch == "resnet18") return models::make_resnet18(config);
    if (config.arch == "resnet50") return models::make_resnet50(config);
    if (config.arch == "inceptionv4") return models::make_inceptionv4(config);
    throw UsageError(fmt::format(
        "unknown architecture '{}' (expected shallow, resnet18, resnet50, inceptionv4 or "
        "ensemble)",
        config.arch));
}

torch::Tensor BoneAgeNetImpl::features(const torch::Tensor&) {
    throw UsageError(fmt::format("a {} model has no single convolutional trunk", config_.arch));
}

torch::Tensor BoneAgeNetImpl::head(const torch::Tensor&, const torch::Tensor&) {
    throw UsageError(fmt::format("a {} model has no single regression head", config_.arch));
}

namespace models {

void copy_weights(const torch::nn::Module& from, torch::nn::Module& to,
                  const std::string& except_prefix) {
    torch::NoGradGuard no_grad;
    const auto source_params = from.named_parameters();
    const auto source_buffers = from.named_buffers();
    auto targets = to.named_parameters();
    for (auto& b : to.named_buffers()) targets.insert(b.key(), b.value());
    std::vector<std::pair<torch::Tensor, torch::Tensor>> pairs;  // (destination, source)
    for (auto& t : targets) {
        if (!except_prefix.empty() && t.key().rfind(except_prefix, 0) == 0) continue;
        const torch::Tensor* src = source_params.find(t.key());
        if (!src) src = source_buffers.find(t.key());
        if (!src) throw UsageError(fmt::format("its {} is missing", t.key()));
        if (src->sizes() != t.value().sizes())
            throw UsageError(fmt::format("its {} has shape {}, expected {}", t.key(),
                                         fmt::join(src->sizes(), "x"),
                                         fmt::join(t.value().sizes(), "x")));
        pairs.emplace_back(t.value(), *src);
    }
    for (auto& [dst, src] : pairs) dst.copy_(src);
}

}  // namespace models

std::int64_t parameter_count(const torch::nn::Module& module) {
    std::int64_t count = 0;
    for (const auto& p : module.parameters())
        if (p.requires_grad()) count += p.numel();
    return count;
}

}  // namespace boneage
