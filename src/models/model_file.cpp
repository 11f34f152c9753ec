// The model file: a fixed header, the metadata as JSON, then the weights as a LibTorch
// archive (every parameter and buffer under its dotted name), so a file is one self-describing
// unit that prediction can trust or reject with a clear reason. Parameters are float32 or, in
// a file half the size, float16 (the metadata's weights_dtype); buffers are always float32,
// since batch-norm variances lose too much in half precision.
#include <fmt/format.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <boneage/error.hpp>
#include <boneage/model.hpp>
#include <cstring>
#include <fstream>
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

// The type a file of `weights_dtype` stores its parameters in; BadModel for an unknown name.
torch::ScalarType parameter_type(const fs::path& file, const std::string& weights_dtype) {
    if (weights_dtype == "float32") return torch::kFloat32;
    if (weights_dtype == "float16") return torch::kFloat16;
    bad(file,
        fmt::format("unknown weights dtype '{}' (expected float32 or float16)", weights_dtype));
}

// A tensor on the CPU and, when floating point, as float32, so a file does not depend on
// the device or precision that trained it. The parameters of a float16 file are then halved.
torch::Tensor portable(const torch::Tensor& t) {
    const torch::Tensor cpu = t.detach().cpu();
    return cpu.is_floating_point() ? cpu.to(torch::kFloat32) : cpu;
}

// Float16 holds magnitudes up to 65504; a parameter beyond that would be stored as infinity.
constexpr double kFloat16Max = 65504.0;

void write_weights(const fs::path& file, const BoneAgeNet& net, torch::ScalarType parameters,
                   std::ostream& out) {
    torch::serialize::OutputArchive archive;
    for (const auto& p : net->named_parameters()) {
        torch::Tensor t = portable(p.value());
        if (t.is_floating_point() && parameters != torch::kFloat32) {
            if (t.numel() > 0 && t.abs().max().item<double>() > kFloat16Max)
                bad(file, fmt::format("parameter '{}' is too large for float16", p.key()));
            t = t.to(parameters);
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
// stored as `parameters`, converted to the net's float32 on the way in).
void read_weights(const fs::path& file, const BoneAgeNet& net, ModelReader& reader,
                  std::uint64_t offset, torch::ScalarType parameters) {
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
        torch::Tensor tensor;
        torch::ScalarType stored_type;
    };
    std::vector<Target> targets;
    for (auto& p : net->named_parameters())
        targets.push_back({p.key(), p.value(),
                           p.value().is_floating_point() ? parameters : p.value().scalar_type()});
    for (auto& b : net->named_buffers())
        targets.push_back({b.key(), b.value(), b.value().scalar_type()});

    // Names first, so a file of another architecture says which part it lacks or adds.
    std::set<std::string> stored_names;
    for (const std::string& key : archive.keys()) {
        torch::Tensor t;
        if (archive.try_read(key, t)) stored_names.insert(key);
    }
    std::set<std::string> expected;
    for (const auto& [name, target, type] : targets) {
        expected.insert(name);
        if (!stored_names.count(name))
            bad(file, fmt::format("weights do not match the architecture: '{}' is missing", name));
    }
    for (const std::string& name : stored_names)
        if (!expected.count(name))
            bad(file, fmt::format("weights do not match the architecture: unexpected '{}'", name));

    torch::NoGradGuard no_grad;
    for (auto& [name, target, type] : targets) {
        torch::Tensor stored;
        archive.try_read(name, stored);
        if (stored.sizes() != target.sizes() || stored.scalar_type() != type)
            bad(file,
                fmt::format("weights do not match the architecture: '{}' is {} {}, expected {} {}",
                            name, c10::toString(stored.scalar_type()), c10::str(stored.sizes()),
                            c10::toString(type), c10::str(target.sizes())));
        target.copy_(stored);
    }
}

}  // namespace

void save_model(const fs::path& file, const BoneAgeNet& net, const ModelMetadata& meta) {
    const torch::ScalarType parameters = parameter_type(file, meta.weights_dtype);
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
        write_weights(file, net, parameters, out);
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
    const torch::ScalarType parameters = parameter_type(file, loaded.meta.weights_dtype);
    try {
        loaded.net = make_model(loaded.meta.config);
    } catch (const UsageError& e) {
        bad(file, fmt::format("metadata names no model this build knows: {}", e.reason()));
    }
    read_weights(file, loaded.net, reader, kHeaderSize + metadata_size, parameters);
    loaded.net->eval();
    return loaded;
}

fs::path default_model_path() {
    if (const char* env = std::getenv("BONEAGE_MODEL"); env != nullptr && *env != '\0') return env;
    std::vector<fs::path> candidates;
#ifdef BONEAGE_SOURCE_DIR
    candidates.push_back(fs::path(BONEAGE_SOURCE_DIR) / "models" / "default.bin");
#endif
    std::error_code ec;
    const fs::path exe = fs::read_symlink("/proc/self/exe", ec);
    if (!ec) {
        // The build tree (build/boneage), or an install prefix (bin/boneage beside share/).
        candidates.push_back(exe.parent_path() / "models" / "default.bin");
        candidates.push_back(exe.parent_path().parent_path() / "models" / "default.bin");
        candidates.push_back(exe.parent_path().parent_path() / "share" / "boneage" / "models" /
                             "default.bin");
    }
    for (const fs::path& c : candidates)
        if (fs::is_regular_file(c, ec)) return c;
    return {};
}

}  // namespace boneage
