// The TFLite executor: each operator of the file becomes one Step with its weights prepared
// at load; run() walks the steps over a table of tensors indexed as in the file. Activations
// are NHWC (TFLite's logical layout, so RESHAPE, CONCATENATION and MEAN axes keep their
// meaning); convolutions and pools take a permute({0, 3, 1, 2}) view of them, which has
// channels-last strides and costs no copy, and their result is permuted back.
#include "detect/tflite_graph.hpp"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <algorithm>
#include <boneage/error.hpp>
#include <cmath>
#include <cstring>
#include <fstream>
#include <limits>
#include <map>
#include <set>
#include <sstream>

#include "detect/tflite_file.hpp"

namespace boneage::detect {

namespace {

enum class Kind {
    Add,
    Concatenation,
    Conv2d,
    DepthwiseConv2d,
    FullyConnected,
    Logistic,
    MaxPool2d,
    Mean,
    Pad,
    Prelu,
    Reshape,
    ResizeBilinear,
};

// The operators run here, by BuiltinOperator code; DEQUANTIZE is folded at load.
const std::map<int, Kind>& kinds() {
    using namespace tflite_op;
    static const std::map<int, Kind> k = {
        {kAdd, Kind::Add},
        {kConcatenation, Kind::Concatenation},
        {kConv2d, Kind::Conv2d},
        {kDepthwiseConv2d, Kind::DepthwiseConv2d},
        {kFullyConnected, Kind::FullyConnected},
        {kLogistic, Kind::Logistic},
        {kMaxPool2d, Kind::MaxPool2d},
        {kMean, Kind::Mean},
        {kPad, Kind::Pad},
        {kPrelu, Kind::Prelu},
        {kReshape, Kind::Reshape},
        {kResizeBilinear, Kind::ResizeBilinear},
    };
    return k;
}

std::string shape_string(c10::IntArrayRef shape) {
    return fmt::format("[{}]", fmt::join(shape.begin(), shape.end(), ", "));
}

// TFLite's SAME padding along one axis: the total that keeps ceil(in / stride) outputs, the
// smaller half before.
std::pair<int64_t, int64_t> same_padding(int64_t in, int64_t kernel, int64_t stride,
                                         int64_t dilation) {
    const int64_t out = (in + stride - 1) / stride;
    const int64_t effective = (kernel - 1) * dilation + 1;
    const int64_t total = std::max<int64_t>((out - 1) * stride + effective - in, 0);
    return {total / 2, total - total / 2};
}

// Interpolation rows of TFLite's RESIZE_BILINEAR along one axis (reference_ops'
// ComputeInterpolationValues): per output index, the lower and upper source neighbours and the
// weight of the upper one.
struct Interpolation {
    torch::Tensor lower, upper, weight;
};

Interpolation interpolation(int64_t in, int64_t out, bool align_corners, bool half_pixel) {
    const float scale = align_corners && out > 1 ? static_cast<float>(in - 1) / (out - 1)
                                                 : static_cast<float>(in) / out;
    std::vector<int64_t> lower(out), upper(out);
    std::vector<float> weight(out);
    for (int64_t i = 0; i < out; ++i) {
        const float s = half_pixel ? (static_cast<float>(i) + 0.5f) * scale - 0.5f
                                   : static_cast<float>(i) * scale;
        lower[i] = std::max<int64_t>(static_cast<int64_t>(std::floor(s)), 0);
        upper[i] = std::min<int64_t>(static_cast<int64_t>(std::ceil(s)), in - 1);
        weight[i] = s - static_cast<float>(lower[i]);
    }
    return {torch::tensor(lower, torch::kLong), torch::tensor(upper, torch::kLong),
            torch::tensor(weight, torch::kFloat)};
}

struct Step {
    Kind kind;
    std::string what;         // "operator 12 (CONV_2D)", for errors
    std::vector<int> inputs;  // tensor indices (-1: absent optional input)
    int output = -1;
    TfliteOptions options;
    torch::Tensor weight, bias;  // convolutions, FULLY_CONNECTED (LibTorch's layout); PRELU's
                                 // per-channel alpha
    int64_t groups = 1;          // DEPTHWISE_CONV_2D: the input channels
    std::vector<int64_t> ints;   // PAD: constant_pad_nd's list; RESHAPE: the shape; MEAN: axes
    Interpolation rows, cols;    // RESIZE_BILINEAR
    std::vector<int64_t> expected_shape;  // the file's output shape, when fully known
    std::vector<int> release;             // tensors last used here
};

}  // namespace

struct TfliteGraph::Impl {
    std::string origin;
    std::vector<torch::Tensor> constants;  // by tensor index; undefined where computed
    std::vector<int> input_ids, output_ids;
    std::vector<TfliteTensorInfo> inputs, outputs;
    std::vector<std::string> operators;
    std::vector<Step> steps;
};

namespace {

class Loader {
public:
    Loader(const TfliteModel& m, TfliteGraph::Impl& g) : m_(m), g_(g) {}

