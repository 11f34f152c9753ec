// The TFLite reader and executor (src/detect/tflite_*): small .tflite files built here with
// FlatBufferBuilder, one operator each, checked against LibTorch computed directly; the
// reader's refusals; and, where they are present, MediaPipe's real hand models.
#include <flatbuffers/flatbuffers.h>
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <algorithm>
#include <boneage/error.hpp>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <limits>
#include <map>
#include <opencv2/core.hpp>
#include <opencv2/imgproc.hpp>
#include <optional>
#include <thread>

#include "detect/tflite_file.hpp"
#include "detect/tflite_graph.hpp"

namespace fs = std::filesystem;
namespace fb = flatbuffers;
using boneage::detect::TfliteGraph;

namespace {

// Field numbers, enum values and union members of TFLite's schema.fbs, written out here on
// their own so the test builds files the way TFLite's converter lays them out.
constexpr fb::voffset_t F(int id) { return static_cast<fb::voffset_t>(4 + 2 * id); }
constexpr int8_t kFloat32 = 0, kFloat16 = 1, kInt32 = 2, kInt8 = 9;
constexpr int8_t kSame = 0, kValid = 1;
constexpr int8_t kNone = 0, kRelu = 1, kRelu6 = 3;
constexpr int kAdd = 0, kConcatenation = 2, kConv2d = 3, kDepthwiseConv2d = 4, kDequantize = 6,
              kFullyConnected = 9, kLogistic = 14, kMaxPool2d = 17, kReshape = 22,
              kResizeBilinear = 23, kSoftmax = 25, kPad = 34, kMean = 40, kPrelu = 54;
constexpr uint8_t kConv2dOptions = 1, kDepthwiseConv2dOptions = 2, kPool2dOptions = 5,
                  kFullyConnectedOptions = 8, kConcatenationOptions = 10, kAddOptions = 11,
                  kResizeBilinearOptions = 15, kReshapeOptions = 17, kReducerOptions = 27;

using OptionsFn = std::function<fb::Offset<void>(fb::FlatBufferBuilder&)>;

struct TensorDef {
    std::string name;
    std::vector<int64_t> shape;
    int8_t type = kFloat32;
    std::string data;  // constant bytes; empty for a computed tensor
};

struct OpDef {
    int code;
    std::vector<int32_t> inputs, outputs;
    uint8_t options_type = 0;
    OptionsFn options;
};

std::string bytes_of(const torch::Tensor& t) {
    const torch::Tensor c = t.contiguous();
    return std::string(static_cast<const char*>(c.data_ptr()), c.nbytes());
}

// A one-subgraph model described tensor by tensor and operator by operator.
struct Net {
    std::vector<TensorDef> tensors;
    std::vector<OpDef> ops;
    std::vector<int32_t> inputs, outputs;
    int subgraphs = 1;

    int tensor(const std::string& name, std::vector<int64_t> shape, int8_t type = kFloat32,
               std::string data = {}) {
        tensors.push_back({name, std::move(shape), type, std::move(data)});
        return static_cast<int>(tensors.size()) - 1;
    }
    int input(const std::string& name, std::vector<int64_t> shape) {
        const int id = tensor(name, std::move(shape));
        inputs.push_back(id);
        return id;
    }
    int constant(const std::string& name, const torch::Tensor& t) {
        const int8_t type = t.scalar_type() == torch::kHalf  ? kFloat16
                            : t.scalar_type() == torch::kInt ? kInt32
                                                             : kFloat32;
        return tensor(name, t.sizes().vec(), type, bytes_of(t));
    }
    int ints(const std::string& name, std::vector<int32_t> values, std::vector<int64_t> shape) {
        return constant(name, torch::tensor(values, torch::kInt).reshape(shape));
    }
    void op(int code, std::vector<int32_t> in, std::vector<int32_t> out, uint8_t type = 0,
            OptionsFn options = {}) {
        ops.push_back({code, std::move(in), std::move(out), type, std::move(options)});
    }
    int output(const std::string& name, std::vector<int64_t> shape) {
        const int id = tensor(name, std::move(shape));
        outputs.push_back(id);
        return id;
    }

