// The model file: it round-trips bit for bit, and anything else is refused as BadModel with
// the file and the reason.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <boneage/error.hpp>
#include <boneage/model.hpp>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iterator>
#include <nlohmann/json.hpp>
#include <random>

#include "support.hpp"

namespace {

namespace fs = std::filesystem;
using boneage::test::ScratchDir;

std::string read_bytes(const fs::path& file) {
    std::ifstream in(file, std::ios::binary);
    return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

void write_bytes(const fs::path& file, const std::string& bytes) {
    std::ofstream(file, std::ios::binary) << bytes;
}

boneage::ModelMetadata sample_metadata() {
    boneage::ModelMetadata meta;
    meta.preprocess.output_size = 96;
    meta.preprocess.clahe_clip_limit = 3.5;
    meta.preprocess.crop_hand = false;
    meta.training = {{"images", 12}, {"epochs", 3}, {"recipe", "adam 1e-3, msle"}};
    meta.validation = {{"mae", 12.25}, {"n", 4}};
    return meta;
}

boneage::BoneAgeNet sample_net(const std::string& arch, int size, bool use_sex,
                               const std::string& head) {
    boneage::ModelConfig c;
    c.arch = arch;
    c.head = head;
    c.use_sex = use_sex;
    c.input_size = size;
    c.label_offset = 127.5;
    c.label_scale = 41.0;
    torch::manual_seed(11);
    return boneage::make_model(c);
}

// Runs a few training-mode forwards so batch-norm statistics leave their initial values.
void disturb_batch_norms(boneage::BoneAgeNet& net, int size) {
    torch::NoGradGuard no_grad;
    net->train();
    for (int i = 0; i < 2; ++i) net->forward(torch::rand({2, 1, size, size}), torch::ones({2}));
}

torch::Tensor outputs(boneage::BoneAgeNet& net, int size) {
    torch::NoGradGuard no_grad;
    net->eval();
    torch::manual_seed(5);
    return net->forward(torch::rand({3, 1, size, size}), torch::tensor({1.0f, 0.0f, 1.0f}));
}

// Expects load_model(file) to throw BadModel naming `file` with `reason_part` in its reason.
void expect_bad_model(const fs::path& file, const std::string& reason_part) {
    try {
        boneage::load_model(file);
        ADD_FAILURE() << file << " loaded";
    } catch (const boneage::Error& e) {
        EXPECT_EQ(e.kind(), boneage::ErrorKind::BadModel) << e.what();
        EXPECT_EQ(e.file(), file);
        EXPECT_NE(e.reason().find(reason_part), std::string::npos) << e.reason();
    }
}

// A file's metadata JSON, and the same file with other metadata in its place.
constexpr std::size_t kHeader = 16 + 4 + 8;
nlohmann::json metadata_of(const std::string& bytes) {
    std::uint64_t length = 0;
    std::memcpy(&length, bytes.data() + 20, 8);  // little-endian host, as the file
    return nlohmann::json::parse(bytes.substr(kHeader, length));
}
std::string with_metadata(const std::string& bytes, const std::string& metadata) {
    std::uint64_t old_length = 0;
    std::memcpy(&old_length, bytes.data() + 20, 8);
    std::string out = bytes.substr(0, 20);
    const std::uint64_t length = metadata.size();
    out.append(reinterpret_cast<const char*>(&length), 8);
    return out + metadata + bytes.substr(kHeader + old_length);
}

TEST(ModelFile, RoundTripsBitForBit) {
    ScratchDir dir("model_file_round_trip");
    for (const char* arch : {"shallow", "resnet50"}) {
        const int size = 64;
        auto net = sample_net(arch, size, true, "flatten");
        disturb_batch_norms(net, size);
        boneage::save_model(dir / "a.bin", net, sample_metadata());
        auto loaded = boneage::load_model(dir / "a.bin");
        boneage::save_model(dir / "b.bin", loaded.net, loaded.meta);

        const std::string a = read_bytes(dir / "a.bin"), b = read_bytes(dir / "b.bin");
        ASSERT_GT(a.size(), 1000u) << arch;
        EXPECT_TRUE(a == b) << arch << ": saving a loaded model changed the bytes";
        EXPECT_EQ(a.substr(0, 16), std::string("BONEAGE-MODEL\0\0\0", 16));
        EXPECT_TRUE(torch::equal(outputs(net, size), outputs(loaded.net, size))) << arch;
        for (const auto& buffer : net->named_buffers())
            EXPECT_TRUE(torch::equal(buffer.value(), loaded.net->named_buffers()[buffer.key()]))
                << buffer.key();
    }
}

TEST(ModelFile, CarriesTheMetadata) {
    ScratchDir dir("model_file_metadata");
    auto net = sample_net("shallow", 64, true, "gap");
    boneage::save_model(dir / "m.bin", net, sample_metadata());
    const auto loaded = boneage::load_model(dir / "m.bin");
    const boneage::ModelConfig& c = loaded.meta.config;
    EXPECT_EQ(c.arch, "shallow");
    EXPECT_EQ(c.head, "gap");
    EXPECT_TRUE(c.use_sex);
    EXPECT_EQ(c.input_size, 64);
    EXPECT_EQ(c.label_offset, 127.5);
    EXPECT_EQ(c.label_scale, 41.0);
    EXPECT_EQ(loaded.net->config().label_scale, 41.0);
    EXPECT_EQ(loaded.meta.preprocess.output_size, 96);
    EXPECT_EQ(loaded.meta.preprocess.clahe_clip_limit, 3.5);
    EXPECT_FALSE(loaded.meta.preprocess.crop_hand);
    EXPECT_EQ(loaded.meta.training, sample_metadata().training);
    EXPECT_EQ(loaded.meta.validation, sample_metadata().validation);
}

TEST(ModelFile, IsWrittenAtomicallyAndReplacesAnOldFile) {
    ScratchDir dir("model_file_atomic");
    auto net = sample_net("shallow", 64, false, "gap");
    write_bytes(dir / "m.bin", "old contents");
    boneage::save_model(dir / "m.bin", net, {});
    EXPECT_NO_THROW(boneage::load_model(dir / "m.bin"));
    int entries = 0;
    for (const auto& e : fs::directory_iterator(dir.path())) entries += e.is_regular_file() ? 1 : 0;
    EXPECT_EQ(entries, 1) << "a temporary file was left behind";
    EXPECT_THROW(boneage::save_model(dir / "no" / "such" / "m.bin", net, {}), boneage::Error);
}

TEST(ModelFile, StoresFloat32WhateverThePrecisionOfTheNet) {
    ScratchDir dir("model_file_precision");
    auto net = sample_net("shallow", 64, false, "gap");
    net->to(torch::kFloat64);
    boneage::save_model(dir / "m.bin", net, {});
    auto loaded = boneage::load_model(dir / "m.bin");
    for (const auto& p : loaded.net->named_parameters()) {
        EXPECT_EQ(p.value().scalar_type(), torch::kFloat32) << p.key();
        EXPECT_TRUE(torch::equal(p.value(), net->named_parameters()[p.key()].to(torch::kFloat32)))
            << p.key();
    }
}

// A ResNet-18 with the bundled model's head (gap, sex) whose batch norms and output layer
// are drawn at random, so predictions depend on every stored parameter.
boneage::BoneAgeNet float16_candidate(int size) {
    auto net = sample_net("resnet18", size, true, "gap");
    disturb_batch_norms(net, size);
    torch::NoGradGuard no_grad;
    auto p = net->named_parameters();
    p["head.output.weight"].normal_(0.0, 0.2);
    p["head.output.bias"].fill_(0.1);
    return net;
}

// Saves `net` as dir/fp32.bin and as dir/`name` with `weights_dtype`; the second file's size
// over the first's.
double size_against_float32(const ScratchDir& dir, const boneage::BoneAgeNet& net,
                            const std::string& weights_dtype, const std::string& name) {
    boneage::ModelMetadata meta = sample_metadata();
    boneage::save_model(dir / "fp32.bin", net, meta);
    meta.weights_dtype = weights_dtype;
    boneage::save_model(dir / name, net, meta);
    return static_cast<double>(fs::file_size(dir / name)) /
           static_cast<double>(fs::file_size(dir / "fp32.bin"));
}

TEST(ModelFile, Float16HalvesTheFileAndKeepsPredictionsWithinAFractionOfAMonth) {
    ScratchDir dir("model_file_float16");
    const int size = 64;
    auto net = float16_candidate(size);
    const double ratio = size_against_float32(dir, net, "float16", "fp16.bin");
    RecordProperty("float16_size_ratio", std::to_string(ratio));
    EXPECT_GT(ratio, 0.48);
    EXPECT_LT(ratio, 0.53);

    auto loaded = boneage::load_model(dir / "fp16.bin");
    EXPECT_EQ(loaded.meta.weights_dtype, "float16");
    EXPECT_EQ(metadata_of(read_bytes(dir / "fp16.bin"))["weights_dtype"], "float16");
    for (const auto& p : loaded.net->named_parameters()) {
        EXPECT_EQ(p.value().scalar_type(), torch::kFloat32) << p.key();
        const torch::Tensor original = net->named_parameters()[p.key()];
        EXPECT_TRUE(torch::equal(p.value(), original.to(torch::kFloat16).to(torch::kFloat32)))
            << p.key();
    }
    // Batch-norm statistics stay float32, bit for bit.
    for (const auto& b : net->named_buffers())
        EXPECT_TRUE(torch::equal(b.value(), loaded.net->named_buffers()[b.key()])) << b.key();

    const torch::Tensor full = outputs(net, size), half = outputs(loaded.net, size);
    EXPECT_GT((full - 127.5).abs().min().item<double>(), 0.5) << "the output layer must count";
    const double mad = (full - half).abs().mean().item<double>();
    RecordProperty("float16_mad_months", std::to_string(mad));
    EXPECT_LT(mad, 0.05) << full << half;
    EXPECT_GT(mad, 0.0) << "float16 storage changed nothing: were the weights halved?";
}

TEST(ModelFile, Float16RoundTripsBitForBit) {
    ScratchDir dir("model_file_float16_round_trip");
    auto net = float16_candidate(64);
    boneage::ModelMetadata meta = sample_metadata();
    meta.weights_dtype = "float16";
    boneage::save_model(dir / "a.bin", net, meta);
    auto loaded = boneage::load_model(dir / "a.bin");
    boneage::save_model(dir / "b.bin", loaded.net, loaded.meta);
    EXPECT_TRUE(read_bytes(dir / "a.bin") == read_bytes(dir / "b.bin"));
}

TEST(ModelFile, Int8QuartersTheFileAndKeepsEachWeightWithinHalfAStep) {
    ScratchDir dir("model_file_int8");
    const int size = 64;
    auto net = float16_candidate(size);
    const double ratio = size_against_float32(dir, net, "int8", "int8.bin");
    RecordProperty("int8_size_ratio", std::to_string(ratio));
    EXPECT_GT(ratio, 0.24);
    EXPECT_LT(ratio, 0.29);

    auto loaded = boneage::load_model(dir / "int8.bin");
    EXPECT_EQ(loaded.meta.weights_dtype, "int8");
    auto original = net->named_parameters();
    for (const auto& p : loaded.net->named_parameters()) {
        const torch::Tensor w = original[p.key()];
        ASSERT_EQ(p.value().scalar_type(), torch::kFloat32) << p.key();
        if (w.dim() < 2) {  // vectors as float16
            EXPECT_TRUE(torch::equal(p.value(), w.to(torch::kFloat16).to(torch::kFloat32)))
                << p.key();
            continue;
        }
        // Each output channel in 255 steps of its largest magnitude / 127: every weight
        // within half a step, the largest kept (to float rounding).
        const torch::Tensor rows = w.reshape({w.size(0), -1});
        const torch::Tensor step = rows.abs().amax(1, /*keepdim=*/true) / 127.0;
        const torch::Tensor error = (p.value().reshape({w.size(0), -1}) - rows).abs();
        EXPECT_TRUE((error <= step * 0.5001 + 1e-12).all().item<bool>()) << p.key();
        if (rows.size(1) > 1)  // a channel of one weight is its own largest: kept exactly
            EXPECT_GT(error.max().item<double>(), 0.0) << p.key() << " was not quantised";
    }
    for (const auto& b : net->named_buffers())
        EXPECT_TRUE(torch::equal(b.value(), loaded.net->named_buffers()[b.key()])) << b.key();

    const torch::Tensor full = outputs(net, size), quarter = outputs(loaded.net, size);
    const double mad = (full - quarter).abs().mean().item<double>();
    RecordProperty("int8_mad_months", std::to_string(mad));
    EXPECT_LT(mad, 0.5) << full << quarter;
}

TEST(ModelFile, AnInt8FileThatLacksItsScalesOrClaimsToBeInt8IsRefused) {
    ScratchDir dir("model_file_int8_bad");
    auto net = sample_net("shallow", 64, false, "gap");
    boneage::save_model(dir / "m.bin", net, {});
    const std::string bytes = read_bytes(dir / "m.bin");
    nlohmann::json j = metadata_of(bytes);
    j["weights_dtype"] = "int8";
    write_bytes(dir / "claims8.bin", with_metadata(bytes, j.dump()));
    expect_bad_model(dir / "claims8.bin", "missing");  // the scales

    boneage::ModelMetadata meta;
    meta.weights_dtype = "int8";
    boneage::save_model(dir / "int8.bin", net, meta);
    const std::string int8_bytes = read_bytes(dir / "int8.bin");
    nlohmann::json k = metadata_of(int8_bytes);
    k["weights_dtype"] = "float16";
    write_bytes(dir / "claims16.bin", with_metadata(int8_bytes, k.dump()));
    expect_bad_model(dir / "claims16.bin", "unexpected");  // scales a float16 file has not
}

TEST(ModelFile, AFileWithoutAWeightsDtypeIsFloat32) {
    ScratchDir dir("model_file_no_dtype");
    auto net = sample_net("shallow", 64, false, "gap");
    boneage::save_model(dir / "m.bin", net, {});
    const std::string bytes = read_bytes(dir / "m.bin");
    nlohmann::json meta = metadata_of(bytes);
    EXPECT_EQ(meta["weights_dtype"], "float32");
    meta.erase("weights_dtype");
    write_bytes(dir / "old.bin", with_metadata(bytes, meta.dump()));
    auto loaded = boneage::load_model(dir / "old.bin");
    EXPECT_EQ(loaded.meta.weights_dtype, "float32");
    EXPECT_TRUE(torch::equal(outputs(net, 64), outputs(loaded.net, 64)));
}

TEST(ModelFile, UnknownWeightsDtypesAndOutOfRangeWeightsAreRefused) {
    ScratchDir dir("model_file_bad_dtype");
    auto net = sample_net("shallow", 64, false, "gap");
    boneage::ModelMetadata meta;
    meta.weights_dtype = "bfloat16";
    try {
        boneage::save_model(dir / "bf16.bin", net, meta);
        ADD_FAILURE() << "saved with weights dtype bfloat16";
    } catch (const boneage::Error& e) {
        EXPECT_EQ(e.kind(), boneage::ErrorKind::BadModel);
        EXPECT_EQ(e.file(), dir / "bf16.bin");
        EXPECT_NE(e.reason().find("bfloat16"), std::string::npos) << e.reason();
    }
    EXPECT_FALSE(fs::exists(dir / "bf16.bin"));

    boneage::save_model(dir / "m.bin", net, {});
    const std::string bytes = read_bytes(dir / "m.bin");
    nlohmann::json j = metadata_of(bytes);
    j["weights_dtype"] = "float8";
    write_bytes(dir / "float8.bin", with_metadata(bytes, j.dump()));
    expect_bad_model(dir / "float8.bin", "unknown weights dtype 'float8'");
    // A float32 file that claims float16 holds parameters of the wrong type.
    j["weights_dtype"] = "float16";
    write_bytes(dir / "claims16.bin", with_metadata(bytes, j.dump()));
    expect_bad_model(dir / "claims16.bin", "is Float");

    {
        torch::NoGradGuard no_grad;
        net->named_parameters()["head.output.bias"].fill_(1e5);
    }
    meta.weights_dtype = "float16";
    try {
        boneage::save_model(dir / "big.bin", net, meta);
        ADD_FAILURE() << "saved a parameter float16 cannot hold";
    } catch (const boneage::Error& e) {
        EXPECT_EQ(e.kind(), boneage::ErrorKind::BadModel);
        EXPECT_NE(e.reason().find("head.output.bias"), std::string::npos) << e.reason();
    }
    int entries = 0;
    for (const auto& e : fs::directory_iterator(dir.path())) entries += e.is_regular_file() ? 1 : 0;
    EXPECT_EQ(entries, 3) << "a failed save left a file behind";
}

class BadModelFile : public ::testing::Test {
protected:
    void SetUp() override {
        auto net = sample_net("shallow", 64, true, "flatten");
        boneage::save_model(dir_ / "good.bin", net, sample_metadata());
        good_ = read_bytes(dir_ / "good.bin");
    }
    fs::path write(const std::string& name, const std::string& bytes) {
        write_bytes(dir_ / name, bytes);
        return dir_ / name;
    }
    ScratchDir dir_{"bad_model_file"};
    std::string good_;
};

TEST_F(BadModelFile, MissingFile) { expect_bad_model(dir_ / "absent.bin", "no such model file"); }

TEST_F(BadModelFile, RandomBytesTextAndEmptyFiles) {
    std::mt19937 rng(1);
    std::string noise(5000, '\0');
    for (char& ch : noise) ch = static_cast<char>(rng() & 0xff);
    expect_bad_model(write("noise.bin", noise), "not a boneage model file");
    expect_bad_model(write("text.bin", "id,boneage,male\n1,120,True\n"),
                     "not a boneage model file");
    expect_bad_model(write("empty.bin", ""), "not a boneage model file");
}

TEST_F(BadModelFile, AnotherFormatVersion) {
    std::string bytes = good_;
    bytes[16] = 7;
    expect_bad_model(write("v7.bin", bytes), "format version 7, this build reads 1");
}

TEST_F(BadModelFile, TruncatedAnywhere) {
    expect_bad_model(write("header.bin", good_.substr(0, 20)), "truncated");
    expect_bad_model(write("metadata.bin", good_.substr(0, kHeader + 10)), "truncated");
    expect_bad_model(write("weights.bin", good_.substr(0, good_.size() / 2)), "truncated");
    expect_bad_model(write("tail.bin", good_.substr(0, good_.size() - 1)), "truncated");
}

TEST_F(BadModelFile, MetadataThatDoesNotParse) {
    expect_bad_model(write("json.bin", with_metadata(good_, "{\"config\": [1, 2")),
                     "metadata does not parse");
    expect_bad_model(
        write("fields.bin", with_metadata(good_, "{\"config\": {\"input_size\": \"big\"}}")),
        "metadata does not parse");
    nlohmann::json meta = metadata_of(good_);
    meta["config"]["arch"] = "alexnet";
    expect_bad_model(write("arch.bin", with_metadata(good_, meta.dump())), "alexnet");
}

TEST_F(BadModelFile, WeightsThatDoNotMatchTheArchitecture) {
    nlohmann::json meta = metadata_of(good_);
    meta["config"]["input_size"] = 96;  // the flatten head's first dense layer changes shape
    expect_bad_model(write("shape.bin", with_metadata(good_, meta.dump())), "head.dense1.weight");
    meta = metadata_of(good_);
    meta["config"]["use_sex"] = false;  // the file holds a sex embedding this net lacks
    expect_bad_model(write("extra.bin", with_metadata(good_, meta.dump())),
                     "unexpected 'head.sex_embedding");
    meta["config"]["arch"] = "resnet50";
    expect_bad_model(write("arch.bin", with_metadata(good_, meta.dump())),
                     "do not match the architecture");

    auto without_sex = sample_net("shallow", 64, false, "flatten");
    boneage::save_model(dir_ / "plain.bin", without_sex, {});
    const std::string plain = read_bytes(dir_ / "plain.bin");
    meta = metadata_of(plain);
    meta["config"]["use_sex"] = true;  // this net wants a sex embedding the file lacks
    expect_bad_model(write("missing.bin", with_metadata(plain, meta.dump())),
                     "'head.sex_embedding.weight' is missing");
}

TEST(DefaultModelPath, PrefersTheEnvironment) {
    ::setenv("BONEAGE_MODEL", "/tmp/some/model.bin", 1);
    EXPECT_EQ(boneage::default_model_path(), fs::path("/tmp/some/model.bin"));
    ::unsetenv("BONEAGE_MODEL");
    const fs::path found = boneage::default_model_path();
    if (!found.empty()) EXPECT_TRUE(fs::is_regular_file(found)) << found;
}

}  // namespace