    [[noreturn]] void fail(const std::string& reason) const {
        throw Error(ErrorKind::BadData, m_.origin, reason);
    }

    void load() {
        g_.origin = m_.origin;
        check_operators();
        load_constants();
        fold_dequantize();
        for (size_t i = 0; i < m_.operators.size(); ++i) {
            if (m_.operators[i].code == tflite_op::kDequantize) continue;
            g_.steps.push_back(prepare(m_.operators[i], static_cast<int>(i)));
        }
        plan_releases();
        for (int id : m_.inputs) {
            g_.input_ids.push_back(id);
            g_.inputs.push_back({m_.tensors[id].name, m_.tensors[id].shape});
            if (g_.constants[id].defined())
                fail(fmt::format("graph input '{}' is a constant", m_.tensors[id].name));
        }
        for (int id : m_.outputs) {
            g_.output_ids.push_back(id);
            g_.outputs.push_back({m_.tensors[id].name, m_.tensors[id].shape});
        }
    }

private:
    void check_operators() {
        std::set<std::string> names, unsupported;
        for (const TfliteOperator& op : m_.operators) {
            names.insert(op.name);
            if (op.code != tflite_op::kDequantize && !kinds().count(op.code))
                unsupported.insert(op.name);
        }
        if (!unsupported.empty())
            fail(fmt::format("unsupported operator{} {} (supported: {})",
                             unsupported.size() > 1 ? "s" : "", fmt::join(unsupported, ", "),
                             fmt::join(TfliteGraph::supported_operators(), ", ")));
        g_.operators.assign(names.begin(), names.end());
    }

    void load_constants() {
        g_.constants.resize(m_.tensors.size());
        for (size_t i = 0; i < m_.tensors.size(); ++i) {
            const TfliteTensor& t = m_.tensors[i];
            const auto type = static_cast<TfliteType>(t.type);
            if (!t.constant) {
                if (type != TfliteType::Float32)
                    fail(
                        fmt::format("tensor '{}' is computed in {}; only FLOAT32 is supported "
                                    "for computed tensors (FLOAT16 and INT32 for constants)",
                                    t.name, tflite_type_name(t.type)));
                continue;
            }
            torch::ScalarType dtype;
            switch (type) {
                case TfliteType::Float32:
                    dtype = torch::kFloat;
                    break;
                case TfliteType::Float16:
                    dtype = torch::kHalf;
                    break;
                case TfliteType::Int32:
                    dtype = torch::kInt;
                    break;
                default:
                    fail(
                        fmt::format("constant tensor '{}' has type {}; supported: FLOAT32, "
                                    "FLOAT16, INT32",
                                    t.name, tflite_type_name(t.type)));
            }
            int64_t count = 1;
            for (int64_t d : t.shape) {
                if (d < 0)
                    fail(fmt::format("constant tensor '{}' has an unknown dimension", t.name));
                if (d > 0 && count > static_cast<int64_t>(t.data.size()) / d)
                    fail(
                        fmt::format("constant tensor '{}' of shape {} is larger than its buffer "
                                    "of {} bytes",
                                    t.name, shape_string(t.shape), t.data.size()));
                count *= d;
            }
            const size_t bytes = static_cast<size_t>(count) * c10::elementSize(dtype);
            if (t.data.size() != bytes)
                fail(fmt::format(
                    "constant tensor '{}' of shape {} and type {} needs {} bytes, "
                    "its buffer has {}",
                    t.name, shape_string(t.shape), tflite_type_name(t.type), bytes, t.data.size()));
            torch::Tensor c = torch::empty(t.shape, torch::TensorOptions().dtype(dtype));
            std::memcpy(c.data_ptr(), t.data.data(), bytes);
            g_.constants[i] = c;
        }
    }

