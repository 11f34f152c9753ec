// The model file: a fixed header, the metadata as JSON, then the weights as a LibTorch
// archive (every parameter and buffer under its dotted name), so a file is one self-describing
// unit that prediction can trust or reject with a clear reason. Parameters are float32 or, in
// a file half the size, float16, or in a quarter, int8 with per-channel scales (the metadata's
// weights_dtype); buffers are always float32, since batch-norm variances lose too much in half
// precision.
#include <fmt/format.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <boneage/error.hpp>
#include <boneage/model.hpp>
#include <cstring>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <random>
#include <set>
#include <utility>
#include <vector>

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

nlohmann::json metadata_json(const BoneAgeNet& net, const ModelMetadata& meta) {
    nlohmann::json j;
    // The net's own configuration is what its weights fit, so it is the one recorded.
    j["config"] = net->config();
    j["preprocess"] = meta.preprocess;
    j["training"] = meta.training;
    j["validation"] = meta.validation;
    j["weights_dtype"] = meta.weights_dtype;
    return j;
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

fs::path temp_beside(const fs::path& file) {
    std::random_device rd;
    return file.parent_path() /
           fmt::format(".{}.tmp-{}-{:08x}", file.filename().string(), ::getpid(), rd());
}

// The first line of a LibTorch message, without its C++ backtrace.
std::string first_line(const std::string& message) { return message.substr(0, message.find('\n')); }

// An open model file, read in pieces: the header and metadata first, then the weights
// streamed into the archive reader without a second copy of the file in memory.
class ModelReader {
public:
    explicit ModelReader(const fs::path& file) : file_(file) {
        std::error_code ec;
        if (!fs::is_regular_file(file, ec)) bad(file, "no such model file");
        size_ = fs::file_size(file, ec);
        in_.open(file, std::ios::binary);
        if (ec || !in_) bad(file, "cannot open the model file");
    }

    std::uint64_t size() const { return size_; }

    // `count` bytes at `offset`, or fewer where the file ends or cannot be read (which the
    // callers report as truncation; the archive reader calls read() from C code, so it must
    // not throw).
    std::string bytes(std::uint64_t offset, std::uint64_t count) {
        if (offset >= size_) return {};
        std::string out(static_cast<std::size_t>(std::min(count, size_ - offset)), '\0');
        read(offset, out.data(), out.size());
        return out;
    }

    std::size_t read(std::uint64_t offset, void* buffer, std::size_t count) {
        in_.clear();
        in_.seekg(static_cast<std::streamoff>(offset));
        in_.read(static_cast<char*>(buffer), static_cast<std::streamsize>(count));
        return in_.bad() ? 0 : static_cast<std::size_t>(in_.gcount());
    }

private:
    fs::path file_;
    std::uint64_t size_ = 0;
    std::ifstream in_;
};

ModelMetadata parse_metadata(const fs::path& file, const std::string& text) {
    ModelMetadata meta;
    try {
        const nlohmann::json j = nlohmann::json::parse(text);
        meta.config = j.at("config").get<ModelConfig>();
        meta.preprocess = j.value("preprocess", nlohmann::json::object()).get<PreprocessSettings>();
        meta.training = j.value("training", nlohmann::json::object());
        meta.validation = j.value("validation", nlohmann::json::object());
        meta.weights_dtype = j.value("weights_dtype", meta.weights_dtype);
    } catch (const nlohmann::json::exception& e) {
        bad(file, fmt::format("metadata does not parse: {}", e.what()));
    } catch (const Error& e) {  // a settings reader that rejects a value
        bad(file, fmt::format("metadata does not parse: {}", e.reason()));
    }
    return meta;
}

// Copies each tensor of the archive into the parameter or buffer of the same name, checking
// that the names, shapes and types are exactly the architecture's (floating-point parameters
// stored as `dtype` says, converted to the net's float32 on the way in).
void read_weights(const fs::path& file, const BoneAgeNet& net, ModelReader& reader,
                  std::uint64_t offset, WeightsDtype dtype) {
    torch::serialize::InputArchive archive;
    try {
        archive.load_from(
            [&](std::uint64_t pos, void* buffer, std::size_t count) {
                return reader.read(offset + pos, buffer, count);
            },
            [&] { return static_cast<std::size_t>(reader.size() - offset); },
            torch::Device(torch::kCPU));
    } catch (const std::exception& e) {
        bad(file, fmt::format("the weights do not load (truncated or corrupt): {}",
                              first_line(e.what())));
    }
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
    std::map<std::string, torch::Tensor> stored;
    for (const std::string& key : archive.keys()) {
        torch::Tensor t;
        if (archive.try_read(key, t)) stored.emplace(key, t);
    }
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
    }

    torch::NoGradGuard no_grad;
    for (const Target& target : targets) {
        if (!target.tensor.defined()) continue;  // scales, read with their weight
        const torch::Tensor& t = stored.at(target.name);
        if (t.scalar_type() == torch::kInt8 && target.tensor.is_floating_point())
            target.tensor.copy_(dequantize_int8(t, stored.at(target.name + kScaleSuffix)));
        else
            target.tensor.copy_(t);
    }
}

}  // namespace

