// Fused trunks for the architectures whose forward is a plain chain of convolutions: the
// shallow network, ResNet-18 and ResNet-50. Each mirrors the forward() of its architecture file
// and takes its layers by the names that file registers; make_fused_plan refuses a module tree
// with a layer missing or left over, and the fast path tests compare the two forwards on every
// architecture, so a change there that is not made here fails loudly.
#include "kernels/fused_trunk.hpp"

#include <ATen/core/dispatch/Dispatcher.h>
#include <fmt/format.h>

#include <boneage/error.hpp>
#include <boneage/memory_format.hpp>

#include <map>
#include <set>

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

std::vector<std::int64_t> to_vector(torch::IntArrayRef a) { return {a.begin(), a.end()}; }

// The layers of one net as a plan takes them, by their full names ("layer2.0.conv1"). Each
// layer taken is remembered, so that once the plan is built every layer holding weights or
// buffers that it did not take can be named: the net's forward would use it, the plan not.
class Layers {
public:
    Layers(torch::nn::Module& net, std::string arch) : arch_(std::move(arch)) {
        for (const auto& item : net.named_modules("", /*include_self=*/false))
            modules_.emplace(item.key(), item.value().get());
    }

    bool has(const std::string& name) const { return modules_.count(name) > 0; }

    // The layer `name` as an Impl; throws naming it when it is missing or of another type.
    template <typename Impl>
    Impl& take(const std::string& name) {
        auto found = modules_.find(name);
        if (found == modules_.end())
            throw mismatch(fmt::format("it has no layer '{}'", name));
        auto* layer = found->second->as<Impl>();
        if (!layer)
            throw mismatch(fmt::format("its layer '{}' is a {}", name, found->second->name()));
        taken_.insert(name);
        return *layer;
    }

    // Throws naming the first layer with weights or buffers of its own that was not taken.
    void check_all_taken() const {
        for (const auto& [name, module] : modules_) {
            const bool holds = !module->parameters(/*recurse=*/false).empty() ||
                               !module->buffers(/*recurse=*/false).empty();
            if (holds && !taken_.count(name))
                throw mismatch(fmt::format("its layer '{}' ({}) has no place in the plan", name,
                                           module->name()));
        }
    }

private:
    Error mismatch(const std::string& what) const {
        return Error(ErrorKind::Internal,
                     fmt::format("the fused inference plan does not match the {} module tree: "
                                 "{} (src/kernels/fused_trunk.cpp mirrors the architecture's "
                                 "forward and must change with it)",
                                 arch_, what));
    }

    std::string arch_;
    std::map<std::string, torch::nn::Module*> modules_;
    std::set<std::string> taken_;
};

std::string join(const std::string& prefix, const std::string& name) {
    return prefix.empty() ? name : prefix + "." + name;
}

}  // namespace

FoldedConv fold(const torch::nn::Conv2dImpl& conv, const torch::nn::BatchNorm2dImpl* bn) {
    torch::NoGradGuard no_grad;
    torch::Tensor w = conv.weight.detach().to(torch::kFloat64);
    torch::Tensor b = conv.bias.defined() ? conv.bias.detach().to(torch::kFloat64)
                                          : torch::zeros({w.size(0)}, torch::kFloat64);
    if (!bn) return {w, b};
    // y = (conv(x) + b - mean) * gamma / sqrt(var + eps) + beta.
    torch::Tensor scale = bn->weight.detach().to(torch::kFloat64) /
                          (bn->running_var.to(torch::kFloat64) + bn->options.eps()).sqrt();
    torch::Tensor shift = bn->bias.detach().to(torch::kFloat64);
    return {w * scale.reshape({-1, 1, 1, 1}),
            (b - bn->running_mean.to(torch::kFloat64)) * scale + shift};
}