    // DEQUANTIZE of a constant (float16 weights in these models) becomes a float32 constant.
    void fold_dequantize() {
        for (const TfliteOperator& op : m_.operators) {
            if (op.code != tflite_op::kDequantize) continue;
            if (op.inputs.size() != 1 || op.outputs.size() != 1 || op.inputs[0] < 0)
                fail("DEQUANTIZE takes one input and gives one output");
            const TfliteTensor& in = m_.tensors[op.inputs[0]];
            const torch::Tensor& c = g_.constants[op.inputs[0]];
            if (!c.defined() || c.scalar_type() != torch::kHalf)
                fail(fmt::format(
                    "DEQUANTIZE of '{}' ({}, {}): only float16 constants are "
                    "supported",
                    in.name, c.defined() ? "constant" : "computed", tflite_type_name(in.type)));
            g_.constants[op.outputs[0]] = c.to(torch::kFloat);
        }
    }

    const torch::Tensor& constant(const TfliteOperator& op, size_t k, const std::string& what,
                                  const char* role) {
        const int id = op.inputs[k];
        if (id < 0 || !g_.constants[id].defined())
            fail(fmt::format("{}: the {} must be a constant tensor", what, role));
        return g_.constants[id];
    }

    std::vector<int64_t> ints(const torch::Tensor& c) {
        const torch::Tensor l = c.to(torch::kLong).contiguous();
        return std::vector<int64_t>(l.data_ptr<int64_t>(), l.data_ptr<int64_t>() + l.numel());
    }

    const std::vector<int64_t>& shape(int id) const { return m_.tensors[id].shape; }

