// The model file: a fixed header, the metadata as JSON, then the weights as a LibTorch
// archive (every parameter and buffer under its dotted name), so a file is one self-describing
// unit that prediction can trust or reject with a clear reason. Parameters are float32 or, in
// a file half the size, float16, or in a quarter, int8 with per-channel scales (the metadata's
// weights_dtype); buffers are always float32, since batch-norm variances lose too much in half
// precision.
#include <fmt/format.h>
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <boneage/build_info.hpp>
#include <boneage/durable_file.hpp>
#include <boneage/error.hpp>
#include <boneage/model.hpp>
#include <boneage/sha256.hpp>
#include <cerrno>
#include <cmath>
#include <cstring>
#include <future>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <random>
#include <set>
#include <sstream>
#include <utility>
#include <vector>

#include "models/head.hpp"

namespace boneage {
namespace {

namespace fs = std::filesystem;

constexpr std::array<char, 16> kMagic = {'B', 'O', 'N', 'E', 'A', 'G',  'E',  '-',
                                         'M', 'O', 'D', 'E', 'L', '\0', '\0', '\0'};
constexpr std::size_t kHeaderSize = kMagic.size() + sizeof(std::uint32_t) + sizeof(std::uint64_t);

// Integers are stored little-endian whatever the host.
template <typename T>
void put_le(std::string& out, T value) {
    for (std::size_t i = 0; i < sizeof(T); ++i)
        out.push_back(static_cast<char>((value >> (8 * i)) & 0xff));
}

template <typename T>
T get_le(const char* p) {
    T value = 0;
    for (std::size_t i = 0; i < sizeof(T); ++i)
        value |= static_cast<T>(static_cast<unsigned char>(p[i])) << (8 * i);
    return value;
}

nlohmann::json metadata_json(const BoneAgeNet& net, const ModelMetadata& meta,
                             const std::string& model_version) {
    nlohmann::json j;
    // The net's own configuration is what its weights fit, so it is the one recorded.
    j["config"] = net->config();
    j["preprocess"] = meta.preprocess;
    j["training"] = meta.training;
    j["validation"] = meta.validation;
    j["weights_dtype"] = meta.weights_dtype;
    // Only when set, so that a model without it is written exactly as before the key existed.
    if (meta.views != 1) j["views"] = meta.views;
    // What the numbers mean, beside how they are laid out: the preprocessing the weights expect,
    // which weights these are, and the build that wrote them.
    j["preprocess_version"] = meta.preprocess_version;
    j["model_version"] = model_version;
    j["build_commit"] = build_commit();
    return j;
}

// ModelMetadata::model_version of weights whose stored archive has the digest `weights_sha256`.
std::string model_version_of(const std::string& arch, const std::string& weights_sha256) {
    return arch + "-" + weights_sha256.substr(0, 12);
}

[[noreturn]] void bad(const fs::path& file, const std::string& reason) {
    throw Error(ErrorKind::BadModel, file, reason);
}

// How a file stores its floating-point parameters (the metadata's weights_dtype): "float32";
// "float16", half the size; or "int8", a quarter: every weight of a convolution or dense layer
// as int8 with one float32 scale per output channel (its largest magnitude / 127), the
// vectors (biases, batch-norm affines) as float16.
enum class WeightsDtype { Float32, Float16, Int8 };

WeightsDtype weights_dtype(const fs::path& file, const std::string& name) {
    if (name == "float32") return WeightsDtype::Float32;
    if (name == "float16") return WeightsDtype::Float16;
    if (name == "int8") return WeightsDtype::Int8;
    bad(file, fmt::format("unknown weights dtype '{}' (expected float32, float16 or int8)", name));
}

// An int8 parameter's scales are stored under its name and this suffix.
const std::string kScaleSuffix = ".int8_scale";

bool quantized(WeightsDtype dtype, const torch::Tensor& parameter) {
    return dtype == WeightsDtype::Int8 && parameter.is_floating_point() && parameter.dim() >= 2;
}

// The type a parameter is stored in; integer parameters (none today) as they are.
torch::ScalarType stored_type(WeightsDtype dtype, const torch::Tensor& parameter) {
    if (!parameter.is_floating_point()) return parameter.scalar_type();
    if (dtype == WeightsDtype::Float32) return torch::kFloat32;
    return quantized(dtype, parameter) ? torch::kInt8 : torch::kFloat16;
}

// A tensor on the CPU and, when floating point, as float32, so a file does not depend on
// the device or precision that trained it. The parameters of a float16 file are then halved.
torch::Tensor portable(const torch::Tensor& t) {
    const torch::Tensor cpu = t.detach().cpu();
    return cpu.is_floating_point() ? cpu.to(torch::kFloat32) : cpu;
}

// Float16 holds magnitudes up to 65504; a parameter beyond that would be stored as infinity.
constexpr double kFloat16Max = 65504.0;

// Symmetric int8 with one scale per output channel (dimension 0), so a channel of small
// weights keeps its resolution beside one of large ones.
std::pair<torch::Tensor, torch::Tensor> quantize_int8(const torch::Tensor& w) {
    const torch::Tensor amax = w.abs().reshape({w.size(0), -1}).amax(1);
    const torch::Tensor scale = torch::where(amax > 0, amax / 127.0, torch::ones_like(amax));
    std::vector<std::int64_t> shape(static_cast<std::size_t>(w.dim()), 1);
    shape[0] = w.size(0);
    const torch::Tensor q = (w / scale.reshape(shape)).round().clamp(-127, 127).to(torch::kInt8);
    return {q, scale};
}

torch::Tensor dequantize_int8(const torch::Tensor& q, const torch::Tensor& scale) {
    std::vector<std::int64_t> shape(static_cast<std::size_t>(q.dim()), 1);
    shape[0] = q.size(0);
    return q.to(torch::kFloat32) * scale.reshape(shape);
}

void write_weights(const fs::path& file, const BoneAgeNet& net, WeightsDtype dtype,
                   std::ostream& out) {
    torch::serialize::OutputArchive archive;
    for (const auto& p : net->named_parameters()) {
        torch::Tensor t = portable(p.value());
        if (quantized(dtype, t)) {
            auto [q, scale] = quantize_int8(t);
            archive.write(p.key(), q);
            archive.write(p.key() + kScaleSuffix, scale);
            continue;
        }
        const torch::ScalarType type = stored_type(dtype, t);
        if (t.is_floating_point() && type == torch::kFloat16) {
            if (t.numel() > 0 && t.abs().max().item<double>() > kFloat16Max)
                bad(file, fmt::format("parameter '{}' is too large for float16", p.key()));
            t = t.to(type);
        }
        archive.write(p.key(), t);
    }
    for (const auto& b : net->named_buffers())
        archive.write(b.key(), portable(b.value()), /*is_buffer=*/true);
    archive.save_to(out);
}

// An open model file, mapped read-only: the header, the metadata, the digest and the weights
// are all read from the one mapping, so the file is read once (by the page cache) and never
// copied whole. A model file is replaced by renaming a new one over it (save_model), never
// rewritten in place, so the mapped bytes stay what was opened.
class ModelReader {
public:
    explicit ModelReader(const fs::path& file) : file_(file) {
        std::error_code ec;
        if (!fs::is_regular_file(file, ec)) bad(file, "no such model file");
        const int fd = ::open(file.c_str(), O_RDONLY | O_CLOEXEC);
        struct stat st {};
        if (fd < 0 || ::fstat(fd, &st) != 0) {
            if (fd >= 0) ::close(fd);
            bad(file, "cannot open the model file");
        }
        size_ = static_cast<std::uint64_t>(st.st_size);
        if (size_ > 0) {
            // Populated now: the digest reads every byte anyway, in one pass of the kernel
            // instead of a page fault per 4 KB.
            void* p = ::mmap(nullptr, size_, PROT_READ, MAP_PRIVATE | MAP_POPULATE, fd, 0);
            if (p == MAP_FAILED) {
                ::close(fd);
                bad(file, fmt::format("cannot map the model file: {}", std::strerror(errno)));
            }
            data_ = static_cast<const char*>(p);
        }
        ::close(fd);
    }
    ~ModelReader() {
        if (data_) ::munmap(const_cast<char*>(data_), size_);
    }
    ModelReader(const ModelReader&) = delete;
    ModelReader& operator=(const ModelReader&) = delete;