    std::string build(const char* identifier = "TFL3") const {
        fb::FlatBufferBuilder b;
        std::vector<int> codes;
        std::map<int, uint32_t> code_index;
        for (const OpDef& op : ops)
            if (!code_index.count(op.code)) {
                code_index[op.code] = static_cast<uint32_t>(codes.size());
                codes.push_back(op.code);
            }
        std::vector<fb::Offset<fb::Table>> opcodes;
        for (int code : codes) {
            const auto start = b.StartTable();
            b.AddElement<int8_t>(F(0), static_cast<int8_t>(std::min(code, 127)), 0);
            b.AddElement<int32_t>(F(3), code, 0);
            opcodes.push_back(fb::Offset<fb::Table>(b.EndTable(start)));
        }
        // Buffer 0 is the empty one, as the converter writes it.
        std::vector<fb::Offset<fb::Table>> buffers;
        std::vector<uint32_t> buffer_of(tensors.size(), 0);
        buffers.push_back(fb::Offset<fb::Table>(b.EndTable(b.StartTable())));
        for (size_t i = 0; i < tensors.size(); ++i) {
            if (tensors[i].data.empty()) continue;
            const auto data = b.CreateVector(
                reinterpret_cast<const uint8_t*>(tensors[i].data.data()), tensors[i].data.size());
            const auto start = b.StartTable();
            b.AddOffset(F(0), data);
            buffer_of[i] = static_cast<uint32_t>(buffers.size());
            buffers.push_back(fb::Offset<fb::Table>(b.EndTable(start)));
        }
        std::vector<fb::Offset<fb::Table>> tensor_tables;
        for (size_t i = 0; i < tensors.size(); ++i) {
            std::vector<int32_t> dims(tensors[i].shape.begin(), tensors[i].shape.end());
            const auto shape = b.CreateVector(dims);
            const auto name = b.CreateString(tensors[i].name);
            const auto start = b.StartTable();
            b.AddOffset(F(0), shape);
            b.AddElement<int8_t>(F(1), tensors[i].type, 0);
            b.AddElement<uint32_t>(F(2), buffer_of[i], 0);
            b.AddOffset(F(3), name);
            tensor_tables.push_back(fb::Offset<fb::Table>(b.EndTable(start)));
        }
        std::vector<fb::Offset<fb::Table>> op_tables;
        for (const OpDef& op : ops) {
            const auto in = b.CreateVector(op.inputs);
            const auto out = b.CreateVector(op.outputs);
            const fb::Offset<void> options = op.options ? op.options(b) : fb::Offset<void>();
            const auto start = b.StartTable();
            b.AddElement<uint32_t>(F(0), code_index.at(op.code), 0);
            b.AddOffset(F(1), in);
            b.AddOffset(F(2), out);
            b.AddElement<uint8_t>(F(3), op.options_type, 0);
            if (!options.IsNull()) b.AddOffset(F(4), options);
            op_tables.push_back(fb::Offset<fb::Table>(b.EndTable(start)));
        }
        const auto tensor_vec = b.CreateVector(tensor_tables);
        const auto in_vec = b.CreateVector(inputs);
        const auto out_vec = b.CreateVector(outputs);
        const auto op_vec = b.CreateVector(op_tables);
        std::vector<fb::Offset<fb::Table>> subgraph_tables;
        for (int i = 0; i < subgraphs; ++i) {
            const auto start = b.StartTable();
            b.AddOffset(F(0), tensor_vec);
            b.AddOffset(F(1), in_vec);
            b.AddOffset(F(2), out_vec);
            b.AddOffset(F(3), op_vec);
            subgraph_tables.push_back(fb::Offset<fb::Table>(b.EndTable(start)));
        }
        const auto opcode_vec = b.CreateVector(opcodes);
        const auto subgraph_vec = b.CreateVector(subgraph_tables);
        const auto buffer_vec = b.CreateVector(buffers);
        const auto description = b.CreateString("built by test_tflite");
        const auto start = b.StartTable();
        b.AddElement<uint32_t>(F(0), 3, 0);
        b.AddOffset(F(1), opcode_vec);
        b.AddOffset(F(2), subgraph_vec);
        b.AddOffset(F(3), description);
        b.AddOffset(F(4), buffer_vec);
        b.Finish(fb::Offset<fb::Table>(b.EndTable(start)), identifier);
        return std::string(reinterpret_cast<const char*>(b.GetBufferPointer()), b.GetSize());
    }

    TfliteGraph graph() const { return TfliteGraph::from_bytes(build(), "test.tflite"); }
};

OptionsFn conv_options(int8_t padding, int stride_w, int stride_h, int8_t activation,
                       int dilation_w = 1, int dilation_h = 1) {
    return [=](fb::FlatBufferBuilder& b) {
        const auto start = b.StartTable();
        b.AddElement<int8_t>(F(0), padding, 0);
        b.AddElement<int32_t>(F(1), stride_w, 0);
        b.AddElement<int32_t>(F(2), stride_h, 0);
        b.AddElement<int8_t>(F(3), activation, 0);
        b.AddElement<int32_t>(F(4), dilation_w, 1);
        b.AddElement<int32_t>(F(5), dilation_h, 1);
        return fb::Offset<void>(b.EndTable(start));
    };
}

OptionsFn depthwise_options(int8_t padding, int stride, int multiplier, int8_t activation) {
    return [=](fb::FlatBufferBuilder& b) {
        const auto start = b.StartTable();
        b.AddElement<int8_t>(F(0), padding, 0);
        b.AddElement<int32_t>(F(1), stride, 0);
        b.AddElement<int32_t>(F(2), stride, 0);
        b.AddElement<int32_t>(F(3), multiplier, 0);
        b.AddElement<int8_t>(F(4), activation, 0);
        return fb::Offset<void>(b.EndTable(start));
    };
}

OptionsFn pool_options(int8_t padding, int stride, int filter) {
    return [=](fb::FlatBufferBuilder& b) {
        const auto start = b.StartTable();
        b.AddElement<int8_t>(F(0), padding, 0);
        b.AddElement<int32_t>(F(1), stride, 0);
        b.AddElement<int32_t>(F(2), stride, 0);
        b.AddElement<int32_t>(F(3), filter, 0);
        b.AddElement<int32_t>(F(4), filter, 0);
        return fb::Offset<void>(b.EndTable(start));
    };
}

// AddOptions and FullyConnectedOptions: the activation is field 0.
OptionsFn activation_options(int8_t activation) {
    return [=](fb::FlatBufferBuilder& b) {
        const auto start = b.StartTable();
        b.AddElement<int8_t>(F(0), activation, 0);
        return fb::Offset<void>(b.EndTable(start));
    };
}

OptionsFn concatenation_options(int axis) {
    return [=](fb::FlatBufferBuilder& b) {
        const auto start = b.StartTable();
        b.AddElement<int32_t>(F(0), axis, 0);
        return fb::Offset<void>(b.EndTable(start));
    };
}

OptionsFn resize_options(bool align_corners, bool half_pixel_centers) {
    return [=](fb::FlatBufferBuilder& b) {
        const auto start = b.StartTable();
        b.AddElement<uint8_t>(F(2), align_corners, 0);
        b.AddElement<uint8_t>(F(3), half_pixel_centers, 0);
        return fb::Offset<void>(b.EndTable(start));
    };
}

OptionsFn reducer_options(bool keep_dims) {
    return [=](fb::FlatBufferBuilder& b) {
        const auto start = b.StartTable();
        b.AddElement<uint8_t>(F(0), keep_dims, 0);
        return fb::Offset<void>(b.EndTable(start));
    };
}

torch::Tensor nchw(const torch::Tensor& nhwc) { return nhwc.permute({0, 3, 1, 2}); }
torch::Tensor nhwc(const torch::Tensor& nchw) { return nchw.permute({0, 2, 3, 1}); }

void expect_close(const torch::Tensor& got, const torch::Tensor& want, double atol = 1e-5) {
    ASSERT_EQ(got.sizes(), want.sizes());
    const double diff = (got - want).abs().max().item<double>();
    EXPECT_LE(diff, atol) << "largest difference " << diff;
}

// One CONV_2D on `input_shape` (NHWC) with an OHWI filter of `kernel` x `kernel`.
struct ConvCase {
    torch::Tensor x, w, b;
    TfliteGraph graph;
};

ConvCase one_conv(std::vector<int64_t> input_shape, int64_t out_channels, int64_t kernel,
                  int8_t padding, int stride, int8_t activation, int dilation = 1) {
    torch::manual_seed(1);
    torch::Tensor x = torch::randn(input_shape);
    torch::Tensor w = torch::randn({out_channels, kernel, kernel, input_shape[3]});
    torch::Tensor b = torch::randn({out_channels});
    const int64_t eff = (kernel - 1) * dilation + 1;
    auto out = [&](int64_t in) {
        return padding == kSame ? (in + stride - 1) / stride : (in - eff) / stride + 1;
    };
    Net net;
    const int in = net.input("x", input_shape);
    const int wt = net.constant("w", w);
    const int bt = net.constant("b", b);
    const int y = net.output("y", {1, out(input_shape[1]), out(input_shape[2]), out_channels});
    net.op(kConv2d, {in, wt, bt}, {y}, kConv2dOptions,
           conv_options(padding, stride, stride, activation, dilation, dilation));
    return {x, w, b, net.graph()};
}

}  // namespace

