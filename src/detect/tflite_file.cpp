// Reads a .tflite flatbuffer with FlatBuffers' generic Table API. The field numbers below are
// those of TFLite's schema.fbs; a field's vtable offset is 4 + 2 * its number. Every table,
// vector and string is verified before it is read: the bytes come from outside.
#include "detect/tflite_file.hpp"

#include <flatbuffers/flatbuffers.h>
#include <fmt/format.h>

#include <algorithm>
#include <array>
#include <boneage/error.hpp>
#include <cstring>
#include <limits>

namespace boneage::detect {

namespace {

using flatbuffers::Table;
using flatbuffers::Vector;
using flatbuffers::voffset_t;

constexpr voffset_t field(int id) { return static_cast<voffset_t>(4 + 2 * id); }

// Field numbers of the tables read here (schema.fbs).
namespace model_f {
constexpr int kVersion = 0, kOperatorCodes = 1, kSubgraphs = 2, kDescription = 3, kBuffers = 4;
}
namespace opcode_f {
constexpr int kDeprecatedBuiltinCode = 0, kCustomCode = 1, kBuiltinCode = 3;
}
namespace subgraph_f {
constexpr int kTensors = 0, kInputs = 1, kOutputs = 2, kOperators = 3;
}
namespace tensor_f {
constexpr int kShape = 0, kType = 1, kBuffer = 2, kName = 3, kQuantization = 4;
}
namespace quant_f {
constexpr int kScale = 2, kZeroPoint = 3, kQuantizedDimension = 6;
}
namespace buffer_f {
constexpr int kData = 0, kOffset = 1, kSize = 2;
}
namespace operator_f {
constexpr int kOpcodeIndex = 0, kInputs = 1, kOutputs = 2, kOptionsType = 3, kOptions = 4;
}

// BuiltinOptions union member numbers (schema.fbs) of the options tables decoded here.
namespace options_t {
constexpr int kNone = 0, kConv2d = 1, kDepthwiseConv2d = 2, kPool2d = 5, kFullyConnected = 8,
              kConcatenation = 10, kAdd = 11, kResizeBilinear = 15, kReshape = 17, kPad = 22,
              kReducer = 27, kDequantize = 38;
}

// Reads fields after verifying them; any failure throws BadData naming the origin.
class Reader {
public:
    Reader(const std::string& bytes, const std::string& origin)
        : base_(reinterpret_cast<const uint8_t*>(bytes.data())),
          size_(bytes.size()),
          origin_(origin),
          verifier_(base_, bytes.size(), opts()) {}

    [[noreturn]] void fail(const std::string& reason) const {
        throw Error(ErrorKind::BadData, origin_, reason);
    }

    const Table* root() {
        if (size_ < 8 || std::memcmp(base_ + 4, "TFL3", 4) != 0)
            fail("not a TFLite model (no \"TFL3\" file identifier at bytes 4..8)");
        const auto offset = verifier_.VerifyOffset(0);
        if (offset == 0) fail("not a valid flatbuffer: the root offset points outside the file");
        return checked(reinterpret_cast<const Table*>(base_ + offset), "the model table");
    }

    const Table* table(const Table* t, int id, const char* what) {
        if (!t->VerifyOffset(verifier_, field(id))) bad(what);
        const Table* sub = t->GetPointer<const Table*>(field(id));
        return sub ? checked(sub, what) : nullptr;
    }

    template <typename T>
    T scalar(const Table* t, int id, T fallback, const char* what) {
        if (!t->VerifyField<T>(verifier_, field(id), sizeof(T))) bad(what);
        return t->GetField<T>(field(id), fallback);
    }

    template <typename T>
    const Vector<T>* vector(const Table* t, int id, const char* what) {
        if (!t->VerifyOffset(verifier_, field(id))) bad(what);
        const auto* v = t->GetPointer<const Vector<T>*>(field(id));
        if (v && !verifier_.VerifyVector(v)) bad(what);
        return v;
    }

    // A vector of tables: the vector, then each element's offset and table.
    std::vector<const Table*> tables(const Table* t, int id, const char* what) {
        std::vector<const Table*> out;
        const auto* v = vector<flatbuffers::uoffset_t>(t, id, what);
        if (!v) return out;
        out.reserve(v->size());
        for (flatbuffers::uoffset_t i = 0; i < v->size(); ++i) {
            const auto* slot = reinterpret_cast<const uint8_t*>(v->Data()) + i * 4;
            const size_t at = static_cast<size_t>(slot - base_);
            const auto offset = verifier_.VerifyOffset(at);
            if (offset == 0) bad(what);
            out.push_back(checked(reinterpret_cast<const Table*>(slot + offset), what));
        }
        return out;
    }