    std::uint64_t size() const { return size_; }
    // The mapped file from `offset` on (null for an empty file).
    const char* data(std::uint64_t offset = 0) const { return data_ ? data_ + offset : nullptr; }

    // `count` bytes at `offset`, or fewer where the file ends (which the callers report as
    // truncation).
    std::string bytes(std::uint64_t offset, std::uint64_t count) const {
        if (offset >= size_) return {};
        return std::string(data_ + offset, static_cast<std::size_t>(std::min(count, size_ - offset)));
    }

private:
    fs::path file_;
    std::uint64_t size_ = 0;
    const char* data_ = nullptr;
};

// The metadata's schema. Every key today's files carry is required (a missing one read as its
// default would change what the net computes without a word), and every number has bounds no
// trained model comes near, so a damaged or hand-edited file is refused here, naming the
// field, before any of its numbers sizes an allocation.
constexpr std::int64_t kMinInputSize = 32;    // training's own minimum
constexpr std::int64_t kMaxInputSize = 1024;  // 10x the pixels of the paper's 320
constexpr double kMaxLabelMonths = 1200.0;    // label offset and scale, months: a century
constexpr std::size_t kMaxMembers = 16;
const std::vector<std::string> kArchs = {"shallow", "resnet18", "resnet50", "inceptionv4"};
const std::vector<std::string> kDtypes = {"float32", "float16", "int8"};

// A value as a refusal quotes it: short, and on one line.
std::string quoted(const nlohmann::json& value) {
    std::string text = value.dump();
    return text.size() <= 40 ? text : text.substr(0, 37) + "...";
}

std::string listed(const std::vector<std::string>& words) {
    std::string out;
    for (std::size_t i = 0; i < words.size(); ++i)
        out += (i == 0 ? "" : i + 1 == words.size() ? " or " : ", ") + words[i];
    return out;
}

// One value of the metadata with its dotted name ("config.members[1].input_size"), which
// every refusal about it quotes.
struct Field {
    const fs::path& file;
    const nlohmann::json& value;
    std::string name;

