// Input statistics, the output bias at the label mean, and the batch-norm momentum.
#include "train/net_setup.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <array>
#include <boneage/error.hpp>
#include <cmath>
#include <cstdint>

namespace boneage::detail {

PixelStats pixel_stats(const PreparedCache& cache, const std::vector<std::size_t>& rows_in) {
    std::vector<std::size_t> rows = rows_in;
    if (rows.empty())
        for (std::size_t i = 0; i < cache.size(); ++i) rows.push_back(i);
    const std::size_t pixels =
        static_cast<std::size_t>(cache.image_size()) * static_cast<std::size_t>(cache.image_size());
    // A histogram keeps the sums exact whatever the cache's size, and the pass cheap.
    std::array<std::uint64_t, 256> count{};
    for (std::size_t r : rows) {
        const std::uint8_t* p = cache.image(r);
        for (std::size_t k = 0; k < pixels; ++k) ++count[p[k]];
    }
    const double n = static_cast<double>(rows.size()) * static_cast<double>(pixels);
    if (!(n > 0.0)) throw UsageError("no pixels to measure the input normalisation on");
    double sum = 0.0;
    for (int v = 0; v < 256; ++v) sum += static_cast<double>(count[v]) * (v / 255.0);
    PixelStats s;
    s.mean = sum / n;
    double sq = 0.0;
    for (int v = 0; v < 256; ++v)
        sq += static_cast<double>(count[v]) * std::pow(v / 255.0 - s.mean, 2);
    s.sd = std::sqrt(sq / n);
    return s;
}

double set_output_bias_to_mean(BoneAgeNetImpl& net, const PreparedCache& cache,
                               const std::vector<std::size_t>& rows, double target_months,
                               int batch_size, std::size_t max_images) {
    // The dict is kept: find() points into it, and its tensors share the parameters' storage.
    auto parameters = net.named_parameters();
    torch::Tensor* bias = parameters.find("head.output.bias");
    if (!bias)
        throw Error(ErrorKind::Internal, fmt::format("a {} net has no head.output.bias to set",
                                                     net.config().arch));
    const std::size_t count = std::min(rows.size(), max_images);
    if (count == 0) throw UsageError("no training images to set the output bias on");

    // Training mode, as the first steps run; the running statistics that mode updates are put
    // back afterwards, and dropout is switched off so the mean is not noisy.
    const auto buffers = net.named_buffers();
    std::vector<torch::Tensor> saved;
    for (const auto& b : buffers) saved.push_back(b.value().clone());
    net.train();
    for (const auto& m : net.modules(/*include_self=*/false))
        if (m->as<torch::nn::DropoutImpl>()) m->eval();

    torch::NoGradGuard no_grad;
    const int size = cache.image_size();
    const std::size_t bs = static_cast<std::size_t>(std::max(2, batch_size));
    double sum = 0.0;
    for (std::size_t start = 0, end = 0; start < count; start = end) {
        // Batch norm cannot take one image on batch statistics: a lone last image joins the
        // batch before it.
        end = std::min(count, start + bs);
        if (count - end == 1) end = count;
        std::vector<const std::uint8_t*> images;
        std::vector<float> sex;
        for (std::size_t i = start; i < end; ++i) {
            images.push_back(cache.image(rows[i]));
            sex.push_back(cache.male(rows[i]) ? 1.0f : 0.0f);
        }
        const torch::Tensor x =
            resize_batch(images_to_tensor(images, size), net.config().input_size);
        sum += net.forward(x, torch::tensor(sex)).to(torch::kFloat64).sum().item<double>();
    }
    const double before = sum / static_cast<double>(count);

    std::size_t i = 0;
    for (const auto& b : buffers) b.value().copy_(saved[i++]);
    net.train();
    // months = y x label_scale + label_offset, and y moves one for one with the bias.
    bias->add_((target_months - before) / net.config().label_scale);
    return before;
}

int set_batchnorm_momentum(torch::nn::Module& module, double momentum) {
    int set = 0;
    for (const auto& m : module.modules(/*include_self=*/true)) {
        if (auto* bn = m->as<torch::nn::BatchNorm2dImpl>()) {
            bn->options.momentum(momentum);
            ++set;
        }
    }
    return set;
}

}  // namespace boneage::detail

namespace boneage::detail {

int set_dropout(torch::nn::Module& module, double p) {
    int set = 0;
    for (const auto& m : module.modules(/*include_self=*/true)) {
        if (auto* dropout = m->as<torch::nn::DropoutImpl>()) {
            dropout->options.p(p);
            ++set;
        }
    }
    return set;
}

}  // namespace boneage::detail