TEST(TfliteConv2d, SamePaddingWithStride2OnAnOddSizePadsMoreAfterThanBefore) {
    // H = 8: 4 outputs, 1 padding row (0 before, 1 after); W = 9: 5 outputs, 1 column each side.
    ConvCase c = one_conv({1, 8, 9, 3}, 4, 3, kSame, 2, kNone);
    const auto out = c.graph.run({c.x});
    ASSERT_EQ(out.size(), 1u);
    const torch::Tensor padded = torch::constant_pad_nd(nchw(c.x), {1, 1, 0, 1}, 0.0);
    const torch::Tensor want = torch::conv2d(padded, c.w.permute({0, 3, 1, 2}), c.b, 2);
    expect_close(out[0], nhwc(want));
    EXPECT_EQ(out[0].sizes(), (std::vector<int64_t>{1, 4, 5, 4}));
}

TEST(TfliteConv2d, FiveByFiveStride2SamePaddingOnAnEvenSizeMatchesLibTorch) {
    // The palm model's first layer: 5x5, stride 2 on an even side: 1 before, 2 after.
    ConvCase c = one_conv({1, 10, 12, 3}, 6, 5, kSame, 2, kNone);
    const torch::Tensor padded = torch::constant_pad_nd(nchw(c.x), {1, 2, 1, 2}, 0.0);
    const torch::Tensor want = torch::conv2d(padded, c.w.permute({0, 3, 1, 2}), c.b, 2);
    expect_close(c.graph.run({c.x})[0], nhwc(want));
}

TEST(TfliteConv2d, ValidPaddingWithDilationAndReluMatchesLibTorch) {
    ConvCase c = one_conv({1, 9, 8, 2}, 3, 3, kValid, 1, kRelu, 2);
    const torch::Tensor want =
        torch::relu(torch::conv2d(nchw(c.x), c.w.permute({0, 3, 1, 2}), c.b, torch::IntArrayRef{1},
                                  torch::IntArrayRef{0}, torch::IntArrayRef{2}));
    const torch::Tensor got = c.graph.run({c.x})[0];
    expect_close(got, nhwc(want));
    EXPECT_EQ(got.min().item<float>(), 0.0f);  // the relu did cut something
}

TEST(TfliteDepthwiseConv2d, DepthMultiplierTwoMatchesGroupedConvolutionWithRelu6) {
    torch::manual_seed(2);
    const torch::Tensor x = torch::randn({1, 10, 10, 3}) * 4;
    const torch::Tensor w = torch::randn({1, 5, 5, 6});  // 3 channels x multiplier 2
    const torch::Tensor b = torch::randn({6});
    Net net;
    const int in = net.input("x", {1, 10, 10, 3});
    const int wt = net.constant("w", w);
    const int bt = net.constant("b", b);
    const int y = net.output("y", {1, 5, 5, 6});
    net.op(kDepthwiseConv2d, {in, wt, bt}, {y}, kDepthwiseConv2dOptions,
           depthwise_options(kSame, 2, 2, kRelu6));
    // SAME, 5x5, stride 2 on 10: 1 before, 2 after.
    const torch::Tensor padded = torch::constant_pad_nd(nchw(x), {1, 2, 1, 2}, 0.0);
    const torch::Tensor want =
        torch::conv2d(padded, w.permute({3, 0, 1, 2}), b, torch::IntArrayRef{2},
                      torch::IntArrayRef{0}, torch::IntArrayRef{1}, 3)
            .clamp(0, 6);
    const torch::Tensor got = net.graph().run({x})[0];
    expect_close(got, nhwc(want), 1e-4);
    EXPECT_EQ(got.max().item<float>(), 6.0f);
}