    Step prepare(const TfliteOperator& op, int index) {
        Step s;
        s.kind = kinds().at(op.code);
        s.what = fmt::format("operator {} ({})", index, op.name);
        s.inputs = op.inputs;
        s.options = op.options;
        if (op.outputs.size() != 1)
            fail(fmt::format("{}: {} outputs, expected 1", s.what, op.outputs.size()));
        s.output = op.outputs[0];
        if (g_.constants[s.output].defined())
            fail(fmt::format("{}: writes the constant tensor '{}'", s.what,
                             m_.tensors[s.output].name));
        const auto& out_shape = shape(s.output);
        if (!out_shape.empty() &&
            std::all_of(out_shape.begin(), out_shape.end(), [](int64_t d) { return d >= 0; }))
            s.expected_shape = out_shape;
        auto arity = [&](size_t lo, size_t hi) {
            if (op.inputs.size() < lo || op.inputs.size() > hi)
                fail(fmt::format("{}: {} inputs, expected {}", s.what, op.inputs.size(),
                                 lo == hi ? std::to_string(lo) : fmt::format("{} to {}", lo, hi)));
            for (size_t k = 0; k < lo; ++k)
                if (op.inputs[k] < 0) fail(fmt::format("{}: input {} is missing", s.what, k));
        };
        auto rank = [&](int id, size_t r, const char* role) {
            if (shape(id).size() != r)
                fail(fmt::format("{}: the {} has shape {}, expected rank {}", s.what, role,
                                 shape_string(shape(id)), r));
        };
        auto bias = [&](size_t k, int64_t channels) {
            if (op.inputs.size() <= k || op.inputs[k] < 0) return torch::Tensor();
            torch::Tensor b = constant(op, k, s.what, "bias").reshape({-1});
            if (b.scalar_type() != torch::kFloat || b.numel() != channels)
                fail(fmt::format("{}: bias of {} values for {} channels", s.what, b.numel(),
                                 channels));
            return b;
        };
        switch (s.kind) {
            case Kind::Conv2d: {
                arity(2, 3);
                rank(op.inputs[0], 4, "input");
                // OHWI -> OIHW: the permuted view is LibTorch's channels-last weight layout,
                // the memory order of the file.
                const torch::Tensor& w = constant(op, 1, s.what, "filter");
                if (w.dim() != 4 || w.scalar_type() != torch::kFloat ||
                    w.size(3) != shape(op.inputs[0])[3])
                    fail(fmt::format("{}: filter {} for input {}", s.what, shape_string(w.sizes()),
                                     shape_string(shape(op.inputs[0]))));
                s.weight = w.permute({0, 3, 1, 2});
                s.bias = bias(2, w.size(0));
                break;
            }
            case Kind::DepthwiseConv2d: {
                arity(2, 3);
                rank(op.inputs[0], 4, "input");
                const torch::Tensor& w = constant(op, 1, s.what, "filter");
                const int64_t channels = shape(op.inputs[0])[3];
                if (w.dim() != 4 || w.size(0) != 1 || w.scalar_type() != torch::kFloat ||
                    channels <= 0 || w.size(3) % channels != 0 ||
                    (s.options.depth_multiplier > 0 &&
                     w.size(3) != channels * s.options.depth_multiplier))
                    fail(fmt::format("{}: filter {} for input {} and depth multiplier {}", s.what,
                                     shape_string(w.sizes()), shape_string(shape(op.inputs[0])),
                                     s.options.depth_multiplier));
                // 1 H W (C*M) -> (C*M) 1 H W with C groups: TFLite's output channel c*M + m
                // reads input channel c, as group c's m-th output does in LibTorch.
                s.weight = w.permute({3, 0, 1, 2}).contiguous();
                s.groups = channels;
                s.bias = bias(2, w.size(3));
                break;
            }
            case Kind::FullyConnected: {
                arity(2, 3);
                const torch::Tensor& w = constant(op, 1, s.what, "weights");
                if (s.options.weights_format != 0)
                    fail(fmt::format("{}: weights format {} (only DEFAULT is supported)", s.what,
                                     s.options.weights_format));
                if (w.dim() != 2 || w.scalar_type() != torch::kFloat)
                    fail(fmt::format("{}: weights of shape {}", s.what, shape_string(w.sizes())));
                s.weight = w;
                s.bias = bias(2, w.size(0));
                break;
            }
            case Kind::MaxPool2d:
                arity(1, 1);
                rank(op.inputs[0], 4, "input");
                break;
            case Kind::Pad: {
                arity(2, 2);
                const std::vector<int64_t> p = ints(constant(op, 1, s.what, "paddings"));
                const size_t r = shape(op.inputs[0]).size();
                if (p.size() != 2 * r)
                    fail(fmt::format("{}: {} padding values for rank {}", s.what, p.size(), r));
                for (int64_t v : p)
                    if (v < 0) fail(fmt::format("{}: negative padding {}", s.what, v));
                for (size_t d = r; d-- > 0;) {  // constant_pad_nd: last dimension first
                    s.ints.push_back(p[2 * d]);
                    s.ints.push_back(p[2 * d + 1]);
                }
                break;
            }
            case Kind::Reshape:
                arity(1, 2);
                if (op.inputs.size() == 2 && op.inputs[1] >= 0 &&
                    g_.constants[op.inputs[1]].defined())
                    s.ints = ints(g_.constants[op.inputs[1]]);
                else if (s.options.has_new_shape)
                    s.ints = s.options.new_shape;
                else if (!s.expected_shape.empty())
                    s.ints = s.expected_shape;
                else
                    fail(fmt::format("{}: no constant target shape", s.what));
                break;
            case Kind::ResizeBilinear: {
                arity(2, 2);
                rank(op.inputs[0], 4, "input");
                const std::vector<int64_t> size = ints(constant(op, 1, s.what, "size"));
                const auto& in = shape(op.inputs[0]);
                constexpr int64_t kLargest = 1 << 16;  // a bound for sizes read from outside
                if (size.size() != 2 || size[0] < 1 || size[1] < 1 || size[0] > kLargest ||
                    size[1] > kLargest || in[1] < 1 || in[2] < 1)
                    fail(fmt::format("{}: output size {} for input {}", s.what, shape_string(size),
                                     shape_string(in)));
                if (s.options.align_corners && s.options.half_pixel_centers)
                    fail(fmt::format("{}: align_corners and half_pixel_centers together", s.what));
                s.ints = size;
                s.rows = interpolation(in[1], size[0], s.options.align_corners,
                                       s.options.half_pixel_centers);
                s.cols = interpolation(in[2], size[1], s.options.align_corners,
                                       s.options.half_pixel_centers);
                break;
            }
            case Kind::Mean: {
                arity(2, 2);
                const int64_t r = static_cast<int64_t>(shape(op.inputs[0]).size());
                for (int64_t a : ints(constant(op, 1, s.what, "axes"))) {
                    if (a < -r || a >= r)
                        fail(fmt::format("{}: axis {} for rank {}", s.what, a, r));
                    s.ints.push_back(a < 0 ? a + r : a);
                }
                break;
            }
            case Kind::Prelu: {
                arity(2, 2);
                // One alpha per channel (the palm models' [1, 1, C]): LibTorch's prelu kernel
                // on the NCHW view, one pass instead of where's three.
                const int id = op.inputs[1];
                const auto& in = shape(op.inputs[0]);
                if (g_.constants[id].defined() && in.size() == 4 && g_.constants[id].dim() >= 1 &&
                    g_.constants[id].scalar_type() == torch::kFloat &&
                    g_.constants[id].numel() == in[3] && g_.constants[id].size(-1) == in[3])
                    s.weight = g_.constants[id].reshape({-1}).contiguous();
                break;
            }
            case Kind::Concatenation: {
                if (op.inputs.empty()) fail(fmt::format("{}: no inputs", s.what));
                arity(op.inputs.size(), op.inputs.size());
                const int64_t r = static_cast<int64_t>(shape(op.inputs[0]).size());
                if (s.options.axis < -r || s.options.axis >= r)
                    fail(fmt::format("{}: axis {} for rank {}", s.what, s.options.axis, r));
                break;
            }
            case Kind::Add:
                arity(2, 2);
                break;
            case Kind::Logistic:
                arity(1, 1);
                break;
        }
        return s;
    }

