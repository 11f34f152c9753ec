// The inference fast path: precision from the CPU's features, batch norm folding, and the
// FastModel that runs a net either as a fused trunk (kernels/fused_trunk.hpp) or, for
// architectures without one, as its own forward on folded weights.
#include <boneage/autocast.hpp>
#include <boneage/cpu_features.hpp>
#include <boneage/error.hpp>
#include <boneage/fast_path.hpp>
#include <boneage/memory_format.hpp>

#include <fmt/format.h>
#include <fmt/ranges.h>

#include "kernels/fused_trunk.hpp"
#include "models/weights.hpp"

namespace boneage {

Precision parse_precision(const std::string& text) {
    if (text == "auto") return Precision::Auto;
    if (text == "fp32") return Precision::Fp32;
    if (text == "bf16") return Precision::Bf16;
    throw UsageError(fmt::format("unknown precision '{}' (expected auto, fp32 or bf16)", text));
}

const char* to_string(Precision precision) {
    switch (precision) {
        case Precision::Auto: return "auto";
        case Precision::Fp32: return "fp32";
        case Precision::Bf16: return "bf16";
    }
    return "unknown";
}

Precision resolve(Precision precision) {
    if (precision != Precision::Auto) return precision;
    return native_bf16() ? Precision::Bf16 : Precision::Fp32;
}

namespace {

void fold_pair(torch::nn::Conv2dImpl& conv, torch::nn::BatchNorm2dImpl& bn) {
    torch::NoGradGuard no_grad;
    const fast::FoldedConv folded = fast::fold(conv, &bn);
    conv.weight.copy_(folded.weight);
    if (conv.bias.defined()) conv.bias.zero_();
    // The batch norm keeps the shift alone: x / sqrt((1 - eps) + eps) * 1 + shift.
    bn.weight.fill_(1.0);
    bn.bias.copy_(folded.bias);
    bn.running_mean.zero_();
    bn.running_var.fill_(1.0 - bn.options.eps());
}

}  // namespace

int fold_batchnorm(torch::nn::Module& module) {
    int folded = 0;
    for (const auto& m : module.modules(/*include_self=*/true)) {
        torch::nn::Conv2dImpl* previous = nullptr;
        for (const auto& child : m->children()) {
            auto* bn = child->as<torch::nn::BatchNorm2dImpl>();
            if (previous && bn && bn->options.affine() && bn->options.track_running_stats() &&
                bn->options.num_features() == previous->options.out_channels()) {
                fold_pair(*previous, *bn);
                ++folded;
            }
            previous = child->as<torch::nn::Conv2dImpl>();
        }
    }
    return folded;
}

namespace {

// A copy of `net` with its own weights, so folding leaves the caller's net as it was.
BoneAgeNet copy_of(const BoneAgeNet& net) {
    BoneAgeNet copy = make_model(net->config());
    models::copy_weights(*net, *copy);
    return copy;
}

}  // namespace

struct FastModel::State {
    ModelConfig config;
    Precision precision = Precision::Fp32;
    std::string mode;
    std::unique_ptr<fast::FusedTrunk> trunk;  // the fused path, or
    std::optional<fast::FusedHead> head;
    BoneAgeNet net;                           // the module path, or
    std::vector<FastModel> members;           // an ensemble's, one per member

    torch::ScalarType dtype() const {
        return precision == Precision::Bf16 ? torch::kBFloat16 : torch::kFloat32;
    }
};

FastModel::FastModel(const BoneAgeNet& net, Precision precision) : state_(std::make_unique<State>()) {
    if (!net) throw UsageError("FastModel needs a model");
    State& s = *state_;
    s.config = net->config();
    s.precision = resolve(precision);
    if (s.config.arch == "ensemble") {
        std::vector<std::string> modes;
        for (const BoneAgeNet& m : ensemble_members(net)) {
            s.members.emplace_back(m, s.precision);
            modes.push_back(s.members.back().mode());
        }
        s.mode = fmt::format("ensemble of {}: {}", modes.size(), fmt::join(modes, ", "));
        return;
    }
    if (fast::has_fused_trunk(s.config.arch)) {
        // A module tree the plan does not match throws here, naming the layer: running the
        // net's own forward instead would change speed and numbers without a word.
        fast::FusedPlan plan = fast::make_fused_plan(*net, s.dtype());
        s.trunk = std::move(plan.trunk);
        s.head = std::move(plan.head);
        s.mode = "fused";
        return;
    }
    s.mode = "module";
    s.net = copy_of(net);
    s.net->eval();
    fold_batchnorm(*s.net);
    use_channels_last(*s.net);
}

FastModel::~FastModel() = default;
FastModel::FastModel(FastModel&&) noexcept = default;
FastModel& FastModel::operator=(FastModel&&) noexcept = default;

torch::Tensor FastModel::infer(const torch::Tensor& images, const torch::Tensor& sex) {
    State& s = *state_;
    const std::int64_t size = s.config.input_size;
    TORCH_CHECK(images.dim() == 4 && images.size(1) == 1 && images.size(2) == size &&
                    images.size(3) == size,
                "images must be N x 1 x ", size, " x ", size, ", got ", images.sizes());
    TORCH_CHECK(!s.config.use_sex || (sex.defined() && sex.numel() == images.size(0)),
                "this model takes the sex of each image: expected ", images.size(0), " values");
    torch::NoGradGuard no_grad;
    if (!s.members.empty()) {
        torch::Tensor sum = s.members.front().infer(images, sex);
        for (std::size_t i = 1; i < s.members.size(); ++i) sum += s.members[i].infer(images, sex);
        return sum / static_cast<double>(s.members.size());
    }
    // The fused trunk begins at the first convolution, so the net's input normalisation (the
    // first step of its forward, model.hpp) comes here; the module path's forward does its own.
    if (s.trunk)
        return (*s.head)((*s.trunk)(channels_last(normalise_input(s.config, images).to(s.dtype()))),
                         sex);
    torch::Tensor x = channels_last(images.to(s.dtype()));

    if (s.precision != Precision::Bf16) return s.net->forward(x, sex).to(torch::kFloat32);
    // The module path has no seam between trunk and head, so autocast runs both in bf16.
    torch::Tensor months;
    {
        Bf16Autocast bf16;
        months = s.net->forward(channels_last(images), sex);
    }
    return months.to(torch::kFloat32);
}

Precision FastModel::precision() const { return state_->precision; }
const std::string& FastModel::mode() const { return state_->mode; }
const ModelConfig& FastModel::config() const { return state_->config; }

}  // namespace boneage