TEST(TfliteAdd, FusedRelu6ClampsTheSumToZeroAndSix) {
    torch::manual_seed(3);
    const torch::Tensor a = torch::randn({1, 4, 4, 3}) * 5;
    const torch::Tensor c = torch::randn({1, 4, 4, 3}) * 5;
    Net net;
    const int x = net.input("a", {1, 4, 4, 3});
    const int y = net.input("c", {1, 4, 4, 3});
    const int z = net.output("z", {1, 4, 4, 3});
    net.op(kAdd, {x, y}, {z}, kAddOptions, activation_options(kRelu6));
    const torch::Tensor got = net.graph().run({a, c})[0];
    expect_close(got, (a + c).clamp(0, 6));
    EXPECT_EQ(got.min().item<float>(), 0.0f);
    EXPECT_EQ(got.max().item<float>(), 6.0f);
}

TEST(TfliteMaxPool2d, SamePaddingOnAnOddSizeNeverPicksThePadding) {
    // All values negative: a zero padding would show up as 0 in the last row and column.
    torch::manual_seed(4);
    const torch::Tensor x = -torch::rand({1, 5, 5, 2}) - 1;
    Net net;
    const int in = net.input("x", {1, 5, 5, 2});
    const int y = net.output("y", {1, 3, 3, 2});
    net.op(kMaxPool2d, {in}, {y}, kPool2dOptions, pool_options(kSame, 2, 2));
    const torch::Tensor padded =
        torch::constant_pad_nd(nchw(x), {0, 1, 0, 1}, -std::numeric_limits<double>::infinity());
    const torch::Tensor got = net.graph().run({x})[0];
    expect_close(got, nhwc(torch::max_pool2d(padded, 2, 2)));
    EXPECT_LT(got.max().item<float>(), -1.0f);
}

TEST(TflitePad, AddsZerosBeforeAndAfterOnEachAxisInTfliteOrder) {
    torch::manual_seed(5);
    const torch::Tensor x = torch::randn({1, 3, 4, 2});
    Net net;
    const int in = net.input("x", {1, 3, 4, 2});
    const int p = net.ints("paddings", {0, 0, 1, 0, 0, 2, 0, 3}, {4, 2});
    const int y = net.output("y", {1, 4, 6, 5});
    net.op(kPad, {in, p}, {y});
    const torch::Tensor got = net.graph().run({x})[0];
    expect_close(got, torch::constant_pad_nd(x, {0, 3, 0, 2, 1, 0}, 0.0));
    EXPECT_EQ(got.index({0, 0}).abs().sum().item<float>(), 0.0f);  // the row added before
}

TEST(TfliteReshape, FlattensNhwcInRowMajorOrderWithAnInferredDimension) {
    const torch::Tensor x = torch::arange(24, torch::kFloat).reshape({1, 2, 3, 4});
    Net net;
    const int in = net.input("x", {1, 2, 3, 4});
    const int s = net.ints("shape", {1, -1, 4}, {3});
    const int y = net.output("y", {1, 6, 4});
    net.op(kReshape, {in, s}, {y});
    const torch::Tensor got = net.graph().run({x})[0];
    EXPECT_TRUE(torch::equal(got, x.reshape({1, 6, 4})));
    EXPECT_EQ(got[0][1][0].item<float>(), 4.0f);  // pixel (0, 1), channel 0
}

TEST(TfliteReshape, TakesTheShapeFromItsOptionsWhenThereIsNoShapeTensor) {
    const torch::Tensor x = torch::arange(12, torch::kFloat).reshape({1, 2, 2, 3});
    Net net;
    const int in = net.input("x", {1, 2, 2, 3});
    const int y = net.output("y", {1, 12});
    net.op(kReshape, {in}, {y}, kReshapeOptions, [](fb::FlatBufferBuilder& b) {
        const auto shape = b.CreateVector(std::vector<int32_t>{1, 12});
        const auto start = b.StartTable();
        b.AddOffset(F(0), shape);
        return fb::Offset<void>(b.EndTable(start));
    });
    EXPECT_TRUE(torch::equal(net.graph().run({x})[0], x.reshape({1, 12})));
}

TEST(TfliteConcatenation, JoinsOnTheChannelAxisGivenAsMinusOne) {
    torch::manual_seed(6);
    const torch::Tensor a = torch::randn({1, 2, 2, 3});
    const torch::Tensor c = torch::randn({1, 2, 2, 5});
    Net net;
    const int x = net.input("a", {1, 2, 2, 3});
    const int y = net.input("c", {1, 2, 2, 5});
    const int z = net.output("z", {1, 2, 2, 8});
    net.op(kConcatenation, {x, y}, {z}, kConcatenationOptions, concatenation_options(-1));
    EXPECT_TRUE(torch::equal(net.graph().run({a, c})[0], torch::cat({a, c}, 3)));
}

namespace {

// RESIZE_BILINEAR of the row 0, 10, 20 (1x1x3x1) to 5 columns.
torch::Tensor resize_row(bool align_corners, bool half_pixel_centers) {
    Net net;
    const int in = net.input("x", {1, 1, 3, 1});
    const int size = net.ints("size", {1, 5}, {2});
    const int y = net.output("y", {1, 1, 5, 1});
    net.op(kResizeBilinear, {in, size}, {y}, kResizeBilinearOptions,
           resize_options(align_corners, half_pixel_centers));
    return net.graph()
        .run({torch::tensor({0.0f, 10.0f, 20.0f}).reshape({1, 1, 3, 1})})[0]
        .flatten();
}

}  // namespace