    // Frees each computed tensor after its last reader, unless the graph returns it.
    void plan_releases() {
        std::vector<int> last(m_.tensors.size(), -1);
        for (size_t i = 0; i < g_.steps.size(); ++i)
            for (int id : g_.steps[i].inputs)
                if (id >= 0) last[id] = static_cast<int>(i);
        for (int id : m_.outputs) last[id] = -1;
        for (size_t id = 0; id < last.size(); ++id)
            if (last[id] >= 0 && !g_.constants[id].defined())
                g_.steps[last[id]].release.push_back(static_cast<int>(id));
    }

    const TfliteModel& m_;
    TfliteGraph::Impl& g_;
};

void activate(torch::Tensor& y, TfliteActivation a) {
    switch (a) {
        case TfliteActivation::None:
            break;
        case TfliteActivation::Relu:
            y.relu_();
            break;
        case TfliteActivation::ReluN1To1:
            y.clamp_(-1.0, 1.0);
            break;
        case TfliteActivation::Relu6:
            y.clamp_(0.0, 6.0);
            break;
        case TfliteActivation::Tanh:
            y.tanh_();
            break;
    }
}

// CONV_2D and DEPTHWISE_CONV_2D on an NHWC tensor.
torch::Tensor convolution(const Step& s, const torch::Tensor& nhwc) {
    const TfliteOptions& o = s.options;
    torch::Tensor x = nhwc.permute({0, 3, 1, 2});
    int64_t pad_h = 0, pad_w = 0;
    if (o.padding == TflitePadding::Same) {
        const auto [top, bottom] =
            same_padding(x.size(2), s.weight.size(2), o.stride_h, o.dilation_h);
        const auto [left, right] =
            same_padding(x.size(3), s.weight.size(3), o.stride_w, o.dilation_w);
        if (top == bottom && left == right) {
            pad_h = top;
            pad_w = left;
        } else {
            x = torch::constant_pad_nd(x, {left, right, top, bottom}, 0.0);
        }
    }
    torch::Tensor y = torch::conv2d(x, s.weight, s.bias, {o.stride_h, o.stride_w}, {pad_h, pad_w},
                                    {o.dilation_h, o.dilation_w}, s.groups);
    activate(y, o.activation);
    return y.permute({0, 2, 3, 1});
}

torch::Tensor max_pool(const Step& s, const torch::Tensor& nhwc) {
    const TfliteOptions& o = s.options;
    torch::Tensor x = nhwc.permute({0, 3, 1, 2});
    int64_t pad_h = 0, pad_w = 0;
    if (o.padding == TflitePadding::Same) {
        const auto [top, bottom] = same_padding(x.size(2), o.filter_h, o.stride_h, 1);
        const auto [left, right] = same_padding(x.size(3), o.filter_w, o.stride_w, 1);
        if (top == bottom && left == right) {
            pad_h = top;
            pad_w = left;
        } else {
            x = torch::constant_pad_nd(x, {left, right, top, bottom},
                                       -std::numeric_limits<double>::infinity());
        }
    }
    torch::Tensor y =
        torch::max_pool2d(x, {o.filter_h, o.filter_w}, {o.stride_h, o.stride_w}, {pad_h, pad_w});
    activate(y, o.activation);
    return y.permute({0, 2, 3, 1});
}

// RESIZE_BILINEAR, separably: along H, then along W.
torch::Tensor resize_bilinear(const Step& s, const torch::Tensor& nhwc) {
    auto along = [](const torch::Tensor& x, int64_t dim, const Interpolation& ip) {
        const torch::Tensor lo = x.index_select(dim, ip.lower);
        const torch::Tensor hi = x.index_select(dim, ip.upper);
        std::vector<int64_t> view(4, 1);
        view[dim] = ip.weight.numel();
        return torch::lerp(lo, hi, ip.weight.view(view));
    };
    return along(along(nhwc, 1, s.rows), 2, s.cols);
}

torch::Tensor execute(const Step& s, const std::vector<torch::Tensor>& v) {
    const torch::Tensor& x = v[s.inputs[0]];
    const TfliteOptions& o = s.options;
    switch (s.kind) {
        case Kind::Conv2d:
        case Kind::DepthwiseConv2d:
            return convolution(s, x);
        case Kind::MaxPool2d:
            return max_pool(s, x);
        case Kind::Add: {
            torch::Tensor y = torch::add(x, v[s.inputs[1]]);
            activate(y, o.activation);
            return y;
        }
        case Kind::Concatenation: {
            std::vector<torch::Tensor> parts;
            parts.reserve(s.inputs.size());
            for (int id : s.inputs) parts.push_back(v[id]);
            const int64_t axis = o.axis < 0 ? o.axis + x.dim() : o.axis;
            torch::Tensor y = torch::cat(parts, axis);
            activate(y, o.activation);
            return y;
        }
        case Kind::FullyConnected: {
            const int64_t in = s.weight.size(1);
            TORCH_CHECK(x.numel() % in == 0, s.what, ": input of shape ", x.sizes(),
                        " for weights of ", in, " inputs");
            torch::Tensor y = torch::linear(x.reshape({-1, in}), s.weight, s.bias);
            activate(y, o.activation);
            if (o.keep_num_dims) {
                std::vector<int64_t> shape(x.sizes().begin(), x.sizes().end());
                shape.back() = s.weight.size(0);
                y = y.reshape(shape);
            }
            return y;
        }
        case Kind::Logistic:
            return torch::sigmoid(x);
        case Kind::Mean:
            return torch::mean(x, s.ints, o.keep_dims);
        case Kind::Pad:
            return torch::constant_pad_nd(x, s.ints, 0.0);
        case Kind::Prelu: {
            if (s.weight.defined())
                return torch::prelu(x.permute({0, 3, 1, 2}), s.weight).permute({0, 2, 3, 1});
            const torch::Tensor& alpha = v[s.inputs[1]];
            return torch::where(x >= 0, x, x * alpha);
        }
        case Kind::Reshape:
            return x.reshape(s.ints);
        case Kind::ResizeBilinear:
            return resize_bilinear(s, x);
    }
    TORCH_CHECK(false, "unreachable");
}

std::string read_file(const std::filesystem::path& file) {
    std::ifstream in(file, std::ios::binary);
    if (!in) throw Error(ErrorKind::NotFound, file, "cannot be opened");
    std::ostringstream ss;
    ss << in.rdbuf();
    if (in.bad()) throw Error(ErrorKind::NotFound, file, "cannot be read");
    return ss.str();
}

}  // namespace

TfliteGraph TfliteGraph::load(const std::filesystem::path& file) {
    return from_bytes(read_file(file), file.string());
}

TfliteGraph TfliteGraph::from_bytes(const std::string& bytes, const std::string& origin) {
    const TfliteModel model = parse_tflite(bytes, origin);
    auto impl = std::make_shared<Impl>();
    {
        c10::InferenceMode guard;
        Loader(model, *impl).load();
    }
    return TfliteGraph(std::move(impl));
}

const std::vector<TfliteTensorInfo>& TfliteGraph::inputs() const { return impl_->inputs; }
const std::vector<TfliteTensorInfo>& TfliteGraph::outputs() const { return impl_->outputs; }
std::vector<std::string> TfliteGraph::operators() const { return impl_->operators; }

std::vector<std::string> TfliteGraph::supported_operators() {
    std::vector<std::string> names{tflite_operator_name(tflite_op::kDequantize)};
    for (const auto& [code, kind] : kinds()) names.push_back(tflite_operator_name(code));
    std::sort(names.begin(), names.end());
    return names;
}

std::vector<torch::Tensor> TfliteGraph::run(const std::vector<torch::Tensor>& inputs) const {
    const Impl& g = *impl_;
    TORCH_CHECK(inputs.size() == g.input_ids.size(), g.origin, ": ", g.input_ids.size(),
                " input(s) expected, ", inputs.size(), " given");
    c10::InferenceMode guard;
    std::vector<torch::Tensor> v = g.constants;
    for (size_t i = 0; i < inputs.size(); ++i) {
        const torch::Tensor& x = inputs[i];
        TORCH_CHECK(x.defined() && x.scalar_type() == torch::kFloat && x.device().is_cpu(),
                    g.origin, ": input '", g.inputs[i].name, "' must be a float32 CPU tensor");
        TORCH_CHECK(x.sizes().vec() == g.inputs[i].shape, g.origin, ": input '", g.inputs[i].name,
                    "' has shape ", x.sizes(), ", the model takes ",
                    shape_string(g.inputs[i].shape));
        v[g.input_ids[i]] = x;
    }
    for (const Step& s : g.steps) {
        for (int id : s.inputs)
            if (id >= 0 && !v[id].defined())
                throw Error(ErrorKind::BadData, g.origin,
                            fmt::format("{} reads a tensor no earlier operator wrote", s.what));
        torch::Tensor y = execute(s, v);
        if (!s.expected_shape.empty() && y.sizes() != c10::IntArrayRef(s.expected_shape))
            throw Error(ErrorKind::BadData, g.origin,
                        fmt::format("{} gives shape {}, the file says {}", s.what,
                                    shape_string(y.sizes()), shape_string(s.expected_shape)));
        v[s.output] = std::move(y);
        for (int id : s.release) v[id] = torch::Tensor();
    }
    std::vector<torch::Tensor> out;
    out.reserve(g.output_ids.size());
    for (size_t i = 0; i < g.output_ids.size(); ++i) {
        const torch::Tensor& y = v[g.output_ids[i]];
        if (!y.defined())
            throw Error(ErrorKind::BadData, g.origin,
                        fmt::format("output '{}' is written by no operator", g.outputs[i].name));
        out.push_back(y.contiguous());
    }
    return out;
}

}  // namespace boneage::detect
