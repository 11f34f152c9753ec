#include "models/head.hpp"

#include <fmt/format.h>

#include <boneage/error.hpp>

namespace boneage::models {

RegressionHeadImpl::RegressionHeadImpl(const ModelConfig& config, std::int64_t channels,
                                       std::int64_t side, HeadSpec spec)
    : gap_(config.head == "gap"), use_sex_(config.use_sex), spec_(std::move(spec)) {
    feature_count_ = gap_ ? channels : channels * side * side;
    std::int64_t width = feature_count_;
    if (use_sex_) {
        sex_embedding_ = register_module("sex_embedding", torch::nn::Linear(1, kSexEmbedding));
        width += kSexEmbedding;
    }
    for (std::size_t i = 0; i < spec_.dense.size(); ++i) {
        dense_.push_back(register_module(fmt::format("dense{}", i + 1),
                                         torch::nn::Linear(width, spec_.dense[i])));
        width = spec_.dense[i];
    }
    dropout_ = register_module("dropout", torch::nn::Dropout(spec_.dropout));
    output_ = register_module("output", torch::nn::Linear(width, 1));
}

torch::Tensor RegressionHeadImpl::forward(const torch::Tensor& features, const torch::Tensor& sex) {
    torch::Tensor x = gap_ ? features.mean({2, 3}) : features.flatten(1);
    if (use_sex_) {
        torch::Tensor s = sex.to(x.device(), x.scalar_type()).reshape({-1, 1});
        x = torch::cat({x, torch::relu(sex_embedding_->forward(s))}, 1);
    }
    for (auto& layer : dense_) x = torch::relu(layer->forward(x));
    return output_->forward(dropout_->forward(x)).squeeze(1);
}

std::vector<torch::Tensor> RegressionHeadImpl::l2_weights() const {
    if (spec_.l2_layer < 0) return {};
    return {dense_.at(static_cast<std::size_t>(spec_.l2_layer))->weight};
}

void RegressionHeadImpl::zero_output() {
    torch::NoGradGuard no_grad;
    output_->weight.zero_();
    output_->bias.zero_();
}

void check_inputs(const ModelConfig& config, const torch::Tensor& images,
                  const torch::Tensor& sex) {
    check_images(config, images);
    check_sex(config, images.size(0), sex);
}

void check_images(const ModelConfig& config, const torch::Tensor& images) {
    const std::int64_t s = config.input_size;
    TORCH_CHECK(
        images.dim() == 4 && images.size(1) == 1 && images.size(2) == s && images.size(3) == s,
        "images must be N x 1 x ", s, " x ", s, ", got ", images.sizes());
}

void check_sex(const ModelConfig& config, std::int64_t count, const torch::Tensor& sex) {
    if (!config.use_sex) return;
    TORCH_CHECK(sex.defined() && sex.numel() == count,
                "this model takes the sex of each image: expected ", count, " values, got ",
                sex.defined() ? sex.numel() : 0);
}

torch::Tensor to_months(const ModelConfig& config, const torch::Tensor& y) {
    return y * config.label_scale + config.label_offset;
}

namespace {
thread_local bool skip_weight_init = false;
}  // namespace

SkipWeightInit::SkipWeightInit() : previous_(skip_weight_init) { skip_weight_init = true; }
SkipWeightInit::~SkipWeightInit() { skip_weight_init = previous_; }

void init_convolutions(torch::nn::Module& module) {
    if (skip_weight_init) return;
    torch::NoGradGuard no_grad;
    for (auto& m : module.modules(/*include_self=*/false)) {
        if (auto* conv = m->as<torch::nn::Conv2d>()) {
            torch::nn::init::kaiming_normal_(conv->weight, 0.0, torch::kFanOut, torch::kReLU);
            if (conv->bias.defined()) torch::nn::init::zeros_(conv->bias);
        } else if (auto* bn = m->as<torch::nn::BatchNorm2d>()) {
            torch::nn::init::ones_(bn->weight);
            torch::nn::init::zeros_(bn->bias);
        }
    }
}

void check_feature_side(const ModelConfig& config, std::int64_t side) {
    if (side < 1)
        throw UsageError(
            fmt::format("input size {} is too small for {}", config.input_size, config.arch));
}

}  // namespace boneage::models