TEST(TfliteResizeBilinear, AlignCornersMapsCornerToCorner) {
    // Source positions 0, 0.5, 1, 1.5, 2.
    expect_close(resize_row(true, false), torch::tensor({0.0f, 5.0f, 10.0f, 15.0f, 20.0f}));
}

TEST(TfliteResizeBilinear, HalfPixelCentersSamplesAtPixelCentresAndClampsAtTheEdges) {
    // Source positions (i + 0.5) * 0.6 - 0.5: -0.2 (clamped), 0.4, 1, 1.6, 2.2 (clamped).
    expect_close(resize_row(false, true), torch::tensor({0.0f, 4.0f, 10.0f, 16.0f, 20.0f}), 1e-4);
}

TEST(TfliteResizeBilinear, NeitherOptionScalesFromTheTopLeftCorner) {
    // TFLite's legacy mapping: source position i * 0.6: 0, 0.6, 1.2, 1.8, 2.4 (clamped).
    expect_close(resize_row(false, false), torch::tensor({0.0f, 6.0f, 12.0f, 18.0f, 20.0f}), 1e-4);
}

TEST(TfliteResizeBilinear, MatchesLibTorchOnAnImageInBothModesLibTorchHas) {
    torch::manual_seed(7);
    const torch::Tensor x = torch::randn({1, 6, 5, 4});
    for (const bool align : {true, false}) {
        Net net;
        const int in = net.input("x", {1, 6, 5, 4});
        const int size = net.ints("size", {12, 9}, {2});
        const int y = net.output("y", {1, 12, 9, 4});
        net.op(kResizeBilinear, {in, size}, {y}, kResizeBilinearOptions,
               resize_options(align, !align));
        const torch::Tensor want = nhwc(torch::upsample_bilinear2d(
            nchw(x), std::vector<int64_t>{12, 9}, align, c10::nullopt, c10::nullopt));
        SCOPED_TRACE(align ? "align_corners" : "half_pixel_centers");
        expect_close(net.graph().run({x})[0], want, 1e-5);
    }
}

TEST(TflitePrelu, ScalesNegativesByTheirChannelsAlphaAndKeepsPositives) {
    torch::manual_seed(8);
    const torch::Tensor x = torch::randn({1, 3, 3, 4});
    const torch::Tensor alpha = torch::tensor({0.1f, 0.5f, -1.0f, 2.0f}).reshape({1, 1, 4});
    Net net;
    const int in = net.input("x", {1, 3, 3, 4});
    const int a = net.constant("alpha", alpha);
    const int y = net.output("y", {1, 3, 3, 4});
    net.op(kPrelu, {in, a}, {y});
    expect_close(net.graph().run({x})[0], torch::where(x >= 0, x, x * alpha));
}

TEST(TflitePrelu, TakesAnAlphaPerPixelAndChannelToo) {
    torch::manual_seed(12);
    const torch::Tensor x = torch::randn({1, 3, 3, 4});
    const torch::Tensor alpha = torch::randn({3, 3, 4});
    Net net;
    const int in = net.input("x", {1, 3, 3, 4});
    const int a = net.constant("alpha", alpha);
    const int y = net.output("y", {1, 3, 3, 4});
    net.op(kPrelu, {in, a}, {y});
    expect_close(net.graph().run({x})[0], torch::where(x >= 0, x, x * alpha));
}

TEST(TfliteDequantize, Float16WeightsAreWidenedOnceAndFeedTheConvolution) {
    torch::manual_seed(9);
    const torch::Tensor x = torch::randn({1, 5, 5, 2});
    const torch::Tensor w16 = torch::randn({3, 1, 1, 2}).to(torch::kHalf);
    const torch::Tensor b16 = torch::randn({3}).to(torch::kHalf);
    Net net;
    const int in = net.input("x", {1, 5, 5, 2});
    const int wq = net.constant("w16", w16);
    const int bq = net.constant("b16", b16);
    const int w = net.tensor("w", {3, 1, 1, 2});
    const int b = net.tensor("b", {3});
    const int y = net.output("y", {1, 5, 5, 3});
    net.op(kDequantize, {wq}, {w});
    net.op(kDequantize, {bq}, {b});
    net.op(kConv2d, {in, w, b}, {y}, kConv2dOptions, conv_options(kSame, 1, 1, kNone));
    const TfliteGraph g = net.graph();
    const torch::Tensor want =
        torch::conv2d(nchw(x), w16.to(torch::kFloat).permute({0, 3, 1, 2}), b16.to(torch::kFloat));
    expect_close(g.run({x})[0], nhwc(want), 1e-5);
    EXPECT_EQ(g.operators(), (std::vector<std::string>{"CONV_2D", "DEQUANTIZE"}));
}

TEST(TfliteLandmarkHead, MeanThenFullyConnectedThenLogisticMatchesLibTorch) {
    torch::manual_seed(10);
    const torch::Tensor x = torch::randn({1, 3, 3, 8});
    const torch::Tensor w = torch::randn({2, 8});
    const torch::Tensor b = torch::randn({2});
    Net net;
    const int in = net.input("x", {1, 3, 3, 8});
    const int axes = net.ints("axes", {1, 2}, {2});
    const int pooled = net.tensor("pooled", {1, 8});
    const int wt = net.constant("w", w);
    const int bt = net.constant("b", b);
    const int logits = net.tensor("logits", {1, 2});
    const int y = net.output("y", {1, 2});
    net.op(kMean, {in, axes}, {pooled}, kReducerOptions, reducer_options(false));
    net.op(kFullyConnected, {pooled, wt, bt}, {logits}, kFullyConnectedOptions,
           activation_options(kNone));
    net.op(kLogistic, {logits}, {y});
    const torch::Tensor want = torch::sigmoid(torch::linear(x.mean({1, 2}), w, b));
    expect_close(net.graph().run({x})[0], want);
}