    std::string string(const Table* t, int id, const char* what) {
        if (!t->VerifyOffset(verifier_, field(id))) bad(what);
        const auto* s = t->GetPointer<const flatbuffers::String*>(field(id));
        if (!s) return {};
        if (!verifier_.VerifyString(s)) bad(what);
        return s->str();
    }

    const uint8_t* base() const { return base_; }
    size_t size() const { return size_; }

private:
    static flatbuffers::Verifier::Options opts() {
        flatbuffers::Verifier::Options o;
        o.max_depth = 64;
        o.max_tables = 1000000;
        return o;
    }

    [[noreturn]] void bad(const char* what) const {
        fail(fmt::format("not a valid flatbuffer: {} fails verification (damaged or truncated)",
                         what));
    }

    const Table* checked(const Table* t, const char* what) {
        if (!t->VerifyTableStart(verifier_)) bad(what);
        verifier_.EndTable();
        return t;
    }

    const uint8_t* base_;
    size_t size_;
    std::string origin_;
    flatbuffers::Verifier verifier_;
};

template <typename T>
std::vector<T> to_vector(const Vector<T>* v) {
    if (!v) return {};
    return std::vector<T>(v->begin(), v->end());
}

TfliteActivation activation(Reader& r, const Table* t, int id, const std::string& op) {
    const int8_t a = r.scalar<int8_t>(t, id, 0, "fused_activation_function");
    if (a < 0 || a > 4)
        r.fail(
            fmt::format("{}: fused activation {} is not supported (NONE, RELU, RELU_N1_TO_1, "
                        "RELU6, TANH are)",
                        op, a));
    return static_cast<TfliteActivation>(a);
}

TflitePadding padding(Reader& r, const Table* t, int id, const std::string& op) {
    const int8_t p = r.scalar<int8_t>(t, id, 0, "padding");
    if (p != 0 && p != 1) r.fail(fmt::format("{}: unknown padding {}", op, p));
    return static_cast<TflitePadding>(p);
}

int at_least_one(Reader& r, const Table* t, int id, int fallback, const char* what,
                 const std::string& op) {
    const int v = r.scalar<int32_t>(t, id, fallback, what);
    if (v < 1) r.fail(fmt::format("{}: {} is {}, expected at least 1", op, what, v));
    return v;
}

// The options table each decoded operator expects, or -1 for those read without options.
int expected_options(int code) {
    using namespace tflite_op;
    switch (code) {
        case kConv2d:
            return options_t::kConv2d;
        case kDepthwiseConv2d:
            return options_t::kDepthwiseConv2d;
        case kMaxPool2d:
            return options_t::kPool2d;
        case kFullyConnected:
            return options_t::kFullyConnected;
        case kConcatenation:
            return options_t::kConcatenation;
        case kAdd:
            return options_t::kAdd;
        case kMean:
            return options_t::kReducer;
        case kResizeBilinear:
            return options_t::kResizeBilinear;
        case kReshape:
            return options_t::kReshape;
        case kPad:
            return options_t::kPad;
        case kDequantize:
            return options_t::kDequantize;
        default:
            return -1;
    }
}

TfliteOptions decode_options(Reader& r, const Table* op_table, int code, const std::string& name) {
    using namespace tflite_op;
    TfliteOptions o;
    const int expected = expected_options(code);
    if (expected < 0) return o;
    const int type =
        r.scalar<uint8_t>(op_table, operator_f::kOptionsType, 0, "builtin_options_type");
    const Table* t = r.table(op_table, operator_f::kOptions, "builtin_options");
    // Options tables without fields (PAD, DEQUANTIZE) and RESHAPE's may be left out.
    const bool optional = code == kPad || code == kDequantize || code == kReshape;
    if (type == options_t::kNone && !t && optional) return o;
    if (type != expected || !t)
        r.fail(
            fmt::format("{}: builtin options of union type {}, expected {}", name, type, expected));
    switch (code) {
        case kConv2d:
            o.padding = padding(r, t, 0, name);
            o.stride_w = at_least_one(r, t, 1, 0, "stride_w", name);
            o.stride_h = at_least_one(r, t, 2, 0, "stride_h", name);
            o.activation = activation(r, t, 3, name);
            o.dilation_w = at_least_one(r, t, 4, 1, "dilation_w_factor", name);
            o.dilation_h = at_least_one(r, t, 5, 1, "dilation_h_factor", name);
            break;
        case kDepthwiseConv2d:
            o.padding = padding(r, t, 0, name);
            o.stride_w = at_least_one(r, t, 1, 0, "stride_w", name);
            o.stride_h = at_least_one(r, t, 2, 0, "stride_h", name);
            // 0 in old files means "work it out from the shapes"; the executor does.
            o.depth_multiplier = r.scalar<int32_t>(t, 3, 0, "depth_multiplier");
            if (o.depth_multiplier < 0)
                r.fail(fmt::format("{}: depth_multiplier is {}", name, o.depth_multiplier));
            o.activation = activation(r, t, 4, name);
            o.dilation_w = at_least_one(r, t, 5, 1, "dilation_w_factor", name);
            o.dilation_h = at_least_one(r, t, 6, 1, "dilation_h_factor", name);
            break;
        case kMaxPool2d:
            o.padding = padding(r, t, 0, name);
            o.stride_w = at_least_one(r, t, 1, 0, "stride_w", name);
            o.stride_h = at_least_one(r, t, 2, 0, "stride_h", name);
            o.filter_w = at_least_one(r, t, 3, 0, "filter_width", name);
            o.filter_h = at_least_one(r, t, 4, 0, "filter_height", name);
            o.activation = activation(r, t, 5, name);
            break;
        case kFullyConnected:
            o.activation = activation(r, t, 0, name);
            o.weights_format = r.scalar<int8_t>(t, 1, 0, "weights_format");
            o.keep_num_dims = r.scalar<uint8_t>(t, 2, 0, "keep_num_dims") != 0;
            break;
        case kConcatenation:
            o.axis = r.scalar<int32_t>(t, 0, 0, "axis");
            o.activation = activation(r, t, 1, name);
            break;
        case kAdd:
            o.activation = activation(r, t, 0, name);
            break;
        case kMean:
            o.keep_dims = r.scalar<uint8_t>(t, 0, 0, "keep_dims") != 0;
            break;
        case kResizeBilinear:
            o.align_corners = r.scalar<uint8_t>(t, 2, 0, "align_corners") != 0;
            o.half_pixel_centers = r.scalar<uint8_t>(t, 3, 0, "half_pixel_centers") != 0;
            break;
        case kReshape:
            if (t) {
                const auto* v = r.vector<int32_t>(t, 0, "new_shape");
                o.has_new_shape = v != nullptr;
                if (v) o.new_shape.assign(v->begin(), v->end());
            }
            break;
        default:
            break;
    }
    return o;
}

}  // namespace

std::string tflite_operator_name(int code) {
    // BuiltinOperator in schema.fbs, in order from ADD = 0.
    static constexpr std::array<const char*, 118> kNames = {"ADD",
                                                            "AVERAGE_POOL_2D",
                                                            "CONCATENATION",
                                                            "CONV_2D",
                                                            "DEPTHWISE_CONV_2D",
                                                            "DEPTH_TO_SPACE",
                                                            "DEQUANTIZE",
                                                            "EMBEDDING_LOOKUP",
                                                            "FLOOR",
                                                            "FULLY_CONNECTED",
                                                            "HASHTABLE_LOOKUP",
                                                            "L2_NORMALIZATION",
                                                            "L2_POOL_2D",
                                                            "LOCAL_RESPONSE_NORMALIZATION",
                                                            "LOGISTIC",
                                                            "LSH_PROJECTION",
                                                            "LSTM",
                                                            "MAX_POOL_2D",
                                                            "MUL",
                                                            "RELU",
                                                            "RELU_N1_TO_1",
                                                            "RELU6",
                                                            "RESHAPE",
                                                            "RESIZE_BILINEAR",
                                                            "RNN",
                                                            "SOFTMAX",
                                                            "SPACE_TO_DEPTH",
                                                            "SVDF",
                                                            "TANH",
                                                            "CONCAT_EMBEDDINGS",
                                                            "SKIP_GRAM",
                                                            "CALL",
                                                            "CUSTOM",
                                                            "EMBEDDING_LOOKUP_SPARSE",
                                                            "PAD",
                                                            "UNIDIRECTIONAL_SEQUENCE_RNN",
                                                            "GATHER",
                                                            "BATCH_TO_SPACE_ND",
                                                            "SPACE_TO_BATCH_ND",
                                                            "TRANSPOSE",
                                                            "MEAN",
                                                            "SUB",
                                                            "DIV",
                                                            "SQUEEZE",
                                                            "UNIDIRECTIONAL_SEQUENCE_LSTM",
                                                            "STRIDED_SLICE",
                                                            "BIDIRECTIONAL_SEQUENCE_RNN",
                                                            "EXP",
                                                            "TOPK_V2",
                                                            "SPLIT",
                                                            "LOG_SOFTMAX",
                                                            "DELEGATE",
                                                            "BIDIRECTIONAL_SEQUENCE_LSTM",
                                                            "CAST",
                                                            "PRELU",
                                                            "MAXIMUM",
                                                            "ARG_MAX",
                                                            "MINIMUM",
                                                            "LESS",
                                                            "NEG",
                                                            "PADV2",
                                                            "GREATER",
                                                            "GREATER_EQUAL",
                                                            "LESS_EQUAL",
                                                            "SELECT",
                                                            "SLICE",
                                                            "SIN",
                                                            "TRANSPOSE_CONV",
                                                            "SPARSE_TO_DENSE",
                                                            "TILE",
                                                            "EXPAND_DIMS",
                                                            "EQUAL",
                                                            "NOT_EQUAL",
                                                            "LOG",
                                                            "SUM",
                                                            "SQRT",
                                                            "RSQRT",
                                                            "SHAPE",
                                                            "POW",
                                                            "ARG_MIN",
                                                            "FAKE_QUANT",
                                                            "REDUCE_PROD",
                                                            "REDUCE_MAX",
                                                            "PACK",
                                                            "LOGICAL_OR",
                                                            "ONE_HOT",
                                                            "LOGICAL_AND",
                                                            "LOGICAL_NOT",
                                                            "UNPACK",
                                                            "REDUCE_MIN",
                                                            "FLOOR_DIV",
                                                            "REDUCE_ANY",
                                                            "SQUARE",
                                                            "ZEROS_LIKE",
                                                            "FILL",
                                                            "FLOOR_MOD",
                                                            "RANGE",
                                                            "RESIZE_NEAREST_NEIGHBOR",
                                                            "LEAKY_RELU",
                                                            "SQUARED_DIFFERENCE",
                                                            "MIRROR_PAD",
                                                            "ABS",
                                                            "SPLIT_V",
                                                            "UNIQUE",
                                                            "CEIL",
                                                            "REVERSE_V2",
                                                            "ADD_N",
                                                            "GATHER_ND",
                                                            "COS",
                                                            "WHERE",
                                                            "RANK",
                                                            "ELU",
                                                            "REVERSE_SEQUENCE",
                                                            "MATRIX_DIAG",
                                                            "QUANTIZE",
                                                            "MATRIX_SET_DIAG",
                                                            "ROUND",
                                                            "HARD_SWISH"};
    if (code >= 0 && code < static_cast<int>(kNames.size())) return kNames[code];
    return fmt::format("BUILTIN_{}", code);
}

std::string tflite_type_name(int code) {
    static constexpr std::array<const char*, 11> kNames = {
        "FLOAT32", "FLOAT16", "INT32",     "UINT8", "INT64",  "STRING",
        "BOOL",    "INT16",   "COMPLEX64", "INT8",  "FLOAT64"};
    if (code >= 0 && code < static_cast<int>(kNames.size())) return kNames[code];
    return fmt::format("TYPE_{}", code);
}

TfliteModel parse_tflite(const std::string& bytes, const std::string& origin) {
    Reader r(bytes, origin);
    const Table* model = r.root();
    TfliteModel m;
    m.origin = origin;
    m.version = r.scalar<uint32_t>(model, model_f::kVersion, 0, "model version");
    m.description = r.string(model, model_f::kDescription, "model description");

    // Operator codes: names, with the larger of the two code fields (schema.fbs keeps the old
    // int8 field for codes below 127 and the int32 one for all).
    std::vector<std::pair<int, std::string>> codes;
    for (const Table* oc : r.tables(model, model_f::kOperatorCodes, "operator_codes")) {
        const int old_code =
            r.scalar<int8_t>(oc, opcode_f::kDeprecatedBuiltinCode, 0, "deprecated_builtin_code");
        const int new_code = r.scalar<int32_t>(oc, opcode_f::kBuiltinCode, 0, "builtin_code");
        const int code = std::max(old_code, new_code);
        std::string name = tflite_operator_name(code);
        if (name == "CUSTOM") name += ":" + r.string(oc, opcode_f::kCustomCode, "custom_code");
        codes.emplace_back(code, std::move(name));
    }

    // Buffers: bytes inside the flatbuffer, or (large models) at an offset in the file.
    std::vector<std::string> buffers;
    for (const Table* b : r.tables(model, model_f::kBuffers, "buffers")) {
        const auto* data = r.vector<uint8_t>(b, buffer_f::kData, "buffer data");
        const uint64_t offset = r.scalar<uint64_t>(b, buffer_f::kOffset, 0, "buffer offset");
        const uint64_t size = r.scalar<uint64_t>(b, buffer_f::kSize, 0, "buffer size");
        if (data && data->size() > 0) {
            buffers.emplace_back(reinterpret_cast<const char*>(data->data()), data->size());
        } else if (offset > 1) {
            if (offset > r.size() || size > r.size() - offset)
                r.fail(
                    fmt::format("a buffer at offset {} of {} bytes runs past the end of the "
                                "file ({} bytes): truncated",
                                offset, size, r.size()));
            buffers.emplace_back(reinterpret_cast<const char*>(r.base() + offset), size);
        } else {
            buffers.emplace_back();
        }
    }

    const auto subgraphs = r.tables(model, model_f::kSubgraphs, "subgraphs");
    if (subgraphs.size() != 1)
        r.fail(fmt::format("{} subgraphs; only models with exactly one are supported",
                           subgraphs.size()));
    const Table* sg = subgraphs[0];

    for (const Table* t : r.tables(sg, subgraph_f::kTensors, "tensors")) {
        TfliteTensor tensor;
        tensor.name = r.string(t, tensor_f::kName, "tensor name");
        for (int32_t d : to_vector(r.vector<int32_t>(t, tensor_f::kShape, "tensor shape"))) {
            if (d < -1) r.fail(fmt::format("tensor '{}' has a dimension of {}", tensor.name, d));
            tensor.shape.push_back(d);
        }
        tensor.type = r.scalar<int8_t>(t, tensor_f::kType, 0, "tensor type");
        const uint32_t buffer = r.scalar<uint32_t>(t, tensor_f::kBuffer, 0, "tensor buffer");
        if (buffer >= buffers.size() && !(buffer == 0 && buffers.empty()))
            r.fail(fmt::format("tensor '{}' refers to buffer {} of {}", tensor.name, buffer,
                               buffers.size()));
        if (!buffers.empty() && !buffers[buffer].empty()) {
            tensor.constant = true;
            tensor.data = buffers[buffer];
        }
        if (const Table* q = r.table(t, tensor_f::kQuantization, "quantization")) {
            tensor.scale = to_vector(r.vector<float>(q, quant_f::kScale, "quantization scale"));
            tensor.zero_point =
                to_vector(r.vector<int64_t>(q, quant_f::kZeroPoint, "quantization zero_point"));
            tensor.quantized_dimension =
                r.scalar<int32_t>(q, quant_f::kQuantizedDimension, 0, "quantized_dimension");
        }
        m.tensors.push_back(std::move(tensor));
    }
    const int n_tensors = static_cast<int>(m.tensors.size());
    auto indices = [&](const Vector<int32_t>* v, bool optional, const std::string& what) {
        std::vector<int> out;
        for (int32_t i : to_vector(v)) {
            if (i >= n_tensors || i < (optional ? -1 : 0))
                r.fail(fmt::format("{} refers to tensor {} of {}", what, i, n_tensors));
            out.push_back(i);
        }
        return out;
    };
    m.inputs = indices(r.vector<int32_t>(sg, subgraph_f::kInputs, "subgraph inputs"), false,
                       "the graph's inputs");
    m.outputs = indices(r.vector<int32_t>(sg, subgraph_f::kOutputs, "subgraph outputs"), false,
                        "the graph's outputs");

    int index = 0;
    for (const Table* t : r.tables(sg, subgraph_f::kOperators, "operators")) {
        TfliteOperator op;
        const uint32_t opcode = r.scalar<uint32_t>(t, operator_f::kOpcodeIndex, 0, "opcode_index");
        if (opcode >= codes.size())
            r.fail(fmt::format("operator {} refers to operator code {} of {}", index, opcode,
                               codes.size()));
        op.code = codes[opcode].first;
        op.name = codes[opcode].second;
        const std::string what = fmt::format("operator {} ({})", index, op.name);
        op.inputs =
            indices(r.vector<int32_t>(t, operator_f::kInputs, "operator inputs"), true, what);
        op.outputs =
            indices(r.vector<int32_t>(t, operator_f::kOutputs, "operator outputs"), false, what);
        op.options = decode_options(r, t, op.code, what);
        m.operators.push_back(std::move(op));
        ++index;
    }
    return m;
}

}  // namespace boneage::detect