FusedConv::FusedConv(torch::nn::Conv2dImpl& conv, torch::nn::BatchNorm2dImpl* bn, bool relu,
                     torch::ScalarType dtype)
    : relu_(relu) {
    const auto& o = conv.options;
    TORCH_CHECK(o.groups() == 1 && o.dilation()->at(0) == 1 && o.dilation()->at(1) == 1,
                "fused convolutions take groups 1 and dilation 1");
    TORCH_CHECK(c10::holds_alternative<torch::ExpandingArray<2>>(o.padding()),
                "fused convolutions take explicit padding");
    stride_ = to_vector(*o.stride());
    padding_ = to_vector(*c10::get<torch::ExpandingArray<2>>(o.padding()));
    const FoldedConv folded = fold(conv, bn);
    weight_ = channels_last(folded.weight.to(dtype));
    // oneDNN adds an fp32 bias to bf16 convolutions; LibTorch's own path wants matching types.
    bias_ = folded.bias.to(prepack_op() ? torch::kFloat32 : dtype);
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

// A dense layer on our own kernel rather than OpenBLAS or oneDNN: OpenBLAS first copies (packs)
// the whole weight, 200 MB in ResNet-50's flatten head, and its threads spin on after each call,
// taking the cores from the next images' convolutions; and a library's matrix product blocks a
// batch otherwise than a single image (oneDNN's bf16 one even rounded its output to bf16), so an
// image's answer moved with its batch. gemv_rows reads the weight once per batch and sums each
// image in the order it would alone.
torch::Tensor FusedHead::Dense::operator()(const torch::Tensor& x) const {
    if (weight_bf16.defined()) return gemv_rows(weight_bf16, x.to(torch::kBFloat16), bias);
    return gemv_rows(weight, x, bias);
}

FusedHead::FusedHead(const ModelConfig& config, const torch::nn::LinearImpl* sex_embedding,
                     const std::vector<const torch::nn::LinearImpl*>& dense,
                     const torch::nn::LinearImpl& output, torch::ScalarType trunk_dtype)
    : config_(config) {
    auto make = [&](const torch::nn::LinearImpl& l) {
        Dense d{l.weight.detach().contiguous(), l.bias.detach(), {}};
        if (trunk_dtype == torch::kBFloat16 && bf16_gemv_available() &&
            d.weight.numel() * 4 > kStreamedBytes) {
            d.weight_bf16 = d.weight.to(torch::kBFloat16).contiguous();
            d.weight = torch::Tensor();  // every batch size reads the bf16 copy
        }
        return d;
    };
    if (sex_embedding) sex_embedding_ = std::make_pair(sex_embedding->weight.detach(),
                                                       sex_embedding->bias.detach());
    for (const torch::nn::LinearImpl* l : dense) dense_.push_back(make(*l));
    output_ = make(output);
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
    ShallowTrunk(Layers& layers, torch::ScalarType dtype) {
        convs_.emplace_back(layers.take<torch::nn::Conv2dImpl>("conv1"), nullptr, true, dtype);
        for (int i = 2; layers.has(fmt::format("conv{}", i)); ++i)
            convs_.emplace_back(layers.take<torch::nn::Conv2dImpl>(fmt::format("conv{}", i)),
                                nullptr, true, dtype);
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
    ResNetTrunk(Layers& layers, torch::ScalarType dtype)
        : stem_(conv_bn(layers, "", "conv1", "bn1", true, dtype)) {
        for (int i = 1; layers.has(fmt::format("layer{}", i)); ++i) {
            for (int b = 0; layers.has(fmt::format("layer{}.{}", i, b)); ++b) {
                const std::string block = fmt::format("layer{}.{}", i, b);
                // conv1..convK with their batch norms, ReLU after all but the last.
                const int count = layers.has(block + ".conv3") ? 3 : 2;
                Block fused;
                for (int k = 1; k <= count; ++k)
                    fused.convs.push_back(conv_bn(layers, block, fmt::format("conv{}", k),
                                                  fmt::format("bn{}", k), k < count, dtype));
                if (layers.has(block + ".downsample"))
                    fused.downsample =
                        conv_bn(layers, block + ".downsample", "0", "1", false, dtype);
                blocks_.push_back(std::move(fused));
            }
        }
        // A tree without blocks is named here rather than fused into a stem alone.
        if (blocks_.empty()) layers.take<torch::nn::Conv2dImpl>("layer1.0.conv1");
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
    static FusedConv conv_bn(Layers& layers, const std::string& prefix, const std::string& conv,
                             const std::string& bn, bool relu, torch::ScalarType dtype) {
        return FusedConv(layers.take<torch::nn::Conv2dImpl>(join(prefix, conv)),
                         &layers.take<torch::nn::BatchNorm2dImpl>(join(prefix, bn)), relu, dtype);
    }

    FusedConv stem_;
    std::vector<Block> blocks_;
};

// The regression head (models/head.hpp): sex embedding where the model uses sex, dense1..denseN,
// dropout (nothing to do in evaluation) and the output layer.
FusedHead make_head(BoneAgeNetImpl& net, Layers& layers, torch::ScalarType dtype) {
    const torch::nn::LinearImpl* sex = nullptr;
    if (net.config().use_sex) sex = &layers.take<torch::nn::LinearImpl>("head.sex_embedding");
    std::vector<const torch::nn::LinearImpl*> dense;
    for (int i = 1; layers.has(fmt::format("head.dense{}", i)); ++i)
        dense.push_back(&layers.take<torch::nn::LinearImpl>(fmt::format("head.dense{}", i)));
    return FusedHead(net.config(), sex, dense, layers.take<torch::nn::LinearImpl>("head.output"),
                     dtype);
}

}  // namespace

bool has_fused_trunk(const std::string& arch) {
    return arch == "shallow" || arch == "resnet18" || arch == "resnet50";
}

FusedPlan make_fused_plan(BoneAgeNetImpl& net, torch::ScalarType dtype) {
    const std::string& arch = net.config().arch;
    if (!has_fused_trunk(arch))
        throw Error(ErrorKind::Internal, fmt::format("{} has no fused trunk", arch));
    Layers layers(net, arch);
    FusedPlan plan;
    if (arch == "shallow")
        plan.trunk = std::make_unique<ShallowTrunk>(layers, dtype);
    else
        plan.trunk = std::make_unique<ResNetTrunk>(layers, dtype);
    plan.head.emplace(make_head(net, layers, dtype));
    layers.check_all_taken();
    return plan;
}

}  // namespace boneage::fast
