// A TensorFlow Lite model run on LibTorch: the graph of a .tflite file (tflite_file.hpp)
// executed operator by operator on the CPU, for MediaPipe's palm detection and hand landmark
// models. Weights are read once at load (FLOAT16 weights behind DEQUANTIZE become float32, conv
// kernels are put in LibTorch's layout); activations stay NHWC as in TFLite, and convolutions
// see them through channels-last NCHW views.
//
//   auto palm = boneage::detect::TfliteGraph::load("palm_detection_full.tflite");
//   torch::Tensor image = torch::rand({1, 192, 192, 3});          // NHWC, float32
//   std::vector<torch::Tensor> out = palm.run({image});           // 1x2016x18, 1x2016x1
#pragma once

#include <torch/torch.h>

#include <cstdint>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

namespace boneage::detect {

struct TfliteTensorInfo {
    std::string name;
    std::vector<int64_t> shape;
};

class TfliteGraph {
public:
    // Reads a .tflite file. Throws boneage::Error naming the file and the reason: NotFound when
    // it cannot be opened; BadData when it is not a TFLite file (no "TFL3" identifier at bytes
    // 4..8), fails flatbuffer verification, has more than one subgraph, uses an operator this
    // executor does not run (named, with the list of those it does) or a tensor type it does
    // not take (float32; float16 and int32 constants).
    static TfliteGraph load(const std::filesystem::path& file);
    // The same from bytes in memory; `origin` names them in errors.
    static TfliteGraph from_bytes(const std::string& bytes, const std::string& origin);

    // The graph's inputs and outputs, in the file's order, with the file's names and shapes.
    const std::vector<TfliteTensorInfo>& inputs() const;
    const std::vector<TfliteTensorInfo>& outputs() const;
    // The builtin operator names the graph uses, sorted, unique (e.g. "CONV_2D"); DEQUANTIZE of
    // constants is listed though it is folded at load.
    std::vector<std::string> operators() const;
    // The operator names this executor runs, sorted.
    static std::vector<std::string> supported_operators();

    // Runs the graph on the CPU under torch::InferenceMode. `inputs`: float32 tensors in
    // inputs()' shapes (NHWC for images), one per input. Returns float32 tensors (inference
    // tensors, contiguous) in outputs()' order and the file's shapes. Throws c10::Error
    // (TORCH_CHECK) for inputs of the wrong number, type or shape, and boneage::Error (BadData)
    // when an operator's result disagrees with the shape the file gives it. Const and
    // thread-safe: weights are shared read-only, each call has its own intermediates.
    std::vector<torch::Tensor> run(const std::vector<torch::Tensor>& inputs) const;

    struct Impl;

private:
    explicit TfliteGraph(std::shared_ptr<const Impl> impl) : impl_(std::move(impl)) {}
    std::shared_ptr<const Impl> impl_;
};

}  // namespace boneage::detect
