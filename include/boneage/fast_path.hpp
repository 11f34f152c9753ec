// Inference fast path: a loaded model prepared once for speed on this CPU. Batch norms are
// folded into the convolutions before them, the convolutional trunk runs channels-last in
// bf16 where the CPU computes bf16 natively (fp32 elsewhere), with the weights packed once for
// oneDNN and ReLU fused into the convolutions, and the regression head runs in fp32.
//
//   boneage::LoadedModel m = boneage::load_model("model.bin");
//   boneage::FastModel fast(m.net, boneage::Precision::Auto);
//   torch::Tensor months = fast.infer(images, sex);   // images N x 1 x S x S in [0,1]; months N
#pragma once

#include <boneage/model.hpp>

#include <torch/torch.h>

#include <memory>
#include <string>

namespace boneage {

enum class Precision {
    Auto,  // bf16 where the CPU has native bf16 (AVX512_BF16 or AMX), else fp32
    Fp32,
    Bf16,
};

// "auto", "fp32" or "bf16" to a Precision; throws UsageError for anything else.
Precision parse_precision(const std::string& text);

// "auto", "fp32" or "bf16".
const char* to_string(Precision precision);

// The precision Auto stands for on this CPU; Fp32 and Bf16 are returned unchanged (bf16 is
// emulated, slowly, where the CPU lacks it).
Precision resolve(Precision precision);

// Folds every BatchNorm2d that directly follows a Conv2d among the children of each module
// below `module` (in registration order, with the batch norm's features equal to the
// convolution's output channels) into that convolution's weight. The batch norm keeps only the
// shift (weight 1, running mean 0, running variance 1 - eps, bias the folded shift), so in
// evaluation mode the module computes what it did before. Returns the number of pairs folded.
// Training or saving the module afterwards is wrong: its batch norms no longer learn.
int fold_batchnorm(torch::nn::Module& module);

// A model prepared for inference. Works on its own copy of the weights: the net passed in is
// not changed. Not thread-safe: one FastModel per thread.
class FastModel {
public:
    // Prepares `net` for `precision` (resolved with resolve()). Throws UsageError when net is
    // null, and boneage::Error (Internal) naming the layer when the net is of an architecture
    // with a fused trunk (shallow, resnet18, resnet50) but its module tree is not the one the
    // fused plan mirrors: a layer missing, of another type, or holding weights the plan leaves
    // out. Such a net never falls back to its own forward unannounced.
    explicit FastModel(const BoneAgeNet& net, Precision precision = Precision::Auto);
    ~FastModel();
    FastModel(FastModel&&) noexcept;
    FastModel& operator=(FastModel&&) noexcept;

    // Months (N, fp32) for images N x 1 x S x S (float in [0,1], S the model's input size)
    // and sex N (1 male, 0 female; ignored unless the model uses sex). Runs without gradients.
    torch::Tensor infer(const torch::Tensor& images, const torch::Tensor& sex = {});

    // The precision the trunk runs in (never Auto).
    Precision precision() const;

    // How the net runs: "fused" (the trunk rebuilt from the module tree with folded, packed
    // convolutions: shallow, resnet18 and resnet50, always) or "module" (the net's own forward
    // on folded weights, under bf16 autocast where the precision is bf16: inceptionv4); an
    // ensemble runs each member so and says "ensemble of N: " and the members' modes.
    const std::string& mode() const;

    const ModelConfig& config() const;

private:
    struct State;
    std::unique_ptr<State> state_;
};

}  // namespace boneage