    [[noreturn]] void refuse(const std::string& expected) const {
        bad(file, fmt::format("{} must be {}, got {}", name, expected, quoted(value)));
    }
};

std::string child_name(const std::string& parent, const std::string& key) {
    return parent.empty() ? key : parent + "." + key;
}

// The key of an object, or nothing when the key is absent.
std::optional<Field> optional_key(const Field& object, const std::string& key) {
    const auto it = object.value.find(key);
    if (it == object.value.end()) return std::nullopt;
    return Field{object.file, *it, child_name(object.name, key)};
}

Field required_key(const Field& object, const std::string& key) {
    std::optional<Field> f = optional_key(object, key);
    if (!f) bad(object.file, fmt::format("{} is missing", child_name(object.name, key)));
    return *f;
}

const Field& object(const Field& f) {
    if (!f.value.is_object()) f.refuse("an object");
    return f;
}

std::int64_t whole_number(const Field& f, std::int64_t low, std::int64_t high) {
    const std::string expected = fmt::format("a whole number in [{}, {}]", low, high);
    if (!f.value.is_number_integer()) f.refuse(expected);
    // An unsigned value past int64's range reads as negative; either way it is out of bounds.
    const bool huge = f.value.is_number_unsigned() &&
                      f.value.get<std::uint64_t>() > static_cast<std::uint64_t>(high);
    const auto v = f.value.get<std::int64_t>();
    if (huge || v < low || v > high) f.refuse(expected);
    return v;
}

// A finite number in [low, high], or in (low, high] when `low_open`.
double number(const Field& f, double low, double high, bool low_open = false) {
    const std::string expected =
        fmt::format("a number in {}{}, {}]", low_open ? "(" : "[", low, high);
    if (!f.value.is_number()) f.refuse(expected);
    const double v = f.value.get<double>();
    if (!std::isfinite(v) || v < low || (low_open && v == low) || v > high) f.refuse(expected);
    return v;
}

bool boolean(const Field& f) {
    if (!f.value.is_boolean()) f.refuse("true or false");
    return f.value.get<bool>();
}

std::string word(const Field& f, const std::vector<std::string>& allowed) {
    const std::string expected = allowed.size() == 1   ? "\"" + allowed.front() + "\""
                                 : allowed.size() == 2 ? listed(allowed)
                                                       : "one of " + listed(allowed);
    if (!f.value.is_string()) f.refuse(expected);
    const std::string v = f.value.get<std::string>();
    if (std::find(allowed.begin(), allowed.end(), v) == allowed.end()) f.refuse(expected);
    return v;
}

// A ModelConfig as to_json writes it; an ensemble's members each as a model of its own.
void check_config(const Field& config, bool member) {
    object(config);
    std::vector<std::string> archs = kArchs;
    if (!member) archs.push_back("ensemble");
    const bool ensemble = word(required_key(config, "arch"), archs) == "ensemble";
    word(required_key(config, "head"),
         ensemble ? std::vector<std::string>{"mean"} : std::vector<std::string>{"flatten", "gap"});
    boolean(required_key(config, "use_sex"));
    whole_number(required_key(config, "input_size"), kMinInputSize, kMaxInputSize);
    number(required_key(config, "label_offset"), -kMaxLabelMonths, kMaxLabelMonths);
    number(required_key(config, "label_scale"), 0.0, kMaxLabelMonths, /*low_open=*/true);
    // The input normalisation is written only when set, as a pair, on pixels in [0, 1]; files
    // from before it lack both.
    if (optional_key(config, "input_mean") || optional_key(config, "input_std")) {
        number(required_key(config, "input_mean"), 0.0, 1.0);
        number(required_key(config, "input_std"), 0.0, 1.0, /*low_open=*/true);
    }

    const std::optional<Field> members = optional_key(config, "members");
    if (!ensemble) {
        if (members && !(members->value.is_array() && members->value.empty()))
            members->refuse("absent: only an ensemble has members");
        return;
    }
    if (!members) bad(config.file, fmt::format("{}.members is missing", config.name));
    const std::string expected = fmt::format("a list of 1 to {} models", kMaxMembers);
    if (!members->value.is_array() || members->value.empty() ||
        members->value.size() > kMaxMembers)
        members->refuse(expected);
    for (std::size_t i = 0; i < members->value.size(); ++i)
        check_config({config.file, members->value[i], fmt::format("{}[{}]", members->name, i)},
                     /*member=*/true);
}

// PreprocessSettings as its to_json writes them, within bounds at least as tight as
// validate()'s, so the settings' own reader accepts whatever passes here; the letterbox is held
// to the input size's bounds, since the network is fed that image resized.
void check_preprocess(const Field& settings) {
    object(settings);
    whole_number(required_key(settings, "output_size"), kMinInputSize, kMaxInputSize);
    number(required_key(settings, "clahe_clip_limit"), 0.0, 1000.0, /*low_open=*/true);
    whole_number(required_key(settings, "clahe_tile_grid"), 1, 64);
    number(required_key(settings, "crop_margin"), 0.0, 1.0);
    boolean(required_key(settings, "crop_hand"));
    whole_number(required_key(settings, "detect_size"), 16, 8192);
}

ModelMetadata parse_metadata(const fs::path& file, const std::string& text) {
    nlohmann::json j;
    try {
        j = nlohmann::json::parse(text);
    } catch (const nlohmann::json::exception& e) {
        bad(file, fmt::format("metadata does not parse: {}", first_line(e.what())));
    }
    const Field root{file, j, ""};
    if (!j.is_object()) bad(file, fmt::format("metadata must be an object, got {}", quoted(j)));
    check_config(required_key(root, "config"), /*member=*/false);
    check_preprocess(required_key(root, "preprocess"));
    // The summaries change no prediction, and a file without a weights dtype is float32 (its
    // tensors' types are checked against it), so these three may be absent.
    for (const char* summary : {"training", "validation"})
        if (std::optional<Field> f = optional_key(root, summary)) object(*f);
    if (std::optional<Field> f = optional_key(root, "weights_dtype"); f && !f->value.is_string())
        f->refuse("one of " + listed(kDtypes));
    // Recorded since files say what their numbers mean; older files lack them (parse below).
    if (std::optional<Field> f = optional_key(root, "preprocess_version"))
        whole_number(*f, 1, 1000000);
    for (const char* text : {"model_version", "build_commit"})
        if (std::optional<Field> f = optional_key(root, text); f && !f->value.is_string())
            f->refuse("a string");
    if (std::optional<Field> f = optional_key(root, "views")) whole_number(*f, 1, kMaxViews);

    ModelMetadata meta;
    try {
        meta.config = j.at("config").get<ModelConfig>();
        meta.preprocess = j.at("preprocess").get<PreprocessSettings>();
        meta.training = j.value("training", nlohmann::json::object());
        meta.validation = j.value("validation", nlohmann::json::object());
        meta.weights_dtype = j.value("weights_dtype", meta.weights_dtype);
        // A file from before the key was made with preprocessing version 1 (preprocess.hpp).
        meta.preprocess_version = j.value("preprocess_version", 1);
        meta.model_version = j.value("model_version", std::string());  // empty: worked out
        meta.build_commit = j.value("build_commit", std::string("unknown"));
        meta.views = j.value("views", 1);
    } catch (const nlohmann::json::exception& e) {
        bad(file, fmt::format("metadata does not parse: {}", first_line(e.what())));
    } catch (const Error& e) {  // a settings reader that rejects a value
        bad(file, fmt::format("metadata does not parse: {}", e.reason()));
    }
    return meta;
}

// Every tensor of the weights archive by name, read from the mapped file. Read before the net
// is built, so a file whose weights are missing or not an archive is refused at the cost of
// reading it, not of building the network its metadata claims.
std::map<std::string, torch::Tensor> read_stored_weights(const fs::path& file,
                                                         const ModelReader& reader,
                                                         std::uint64_t offset) {
    torch::serialize::InputArchive archive;
    std::map<std::string, torch::Tensor> stored;
    try {
        archive.load_from(reader.data(offset), static_cast<std::size_t>(reader.size() - offset),
                          torch::Device(torch::kCPU));
        for (const std::string& key : archive.keys()) {
            torch::Tensor t;
            if (archive.try_read(key, t)) stored.emplace(key, t);
        }
    } catch (const std::exception& e) {
        bad(file, fmt::format("the weights do not load (truncated or corrupt): {}",
                              first_line(e.what())));
    }
    return stored;
}

// Copies each stored tensor into the parameter or buffer of the same name, checking that the
// names, shapes and types are exactly the architecture's (floating-point parameters stored as
// `dtype` says, converted to the net's float32 on the way in) and every value finite.
void load_weights_into(const fs::path& file, const BoneAgeNet& net,
                       const std::map<std::string, torch::Tensor>& stored, WeightsDtype dtype) {
    struct Target {
        std::string name;
        torch::Tensor tensor;       // what the net holds; empty for an int8 weight's scales
        torch::ScalarType stored_type;
        std::vector<std::int64_t> stored_shape;
    };
    std::vector<Target> targets;
    for (auto& p : net->named_parameters()) {
        const torch::Tensor& t = p.value();
        targets.push_back({p.key(), t, stored_type(dtype, t), t.sizes().vec()});
        if (quantized(dtype, t))
            targets.push_back({p.key() + kScaleSuffix, {}, torch::kFloat32, {t.size(0)}});
    }
    for (auto& b : net->named_buffers())
        targets.push_back({b.key(), b.value(), b.value().scalar_type(), b.value().sizes().vec()});

    // Names first, so a file of another architecture says which part it lacks or adds.
    std::set<std::string> expected;
    for (const Target& target : targets) {
        expected.insert(target.name);
        if (!stored.count(target.name))
            bad(file, fmt::format("weights do not match the architecture: '{}' is missing",
                                  target.name));
    }
    for (const auto& [name, tensor] : stored)
        if (!expected.count(name))
            bad(file, fmt::format("weights do not match the architecture: unexpected '{}'", name));

    for (const Target& target : targets) {
        const torch::Tensor& t = stored.at(target.name);
        if (t.sizes() != target.stored_shape || t.scalar_type() != target.stored_type)
            bad(file,
                fmt::format("weights do not match the architecture: '{}' is {} {}, expected {} {}",
                            target.name, c10::toString(t.scalar_type()), c10::str(t.sizes()),
                            c10::toString(target.stored_type), c10::str(target.stored_shape)));
        // A NaN weight gives NaN months for every image, silently.
        if (t.is_floating_point() && !torch::isfinite(t).all().item<bool>())
            bad(file, fmt::format("weights hold NaN or infinity: '{}'", target.name));
    }

    torch::NoGradGuard no_grad;
    for (const Target& target : targets) {
        if (!target.tensor.defined()) continue;  // scales, read with their weight
        const torch::Tensor& t = stored.at(target.name);
        if (t.scalar_type() == torch::kInt8 && target.tensor.is_floating_point())
            target.tensor.copy_(dequantize_int8(t, stored.at(target.name + kScaleSuffix)));
        else if (t.scalar_type() == target.tensor.scalar_type() && t.is_contiguous() &&
                 target.tensor.is_contiguous())
            target.tensor.set_data(t);  // the archive's own tensor: no second copy of the weights
        else
            target.tensor.copy_(t);
    }
}

// The file's SHA-256 into `loaded`, and where the metadata records no model version, the version
// worked out from the weights (from `weights_offset` on) as save_model does: one pass, so a
// model is hashed once per load.
void digest_file(const ModelReader& reader, std::uint64_t weights_offset, LoadedModel& loaded) {
    const bool derive = loaded.meta.model_version.empty();
    Sha256 whole;
    whole.update(reader.data(), static_cast<std::size_t>(reader.size()));
    loaded.sha256 = whole.hex();
    if (derive) {
        Sha256 weights;
        weights.update(reader.data(weights_offset),
                       static_cast<std::size_t>(reader.size() - weights_offset));
        loaded.meta.model_version = model_version_of(loaded.meta.config.arch, weights.hex());
    }
}

// The network the metadata describes, with its weights as its layers' constructors drew them
// (load_weights_into replaces every one). Built on its own thread while the caller hashes the
// file, since drawing millions of random weights is the slowest step of a load.
BoneAgeNet build_net(const fs::path& file, const ModelConfig& config) {
    try {
        models::SkipWeightInit skip;
        return make_model(config);
    } catch (const UsageError& e) {
        bad(file, fmt::format("metadata names no model this build can make: {}", e.reason()));
    } catch (const Error&) {
        throw;
    } catch (const std::exception& e) {  // LibTorch's, out of memory among them
        bad(file, fmt::format("the network cannot be built: {}", first_line(e.what())));
    }
}

}  // namespace

void save_model(const fs::path& file, const BoneAgeNet& net, const ModelMetadata& meta) {
    const WeightsDtype dtype = weights_dtype(file, meta.weights_dtype);
    // The weights are stored first in memory: the version written before them is their digest.
    std::ostringstream archive;
    write_weights(file, net, dtype, archive);
    const std::string weights = archive.str();
    const std::string version =
        model_version_of(net->config().arch, sha256_hex(weights.data(), weights.size()));
    const std::string metadata = metadata_json(net, meta, version).dump();
    std::string header(kMagic.begin(), kMagic.end());
    put_le<std::uint32_t>(header, kModelFormatVersion);
    put_le<std::uint64_t>(header, metadata.size());

    remove_stale_temps(file);
    write_file_atomically(file, header + metadata + weights);
}

LoadedModel load_model(const fs::path& file) {
    ModelReader reader(file);
    const std::string header = reader.bytes(0, kHeaderSize);
    if (header.size() < kMagic.size() ||
        std::memcmp(header.data(), kMagic.data(), kMagic.size()) != 0)
        bad(file, "not a boneage model file");
    if (header.size() < kHeaderSize) bad(file, "truncated model file (header)");
    const auto version = get_le<std::uint32_t>(header.data() + kMagic.size());
    if (version != kModelFormatVersion)
        bad(file,
            fmt::format("format version {}, this build reads {}", version, kModelFormatVersion));
    const auto metadata_size =
        get_le<std::uint64_t>(header.data() + kMagic.size() + sizeof(std::uint32_t));
    if (metadata_size > reader.size() - kHeaderSize) bad(file, "truncated model file (metadata)");

    LoadedModel loaded;
    loaded.meta = parse_metadata(file, reader.bytes(kHeaderSize, metadata_size));
    loaded.file = file;
    const WeightsDtype dtype = weights_dtype(file, loaded.meta.weights_dtype);
    // The weights first: a file whose weights do not load is refused without building the
    // (possibly huge) network its metadata claims. Then the net is built on a second thread
    // while this one hashes the file.
    const auto stored = read_stored_weights(file, reader, kHeaderSize + metadata_size);
    std::future<BoneAgeNet> net =
        std::async(std::launch::async, build_net, file, loaded.meta.config);
    digest_file(reader, kHeaderSize + metadata_size, loaded);  // should it throw, ~future waits
    loaded.net = net.get();
    load_weights_into(file, loaded.net, stored, dtype);
    loaded.net->eval();
    return loaded;
}

fs::path find_bundled_file(const std::string& name) {
    std::vector<fs::path> candidates;
    std::error_code ec;
    const fs::path exe = fs::read_symlink("/proc/self/exe", ec);
    if (!ec) {
        // Beside the executable, then under its install prefix (<prefix>/bin/boneage), before
        // the source tree: an installed copy must not read the build machine's files.
        candidates.push_back(exe.parent_path() / "models" / name);
        candidates.push_back(exe.parent_path().parent_path() / "share" / "boneage" / "models" / name);
    }
#ifdef BONEAGE_SOURCE_DIR
    candidates.push_back(fs::path(BONEAGE_SOURCE_DIR) / "models" / name);
#endif
    for (const fs::path& c : candidates)
        if (fs::is_regular_file(c, ec)) return c;
    return {};
}

fs::path default_model_path() {
    if (const char* env = std::getenv("BONEAGE_MODEL"); env != nullptr && *env != '\0') return env;
    return find_bundled_file("default.bin");
}

}  // namespace boneage