TEST(TfliteGraph, RunsTheSameFromSeveralThreadsAtOnce) {
    ConvCase c = one_conv({1, 16, 16, 4}, 8, 3, kSame, 1, kRelu);
    const torch::Tensor want = c.graph.run({c.x})[0];
    std::vector<torch::Tensor> got(4);
    std::vector<std::thread> threads;
    for (size_t i = 0; i < got.size(); ++i)
        threads.emplace_back([&, i] { got[i] = c.graph.run({c.x})[0]; });
    for (auto& t : threads) t.join();
    for (const auto& g : got) EXPECT_TRUE(torch::equal(g, want));
}

TEST(TfliteGraph, ReportsInputsOutputsAndOperatorsAsTheFileHasThem) {
    ConvCase c = one_conv({1, 8, 9, 3}, 4, 3, kSame, 2, kNone);
    ASSERT_EQ(c.graph.inputs().size(), 1u);
    EXPECT_EQ(c.graph.inputs()[0].name, "x");
    EXPECT_EQ(c.graph.inputs()[0].shape, (std::vector<int64_t>{1, 8, 9, 3}));
    ASSERT_EQ(c.graph.outputs().size(), 1u);
    EXPECT_EQ(c.graph.outputs()[0].name, "y");
    EXPECT_EQ(c.graph.outputs()[0].shape, (std::vector<int64_t>{1, 4, 5, 4}));
    EXPECT_EQ(c.graph.operators(), std::vector<std::string>{"CONV_2D"});
}

TEST(TfliteGraph, RefusesAnInputOfTheWrongShape) {
    ConvCase c = one_conv({1, 8, 9, 3}, 4, 3, kSame, 2, kNone);
    EXPECT_THROW(c.graph.run({torch::zeros({1, 9, 8, 3})}), c10::Error);
    EXPECT_THROW(c.graph.run({}), c10::Error);
}

// ---- refusals ------------------------------------------------------------------------------

namespace {

// The message of the boneage::Error that loading `bytes` throws ("" if none).
std::string load_error(const std::string& bytes, boneage::ErrorKind* kind = nullptr) {
    try {
        TfliteGraph::from_bytes(bytes, "model.tflite");
    } catch (const boneage::Error& e) {
        if (kind) *kind = e.kind();
        return e.what();
    }
    return "";
}

Net small_net() {
    Net net;
    const int in = net.input("x", {1, 2, 2, 1});
    const int y = net.output("y", {1, 2, 2, 1});
    net.op(kLogistic, {in}, {y});
    return net;
}

}  // namespace

TEST(TfliteReader, RefusesBytesThatAreNotAFlatbufferNamingTheOriginAndTheReason) {
    // "TFL3" in its place, but the root offset and everything after it are noise.
    std::string bytes = "\xff\xff\xff\x7fTFL3 and then some text that is no table at all";
    boneage::ErrorKind kind{};
    const std::string message = load_error(bytes, &kind);
    EXPECT_EQ(kind, boneage::ErrorKind::BadData);
    EXPECT_NE(message.find("model.tflite: "), std::string::npos) << message;
    EXPECT_NE(message.find("not a valid flatbuffer"), std::string::npos) << message;
}

TEST(TfliteReader, RefusesAFlatbufferWithAnotherIdentifier) {
    const std::string message = load_error(small_net().build("TFL2"));
    EXPECT_NE(message.find("model.tflite: "), std::string::npos) << message;
    EXPECT_NE(message.find("not a TFLite model"), std::string::npos) << message;
    EXPECT_NE(message.find("TFL3"), std::string::npos) << message;
    EXPECT_NE(load_error("TFL3"), "");  // shorter than a header
}

TEST(TfliteReader, RefusesATruncatedFileAtEveryLength) {
    const std::string bytes = small_net().build();
    ASSERT_EQ(load_error(bytes), "");
    for (size_t n = 0; n < bytes.size(); n += 7) {
        const std::string message = load_error(bytes.substr(0, n));
        EXPECT_NE(message.find("model.tflite: "), std::string::npos) << n << ": " << message;
    }
    const std::string message = load_error(bytes.substr(0, bytes.size() * 2 / 3));
    EXPECT_NE(message.find("fails verification"), std::string::npos) << message;
}

TEST(TfliteReader, RefusesAnUnsupportedOperatorNamingItAndWhatIsSupported) {
    Net net;
    const int in = net.input("x", {1, 4});
    const int y = net.output("y", {1, 4});
    net.op(kSoftmax, {in}, {y});
    boneage::ErrorKind kind{};
    const std::string message = load_error(net.build(), &kind);
    EXPECT_EQ(kind, boneage::ErrorKind::BadData);
    EXPECT_NE(message.find("model.tflite: unsupported operator SOFTMAX"), std::string::npos)
        << message;
    EXPECT_NE(message.find("CONV_2D"), std::string::npos) << message;
    EXPECT_NE(message.find("RESIZE_BILINEAR"), std::string::npos) << message;
}

TEST(TfliteReader, RefusesMoreThanOneSubgraph) {
    Net net = small_net();
    net.subgraphs = 2;
    const std::string message = load_error(net.build());
    EXPECT_NE(message.find("model.tflite: 2 subgraphs"), std::string::npos) << message;
}

TEST(TfliteReader, RefusesAnUnsupportedTensorType) {
    Net net;
    const int in = net.input("x", {1, 4});
    net.tensors[in].type = kInt8;
    const int y = net.output("y", {1, 4});
    net.op(kLogistic, {in}, {y});
    const std::string message = load_error(net.build());
    EXPECT_NE(message.find("model.tflite: tensor 'x' is computed in INT8"), std::string::npos)
        << message;
}