void save_model(const fs::path& file, const BoneAgeNet& net, const ModelMetadata& meta) {
    const WeightsDtype dtype = weights_dtype(file, meta.weights_dtype);
    const std::string metadata = metadata_json(net, meta).dump();
    std::string header(kMagic.begin(), kMagic.end());
    put_le<std::uint32_t>(header, kModelFormatVersion);
    put_le<std::uint64_t>(header, metadata.size());

    const fs::path temp = temp_beside(file);
    try {
        std::ofstream out(temp, std::ios::binary | std::ios::trunc);
        if (!out) throw Error(ErrorKind::NotFound, file, "cannot create the model file");
        out.write(header.data(), static_cast<std::streamsize>(header.size()));
        out.write(metadata.data(), static_cast<std::streamsize>(metadata.size()));
        write_weights(file, net, dtype, out);
        out.close();
        if (!out) throw Error(ErrorKind::NotFound, file, "cannot write the model file");
        std::error_code ec;
        fs::rename(temp, file, ec);
        if (ec)
            throw Error(ErrorKind::NotFound, file,
                        fmt::format("cannot write the model file: {}", ec.message()));
    } catch (...) {
        std::error_code ignored;
        fs::remove(temp, ignored);
        throw;
    }
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
    const WeightsDtype dtype = weights_dtype(file, loaded.meta.weights_dtype);
    try {
        loaded.net = make_model(loaded.meta.config);
    } catch (const UsageError& e) {
        bad(file, fmt::format("metadata names no model this build knows: {}", e.reason()));
    }
    read_weights(file, loaded.net, reader, kHeaderSize + metadata_size, dtype);
    loaded.net->eval();
    return loaded;
}

fs::path find_bundled_file(const std::string& name) {
    std::vector<fs::path> candidates;
#ifdef BONEAGE_SOURCE_DIR
    candidates.push_back(fs::path(BONEAGE_SOURCE_DIR) / "models" / name);
#endif
    std::error_code ec;
    const fs::path exe = fs::read_symlink("/proc/self/exe", ec);
    if (!ec) {
        // The build tree (build/boneage), or an install prefix (bin/boneage beside share/).
        candidates.push_back(exe.parent_path() / "models" / name);
        candidates.push_back(exe.parent_path().parent_path() / "models" / name);
        candidates.push_back(exe.parent_path().parent_path() / "share" / "boneage" / "models" / name);
    }
    for (const fs::path& c : candidates)
        if (fs::is_regular_file(c, ec)) return c;
    return {};
}

fs::path default_model_path() {
    if (const char* env = std::getenv("BONEAGE_MODEL"); env != nullptr && *env != '\0') return env;
    return find_bundled_file("default.bin");
}

}  // namespace boneage
