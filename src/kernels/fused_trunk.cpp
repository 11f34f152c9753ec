// Fused trunks for the architectures whose forward is a plain chain of convolutions: the
// shallow network, ResNet-18 and ResNet-50. Each mirrors the forward() of its architecture file;
// the fast path tests compare the two on every architecture, so a change there that is not made
// here fails them.
#include "kernels/fused_trunk.hpp"

#include <ATen/core/dispatch/Dispatcher.h>
#include <fmt/format.h>

#include <boneage/error.hpp>
#include <boneage/memory_format.hpp>

#include "kernels/gemv.hpp"
#include "kernels/residual.hpp"

namespace boneage::fast {

namespace {

// oneDNN convolutions with packed weights and a fused ReLU, as LibTorch's frozen-graph passes
// use them; registered by LibTorch when it was built with oneDNN.
c10::optional<c10::OperatorHandle> find_op(const char* name) {
    return c10::Dispatcher::singleton().findSchema({name, ""});
}

const c10::optional<c10::OperatorHandle>& prepack_op() {
    static const auto op = find_op("mkldnn_prepacked::conv2d_prepack");
    return op;
}

const c10::optional<c10::OperatorHandle>& run_op() {
    static const auto op = find_op("mkldnn_prepacked::conv2d_run");
    return op;
}

template <typename Impl>
Impl* child(torch::nn::Module& m, const std::string& name) {
    const auto* found = m.named_children().find(name);
    return found ? (*found)->as<Impl>() : nullptr;
}

torch::nn::Module* child_module(torch::nn::Module& m, const std::string& name) {
    const auto* found = m.named_children().find(name);
    return found ? found->get() : nullptr;
}

std::vector<std::int64_t> to_vector(torch::IntArrayRef a) { return {a.begin(), a.end()}; }

}  // namespace

FusedConv::FusedConv(torch::nn::Conv2dImpl& conv, torch::nn::BatchNorm2dImpl* bn, bool relu,
                     torch::ScalarType dtype)
    : relu_(relu) {
    torch::NoGradGuard no_grad;
    const auto& o = conv.options;
    TORCH_CHECK(o.groups() == 1 && o.dilation()->at(0) == 1 && o.dilation()->at(1) == 1,
                "fused convolutions take groups 1 and dilation 1");
    TORCH_CHECK(c10::holds_alternative<torch::ExpandingArray<2>>(o.padding()),
                "fused convolutions take explicit padding");
    stride_ = to_vector(*o.stride());
    padding_ = to_vector(*c10::get<torch::ExpandingArray<2>>(o.padding()));
    torch::Tensor w = conv.weight.detach().to(torch::kFloat64);
    torch::Tensor b = conv.bias.defined() ? conv.bias.detach().to(torch::kFloat64)
                                          : torch::zeros({w.size(0)}, torch::kFloat64);
    if (bn) {
        // y = (conv(x) + b - mean) * gamma / sqrt(var + eps) + beta, folded in double.
        torch::Tensor scale = bn->weight.detach().to(torch::kFloat64) /
                              (bn->running_var.to(torch::kFloat64) + bn->options.eps()).sqrt();
        w = w * scale.reshape({-1, 1, 1, 1});
        b = (b - bn->running_mean.to(torch::kFloat64)) * scale +
            bn->bias.detach().to(torch::kFloat64);
    }
    weight_ = channels_last(w.to(dtype));
    // oneDNN adds an fp32 bias to bf16 convolutions; LibTorch's own path wants matching types.
    bias_ = b.to(prepack_op() ? torch::kFloat32 : dtype);
}

torch::Tensor FusedConv::operator()(const torch::Tensor& x) {
    if (prepack_op() && run_op()) {
        if (packed_for_ != x.sizes()) {
            torch::jit::Stack stack{weight_,  bias_,   stride_,      padding_,
                                    std::vector<std::int64_t>{1, 1}, std::int64_t{1},
                                    to_vector(x.sizes()),            std::string(relu_ ? "relu" : "none")};
            prepack_op()->callBoxed(&stack);
            packed_ = std::move(stack.at(0));
            packed_for_ = to_vector(x.sizes());
        }
        torch::jit::Stack stack{x, packed_};
        run_op()->callBoxed(&stack);
        return stack.at(0).toTensor();
    }
    torch::Tensor y = torch::conv2d(x, weight_, bias_, stride_, padding_);
    return relu_ ? y.relu_() : y;
}

namespace {

// Dense weights above this many bytes in fp32 outgrow the caches of a server core several times:
// reading them sets the layer's pace.
constexpr std::int64_t kStreamedBytes = 16 << 20;

}  // namespace

// A dense layer, kept off OpenBLAS where it can be: OpenBLAS first copies (packs) the whole
// weight, 200 MB in ResNet-50's flatten head, and its threads spin on after each call, taking
// the cores from the next images' convolutions. Small weights stay in cache, so one
// matrix-vector product per image (models/gemv.hpp) costs little; the large bf16 layer reads
// its weight once per batch in oneDNN's bf16 matrix product.
torch::Tensor FusedHead::Dense::operator()(const torch::Tensor& x) const {
    if (weight_bf16.defined()) {
        if (x.size(0) == 1) return gemv(weight_bf16, x[0].to(torch::kBFloat16), bias).unsqueeze(0);
        return torch::linear(x.to(torch::kBFloat16), weight_bf16).to(torch::kFloat32) + bias;
    }
    if (weight.numel() * 4 > kStreamedBytes && x.size(0) > 1) return torch::linear(x, weight, bias);
    std::vector<torch::Tensor> rows;
    for (std::int64_t i = 0; i < x.size(0); ++i) rows.push_back(gemv(weight, x[i].contiguous(), bias));
    return torch::stack(rows);
}

FusedHead::FusedHead(BoneAgeNetImpl& net, torch::ScalarType trunk_dtype) : config_(net.config()) {
    torch::nn::Module* head = child_module(net, "head");
    if (!head) throw Error(ErrorKind::Internal, "the model has no module named head");
    auto linear = [&](const std::string& name) -> std::optional<Dense> {
        auto* l = child<torch::nn::LinearImpl>(*head, name);
        if (!l) return std::nullopt;
        Dense d{l->weight.detach().contiguous(), l->bias.detach(), {}};
        if (trunk_dtype == torch::kBFloat16 && bf16_gemv_available() &&
            d.weight.numel() * 4 > kStreamedBytes) {
            d.weight_bf16 = d.weight.to(torch::kBFloat16).contiguous();
            d.weight = torch::Tensor();  // every batch size reads the bf16 copy
        }
        return d;
    };
    if (config_.use_sex) {
        auto s = linear("sex_embedding");
        if (!s) throw Error(ErrorKind::Internal, "the head has no sex_embedding");
        sex_embedding_ = std::make_pair(s->weight, s->bias);
    }
    for (int i = 1; auto l = linear(fmt::format("dense{}", i)); ++i) dense_.push_back(*l);
    auto out = linear("output");
    if (!out) throw Error(ErrorKind::Internal, "the head has no output layer");
    output_ = *out;
}

torch::Tensor FusedHead::operator()(const torch::Tensor& features, const torch::Tensor& sex) const {
    // Flatten in the logical (C, H, W) order of the channels-first net, in fp32.
    torch::Tensor x = config_.head == "gap"
                          ? features.to(torch::kFloat32).mean({2, 3})
                          : features.to(torch::kFloat32).contiguous().flatten(1);
    if (sex_embedding_) {
        torch::Tensor s = sex.to(torch::kFloat32).reshape({-1, 1});
        // One input: an outer product, which needs no BLAS call.
        x = torch::cat({x, torch::relu(s * sex_embedding_->first.t() + sex_embedding_->second)}, 1);
    }
    for (const Dense& dense : dense_) x = torch::relu(dense(x));
    torch::Tensor y = output_(x).squeeze(1);
    return y * config_.label_scale + config_.label_offset;
}

namespace {

// Four 3x3 convolutions with ReLU, each followed by 2x2 max pooling (models/shallow.cpp).
class ShallowTrunk : public FusedTrunk {
public:
    ShallowTrunk(BoneAgeNetImpl& net, torch::ScalarType dtype) {
        for (int i = 1;; ++i) {
            auto* conv = child<torch::nn::Conv2dImpl>(net, fmt::format("conv{}", i));
            if (!conv) break;
            convs_.emplace_back(*conv, nullptr, true, dtype);
        }
        if (convs_.empty()) throw Error(ErrorKind::Internal, "shallow net without conv1");
    }
    torch::Tensor operator()(const torch::Tensor& images) override {
        torch::Tensor x = images;
        for (auto& conv : convs_) x = torch::max_pool2d(conv(x), 2, 2);
        return x;
    }

private:
    std::vector<FusedConv> convs_;
};

// ResNet-18 and ResNet-50 (models/resnet.cpp): stem, max pool, basic or bottleneck blocks
// whose last convolution is added to the shortcut before the ReLU.
class ResNetTrunk : public FusedTrunk {
public:
    ResNetTrunk(BoneAgeNetImpl& net, torch::ScalarType dtype)
        : stem_(conv_bn(net, "conv1", "bn1", true, dtype)) {
        for (int i = 1;; ++i) {
            torch::nn::Module* layer = child_module(net, fmt::format("layer{}", i));
            if (!layer) break;
            for (const auto& item : layer->named_children()) {
                torch::nn::Module& b = *item.value();
                // conv1..convK with their batch norms, ReLU after all but the last.
                const int count = child<torch::nn::Conv2dImpl>(b, "conv3") ? 3 : 2;
                Block block;
                for (int k = 1; k <= count; ++k)
                    block.convs.push_back(conv_bn(b, fmt::format("conv{}", k),
                                                  fmt::format("bn{}", k), k < count, dtype));
                if (torch::nn::Module* ds = child_module(b, "downsample"))
                    block.downsample = conv_bn(*ds, "0", "1", false, dtype);
                blocks_.push_back(std::move(block));
            }
        }
        if (blocks_.empty()) throw Error(ErrorKind::Internal, "resnet without layer1");
    }
    torch::Tensor operator()(const torch::Tensor& images) override {
        torch::Tensor x = torch::max_pool2d(stem_(images), 3, 2, 1);
        for (auto& b : blocks_) {
            torch::Tensor out = x;
            for (auto& conv : b.convs) out = conv(out);
            x = add_relu_(out, b.downsample ? (*b.downsample)(x) : x);
        }
        return x;
    }

private:
    struct Block {
        std::vector<FusedConv> convs;  // 2 in a basic block, 3 in a bottleneck
        std::optional<FusedConv> downsample;
    };
    static FusedConv conv_bn(torch::nn::Module& m, const std::string& conv, const std::string& bn,
                             bool relu, torch::ScalarType dtype) {
        auto* c = child<torch::nn::Conv2dImpl>(m, conv);
        auto* n = child<torch::nn::BatchNorm2dImpl>(m, bn);
        if (!c || !n)
            throw Error(ErrorKind::Internal, fmt::format("expected {} and {} in {}", conv, bn, m.name()));
        return FusedConv(*c, n, relu, dtype);
    }

    FusedConv stem_;
    std::vector<Block> blocks_;
};

}  // namespace

std::unique_ptr<FusedTrunk> make_fused_trunk(BoneAgeNetImpl& net, torch::ScalarType dtype) {
    try {
        if (net.config().arch == "shallow") return std::make_unique<ShallowTrunk>(net, dtype);
        if (net.config().arch == "resnet18" || net.config().arch == "resnet50")
            return std::make_unique<ResNetTrunk>(net, dtype);
    } catch (const std::exception&) {
        // A module tree other than the expected one: the caller runs the net's own forward.
    }
    return nullptr;
}

}  // namespace boneage::fast
