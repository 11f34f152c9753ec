// A TensorFlow Lite model file (.tflite, a FlatBuffer with the identifier "TFL3") read into
// plain structs: tensors with their name, shape, type and constant bytes, and operators with
// their builtin code, inputs, outputs and decoded options. No TFLite runtime and no generated
// code: the few tables and fields these files use are described here by their field numbers in
// TFLite's published schema (tensorflow/lite/schema/schema.fbs), read with FlatBuffers' generic
// Table API, and every table, vector and string is checked with flatbuffers::Verifier first.
//
//   TfliteModel m = parse_tflite(bytes, "palm_detection_full.tflite");
//   for (const TfliteOperator& op : m.operators) std::cout << op.name << "\n";  // "CONV_2D" ...
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace boneage::detect {

// TFLite's TensorType codes (schema.fbs), the ones these models use and a few neighbours.
enum class TfliteType : int {
    Float32 = 0,
    Float16 = 1,
    Int32 = 2,
    UInt8 = 3,
    Int64 = 4,
    String = 5,
    Bool = 6,
    Int16 = 7,
    Complex64 = 8,
    Int8 = 9,
    Float64 = 10,
};

// TFLite's BuiltinOperator codes for the operators the executor runs (schema.fbs): exactly
// those MediaPipe's palm detection and hand landmark models (full and lite) use.
namespace tflite_op {
constexpr int kAdd = 0;
constexpr int kConcatenation = 2;
constexpr int kConv2d = 3;
constexpr int kDepthwiseConv2d = 4;
constexpr int kDequantize = 6;
constexpr int kFullyConnected = 9;
constexpr int kLogistic = 14;
constexpr int kMaxPool2d = 17;
constexpr int kReshape = 22;
constexpr int kResizeBilinear = 23;
constexpr int kPad = 34;
constexpr int kMean = 40;
constexpr int kPrelu = 54;
}  // namespace tflite_op

// Fused activation (ActivationFunctionType in schema.fbs; SIGN_BIT = 5 is refused).
enum class TfliteActivation { None = 0, Relu = 1, ReluN1To1 = 2, Relu6 = 3, Tanh = 4 };
// Padding of convolutions and pools (Padding in schema.fbs).
enum class TflitePadding { Same = 0, Valid = 1 };

// The options of one operator, decoded from its builtin_options table; each operator reads
// only the fields its options table has, the others keep these defaults.
struct TfliteOptions {
    TflitePadding padding = TflitePadding::Same;  // CONV_2D, DEPTHWISE_CONV_2D, MAX_POOL_2D
    int stride_w = 1, stride_h = 1;               // the same
    int dilation_w = 1, dilation_h = 1;           // CONV_2D, DEPTHWISE_CONV_2D
    int depth_multiplier = 1;                     // DEPTHWISE_CONV_2D
    int filter_w = 1, filter_h = 1;               // MAX_POOL_2D
    TfliteActivation activation = TfliteActivation::None;  // wherever the table has one
    int axis = 0;                                          // CONCATENATION (may be negative)
    bool align_corners = false;                            // RESIZE_BILINEAR
    bool half_pixel_centers = false;                       // RESIZE_BILINEAR
    bool keep_num_dims = false;                            // FULLY_CONNECTED
    bool keep_dims = false;                                // MEAN
    int weights_format = 0;                                // FULLY_CONNECTED (0 = DEFAULT)
    bool has_new_shape = false;                            // RESHAPE: whether new_shape was given
    std::vector<int64_t> new_shape;                        // RESHAPE
};

struct TfliteTensor {
    std::string name;
    std::vector<int64_t> shape;
    int type = 0;              // TfliteType's code, as the file says
    bool constant = false;     // has a non-empty buffer (weights, shapes, paddings)
    std::string data;          // the buffer's bytes (little-endian, as in the file) when constant
    std::vector<float> scale;  // quantization scales, when present
    std::vector<int64_t> zero_point;  // quantization zero points, when present
    int quantized_dimension = 0;
};

struct TfliteOperator {
    int code = 0;             // BuiltinOperator (the larger of builtin_code and the deprecated one)
    std::string name;         // "CONV_2D", or "CUSTOM:<custom_code>", or "BUILTIN_<code>"
    std::vector<int> inputs;  // tensor indices; -1 for an absent optional input
    std::vector<int> outputs;
    TfliteOptions options;
};

struct TfliteModel {
    std::string origin;    // the file name (or what the caller called the bytes)
    uint32_t version = 0;  // the schema version (3 for current files)
    std::string description;
    std::vector<TfliteTensor> tensors;
    std::vector<int> inputs;  // the subgraph's input tensor indices
    std::vector<int> outputs;
    std::vector<TfliteOperator> operators;  // in execution order
};

// Decodes a .tflite flatbuffer. Throws boneage::Error (BadData) naming `origin` and the reason:
// not a TFLite file (no "TFL3" at bytes 4..8), a flatbuffer that fails verification, not exactly
// one subgraph, a tensor or operator index out of range, options of the wrong table type for
// their operator, an option out of range (stride, dilation or filter below 1, an unknown
// padding or activation). Operators and tensor types it does not run are read, not refused:
// the executor (TfliteGraph) says what it supports.
TfliteModel parse_tflite(const std::string& bytes, const std::string& origin);

// "CONV_2D" for 3 and so on, over the whole BuiltinOperator list of schema.fbs up to
// HARD_SWISH (117); "BUILTIN_<code>" beyond it.
std::string tflite_operator_name(int code);
// "FLOAT32" for 0 and so on; "TYPE_<code>" for codes it does not know.
std::string tflite_type_name(int code);

}  // namespace boneage::detect