TEST(TfliteReader, RefusesOptionsOfAnotherOperator) {
    Net net;
    const int in = net.input("x", {1, 4, 4, 1});
    const int y = net.output("y", {1, 2, 2, 1});
    net.op(kMaxPool2d, {in}, {y}, kConv2dOptions, conv_options(kSame, 2, 2, kNone));
    const std::string message = load_error(net.build());
    EXPECT_NE(message.find("MAX_POOL_2D"), std::string::npos) << message;
    EXPECT_NE(message.find("union type 1, expected 5"), std::string::npos) << message;
}

TEST(TfliteReader, SaysWhenTheFileCannotBeOpened) {
    try {
        TfliteGraph::load("/nonexistent/palm.tflite");
        FAIL() << "no error";
    } catch (const boneage::Error& e) {
        EXPECT_EQ(e.kind(), boneage::ErrorKind::NotFound);
        EXPECT_NE(std::string(e.what()).find("/nonexistent/palm.tflite"), std::string::npos);
    }
}

// ---- MediaPipe's real models -----------------------------------------------------------------

namespace {

// $BONEAGE_MEDIAPIPE_DIR, else ${XDG_CACHE_HOME:-$HOME/.cache}/boneage/mediapipe.
fs::path mediapipe_dir() {
    if (const char* d = std::getenv("BONEAGE_MEDIAPIPE_DIR"); d && *d) return d;
    if (const char* x = std::getenv("XDG_CACHE_HOME"); x && *x)
        return fs::path(x) / "boneage" / "mediapipe";
    const char* home = std::getenv("HOME");
    return fs::path(home ? home : "/nonexistent") / ".cache" / "boneage" / "mediapipe";
}

std::optional<TfliteGraph> real_model(const std::string& file) {
    const fs::path path = mediapipe_dir() / file;
    if (!fs::exists(path)) return std::nullopt;
    return TfliteGraph::load(path);
}

#define REAL_MODEL(var, file)                                                               \
    const std::optional<TfliteGraph> var = real_model(file);                                \
    if (!var)                                                                               \
        GTEST_SKIP() << file << " is not in " << mediapipe_dir()                            \
                     << " (set BONEAGE_MEDIAPIPE_DIR to a folder holding MediaPipe's hand " \
                        "models)";

// A hand drawn with OpenCV, palm towards the viewer, fingers up, on a grey-green background:
// palm centre (cx, cy), palm half-width 32 * scale; slightly blurred and noisy, as a camera
// frame is (the detector ignores perfectly flat shapes). RGB, float32 in [0, 1], NHWC.
torch::Tensor drawn_hand(int size, float cx, float cy, float scale) {
    cv::Mat im(size, size, CV_8UC3, cv::Scalar(100, 110, 90));
    const cv::Scalar skin(225, 170, 140);
    auto at = [&](float x, float y) {
        return cv::Point(static_cast<int>(cx + x * scale), static_cast<int>(cy + y * scale));
    };
    const auto thick = [&](float t) { return std::max(1, static_cast<int>(t * scale)); };
    cv::ellipse(im, at(0, 0), cv::Size(thick(32), thick(38)), 0, 0, 360, skin, -1, cv::LINE_AA);
    const float finger_x[4] = {-24, -8, 8, 24}, finger_length[4] = {50, 60, 56, 44};
    for (int i = 0; i < 4; ++i)
        cv::line(im, at(finger_x[i], -20), at(finger_x[i] * 1.2f, -20 - finger_length[i]), skin,
                 thick(14), cv::LINE_AA);
    cv::line(im, at(-28, 10), at(-58, -20), skin, thick(16), cv::LINE_AA);  // thumb
    cv::rectangle(im, cv::Rect(at(-22, 30), at(22, 90)), skin, -1);         // wrist
    cv::GaussianBlur(im, im, cv::Size(3, 3), 0);
    cv::Mat noise(im.size(), CV_8UC3);
    cv::setRNGSeed(11);
    cv::randn(noise, cv::Scalar::all(0), cv::Scalar::all(6));
    im += noise;
    return torch::from_blob(im.data, {1, size, size, 3}, torch::kUInt8).to(torch::kFloat) / 255.0;
}

struct Palm {
    float score, cx, cy, size;  // sigmoid score; box centre and side in input pixels
};

// The best of the 2016 anchors (24 x 24 x 2 at stride 8, then 12 x 12 x 6 at stride 16, each
// 1 x 1, in row-major cell order), decoded as MediaPipe's TensorsToDetectionsCalculator does
// with a scale of 192.
Palm best_palm(const std::vector<torch::Tensor>& out) {
    const torch::Tensor scores = torch::sigmoid(out[1]).flatten();
    const int64_t a = scores.argmax().item<int64_t>();
    const bool fine = a < 24 * 24 * 2;
    const int64_t cells = fine ? 24 : 12;
    const int64_t cell = fine ? a / 2 : (a - 24 * 24 * 2) / 6;
    const float ax = (cell % cells + 0.5f) / cells, ay = (cell / cells + 0.5f) / cells;
    const torch::Tensor r = out[0][0][a];
    return {scores[a].item<float>(), r[0].item<float>() + ax * 192, r[1].item<float>() + ay * 192,
            r[2].item<float>()};
}

void expect_palm_model(const TfliteGraph& g) {
    ASSERT_EQ(g.inputs().size(), 1u);
    EXPECT_EQ(g.inputs()[0].shape, (std::vector<int64_t>{1, 192, 192, 3}));
    ASSERT_EQ(g.outputs().size(), 2u);
    EXPECT_EQ(g.outputs()[0].shape, (std::vector<int64_t>{1, 2016, 18}));
    EXPECT_EQ(g.outputs()[1].shape, (std::vector<int64_t>{1, 2016, 1}));
    EXPECT_EQ(g.operators(),
              (std::vector<std::string>{"ADD", "CONCATENATION", "CONV_2D", "DEPTHWISE_CONV_2D",
                                        "DEQUANTIZE", "MAX_POOL_2D", "PAD", "PRELU", "RESHAPE",
                                        "RESIZE_BILINEAR"}));
    // A uniform grey frame (the 192 x 192 models take RGB in [0, 1]) holds no palm.
    const auto out = g.run({torch::full({1, 192, 192, 3}, 0.5f)});
    ASSERT_EQ(out.size(), 2u);
    EXPECT_EQ(out[0].sizes(), (std::vector<int64_t>{1, 2016, 18}));
    EXPECT_TRUE(torch::isfinite(out[0]).all().item<bool>());
    EXPECT_TRUE(torch::isfinite(out[1]).all().item<bool>());
    EXPECT_LT(torch::sigmoid(out[1]).max().item<float>(), 0.5f);
    // The same input twice gives the same answer.
    EXPECT_TRUE(torch::equal(g.run({torch::full({1, 192, 192, 3}, 0.5f)})[1], out[1]));
    // A drawn hand is found where it was drawn, with a box that grows with it.
    float last_size = 0;
    for (const float scale : {0.5f, 0.7f, 1.0f}) {
        SCOPED_TRACE(scale);
        const Palm p = best_palm(g.run({drawn_hand(192, 96, 110, scale)}));
        // The lite model is less sure of a drawing (0.44 at scale 1) than the full one (0.9).
        EXPECT_GT(p.score, 0.3f) << "box " << p.cx << ", " << p.cy << " side " << p.size;
        EXPECT_NEAR(p.cx, 96, 12);
        EXPECT_NEAR(p.cy, 110 + 8 * scale, 12);  // the palm box takes in the finger roots
        EXPECT_GT(p.size, 50 * scale);
        EXPECT_LT(p.size, 100 * scale);
        EXPECT_GT(p.size, last_size);
        last_size = p.size;
    }
}

void expect_landmark_model(const TfliteGraph& g) {
    ASSERT_EQ(g.inputs().size(), 1u);
    EXPECT_EQ(g.inputs()[0].shape, (std::vector<int64_t>{1, 224, 224, 3}));
    ASSERT_EQ(g.outputs().size(), 4u);
    EXPECT_EQ(g.outputs()[0].shape, (std::vector<int64_t>{1, 63}));  // 21 landmarks x, y, z
    EXPECT_EQ(g.outputs()[1].shape, (std::vector<int64_t>{1, 1}));   // hand presence
    EXPECT_EQ(g.outputs()[2].shape, (std::vector<int64_t>{1, 1}));   // handedness
    EXPECT_EQ(g.outputs()[3].shape, (std::vector<int64_t>{1, 63}));  // world landmarks
    const auto grey = g.run({torch::full({1, 224, 224, 3}, 0.5f)});
    ASSERT_EQ(grey.size(), 4u);
    for (const auto& t : grey) EXPECT_TRUE(torch::isfinite(t).all().item<bool>());
    // Presence and handedness come out of a LOGISTIC: probabilities; no hand on a grey frame.
    EXPECT_GE(grey[1].item<float>(), 0.0f);
    EXPECT_LT(grey[1].item<float>(), 0.5f);
    EXPECT_GE(grey[2].item<float>(), 0.0f);
    EXPECT_LE(grey[2].item<float>(), 1.0f);
    // On a drawn hand: present, the wrist (landmark 0) low in the wrist band, the middle
    // fingertip (12) high near the middle finger's end, the thumb tip (4) on the thumb's side.
    const auto hand = g.run({drawn_hand(224, 112, 128, 1.15f)});
    EXPECT_GT(hand[1].item<float>(), 0.5f);
    const torch::Tensor l = hand[0].reshape({21, 3});
    const float wrist_x = l[0][0].item<float>(), wrist_y = l[0][1].item<float>();
    const float middle_x = l[12][0].item<float>(), middle_y = l[12][1].item<float>();
    EXPECT_NEAR(wrist_x, 112, 25);
    EXPECT_GT(wrist_y, 150);
    EXPECT_NEAR(middle_x, 112, 25);
    EXPECT_LT(middle_y, 70);
    EXPECT_LT(l[4][0].item<float>(), wrist_x - 30);
}

}  // namespace

TEST(TfliteMediaPipe, PalmDetectionFullLoadsAndRunsToFiniteOutputs) {
    REAL_MODEL(g, "palm_detection_full.tflite");
    expect_palm_model(*g);
}

TEST(TfliteMediaPipe, PalmDetectionLiteLoadsAndRunsToFiniteOutputs) {
    REAL_MODEL(g, "palm_detection_lite.tflite");
    expect_palm_model(*g);
}

TEST(TfliteMediaPipe, HandLandmarkFullLoadsAndRunsToFiniteOutputs) {
    REAL_MODEL(g, "hand_landmark_full.tflite");
    EXPECT_EQ(g->operators(),
              (std::vector<std::string>{"ADD", "CONV_2D", "DEPTHWISE_CONV_2D", "DEQUANTIZE",
                                        "FULLY_CONNECTED", "LOGISTIC", "MEAN"}));
    expect_landmark_model(*g);
}

TEST(TfliteMediaPipe, HandLandmarkLiteLoadsAndRunsToFiniteOutputs) {
    REAL_MODEL(g, "hand_landmark_lite.tflite");
    expect_landmark_model(*g);
}
