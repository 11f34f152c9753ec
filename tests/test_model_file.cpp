// The model file: it round-trips bit for bit, and anything else is refused as BadModel with
// the file and the reason.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <boneage/build_info.hpp>
#include <boneage/error.hpp>
#include <boneage/model.hpp>
#include <boneage/sha256.hpp>
#include <cstdlib>
#include <cstring>
#include <algorithm>
#include <fstream>
#include <iterator>
#include <limits>
#include <nlohmann/json.hpp>
#include <random>
#include <sys/resource.h>
#include <vector>

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
    // The first key the schema misses is named (EveryNumberAndNameOfTheMetadata... checks
    // each field's type and range).
    expect_bad_model(
        write("fields.bin", with_metadata(good_, "{\"config\": {\"input_size\": \"big\"}}")),
        "config.arch is missing");
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

// A file of the format's header, `metadata` and `weights`, bytes as given: what a
// damaged or hand-made file can hold.
std::string model_file_bytes(const std::string& metadata, const std::string& weights) {
    std::string out("BONEAGE-MODEL\0\0\0", 16);
    const std::uint32_t version = boneage::kModelFormatVersion;
    out.append(reinterpret_cast<const char*>(&version), 4);
    const std::uint64_t length = metadata.size();
    out.append(reinterpret_cast<const char*>(&length), 8);
    return out + metadata + weights;
}

// Each refusal is one line: it goes to a terminal or a log as it is.
void expect_one_line(const fs::path& file) {
    try {
        boneage::load_model(file);
    } catch (const boneage::Error& e) {
        EXPECT_EQ(std::string(e.what()).find('\n'), std::string::npos) << e.what();
    }
}

// The file with the metadata at `pointer` (a JSON pointer) set to `value`, or removed.
std::string edited(const std::string& bytes, const std::string& pointer, const nlohmann::json& value) {
    nlohmann::json meta = metadata_of(bytes);
    meta[nlohmann::json::json_pointer(pointer)] = value;
    return with_metadata(bytes, meta.dump());
}
std::string without(const std::string& bytes, const std::string& pointer) {
    nlohmann::json meta = metadata_of(bytes);
    const nlohmann::json::json_pointer at(pointer);
    meta[at.parent_pointer()].erase(at.back());
    return with_metadata(bytes, meta.dump());
}

TEST_F(BadModelFile, EveryNumberAndNameOfTheMetadataIsCheckedAndTheFieldNamed) {
    struct Case {
        std::string pointer;
        nlohmann::json value;
        std::string field;  // as the reason names it
    };
    const std::vector<Case> cases = {
        {"/config/input_size", 200000, "config.input_size"},
        {"/config/input_size", 1025, "config.input_size"},
        {"/config/input_size", 31, "config.input_size"},
        {"/config/input_size", -64, "config.input_size"},
        {"/config/input_size", 64.5, "config.input_size"},
        {"/config/input_size", "64", "config.input_size"},
        {"/config/label_scale", 0.0, "config.label_scale"},
        {"/config/label_scale", -41.0, "config.label_scale"},
        {"/config/label_scale", 1e9, "config.label_scale"},
        {"/config/label_offset", -1e9, "config.label_offset"},
        {"/config/label_offset", "127", "config.label_offset"},
        {"/config/use_sex", 1, "config.use_sex"},
        {"/config/input_mean", 0.5, "config.input_std is missing"},
        {"/config/input_std", 0.0, "config.input_mean is missing"},
        {"/config/head", "mean", "config.head"},
        {"/config/head", "pool", "config.head"},
        {"/config/arch", "", "config.arch"},
        {"/config/arch", 50, "config.arch"},
        {"/config/members", nlohmann::json::array({nlohmann::json::object()}), "config.members"},
        {"/preprocess/output_size", 4096, "preprocess.output_size"},
        {"/preprocess/output_size", 16, "preprocess.output_size"},
        {"/preprocess/clahe_tile_grid", 0, "preprocess.clahe_tile_grid"},
        {"/preprocess/clahe_clip_limit", -1.0, "preprocess.clahe_clip_limit"},
        {"/preprocess/crop_margin", 2.0, "preprocess.crop_margin"},
        {"/preprocess/crop_hand", "yes", "preprocess.crop_hand"},
        {"/preprocess/detect_size", 100000, "preprocess.detect_size"},
        {"/weights_dtype", 16, "weights_dtype"},
        {"/training", nlohmann::json::array({1, 2}), "training"},
        {"/validation", "good", "validation"},
        {"/config", nlohmann::json::array(), "config"},
    };
    for (const Case& c : cases) {
        SCOPED_TRACE(c.pointer + " = " + c.value.dump());
        const fs::path file = write("field.bin", edited(good_, c.pointer, c.value));
        expect_bad_model(file, c.field);
        expect_one_line(file);
    }
    nlohmann::json meta = metadata_of(good_);
    meta["config"]["input_mean"] = 0.4;
    meta["config"]["input_std"] = 0.0;  // images divided by zero
    expect_bad_model(write("norm.bin", with_metadata(good_, meta.dump())), "config.input_std");
}

TEST_F(BadModelFile, AMissingKeyIsRefusedNotReadAsItsDefault) {
    for (const char* pointer :
         {"/config", "/preprocess", "/config/arch", "/config/head", "/config/use_sex",
          "/config/input_size", "/config/label_offset", "/config/label_scale",
          "/preprocess/output_size", "/preprocess/clahe_clip_limit",
          "/preprocess/clahe_tile_grid", "/preprocess/crop_margin", "/preprocess/crop_hand",
          "/preprocess/detect_size"}) {
        SCOPED_TRACE(pointer);
        std::string field = std::string(pointer).substr(1);
        std::replace(field.begin(), field.end(), '/', '.');
        const fs::path file = write("missing.bin", without(good_, pointer));
        expect_bad_model(file, field + " is missing");
    }
    // Kept optional: a weights dtype that the stored tensors contradict is refused anyway
    // (AFileWithoutAWeightsDtypeIsFloat32), and the summaries change no prediction.
    for (const char* pointer : {"/training", "/validation"}) {
        const fs::path file = write("summary.bin", without(good_, pointer));
        EXPECT_NO_THROW(boneage::load_model(file)) << pointer;
    }
}

TEST_F(BadModelFile, AnEnsembleMemberIsCheckedAsAModelOfItsOwn) {
    std::vector<boneage::LoadedModel> members;
    members.push_back(boneage::load_model(dir_ / "good.bin"));
    members.push_back(boneage::load_model(dir_ / "good.bin"));
    boneage::LoadedModel ensemble = boneage::combine_models(members);
    boneage::save_model(dir_ / "ensemble.bin", ensemble.net, ensemble.meta);
    const std::string bytes = read_bytes(dir_ / "ensemble.bin");
    ASSERT_NO_THROW(boneage::load_model(dir_ / "ensemble.bin"));

    expect_bad_model(write("m1.bin", edited(bytes, "/config/members/1/input_size", 5000)),
                     "config.members[1].input_size");
    expect_bad_model(write("m0.bin", without(bytes, "/config/members/0/label_scale")),
                     "config.members[0].label_scale is missing");
    expect_bad_model(write("nested.bin", edited(bytes, "/config/members/0/arch", "ensemble")),
                     "config.members[0].arch");
    expect_bad_model(write("none.bin", edited(bytes, "/config/members", nlohmann::json::array())),
                     "config.members");
    expect_bad_model(write("head.bin", edited(bytes, "/config/head", "gap")), "config.head");
}

// Peak resident memory of this process so far, bytes.
double peak_rss_bytes() {
    rusage usage{};
    getrusage(RUSAGE_SELF, &usage);
    return static_cast<double>(usage.ru_maxrss) * 1024.0;
}

TEST_F(BadModelFile, ASmallFileClaimingATerabyteNetworkIsRefusedNamingTheField) {
    nlohmann::json meta = metadata_of(good_);
    meta["config"]["input_size"] = 200000;  // a flatten head of terabytes
    const fs::path huge = write("huge.bin", model_file_bytes(meta.dump(), std::string(100, 'x')));
    ASSERT_LT(fs::file_size(huge), 1000u);
    expect_bad_model(huge, "config.input_size");
    expect_one_line(huge);
}

TEST_F(BadModelFile, WeightsThatDoNotLoadAreRefusedBeforeTheNetworkIsBuilt) {
    // In range, and still a net of 2 GB (ResNet-50's flatten head at 1024 px).
    nlohmann::json meta = metadata_of(good_);
    meta["config"]["arch"] = "resnet50";
    meta["config"]["input_size"] = 1024;
    const fs::path big = write("big.bin", model_file_bytes(meta.dump(), std::string(100, 'x')));
    const double before = peak_rss_bytes();
    expect_bad_model(big, "weights do not load");
    expect_one_line(big);
    EXPECT_LT(peak_rss_bytes() - before, 512.0 * 1024 * 1024) << "the network was built first";
}

TEST_F(BadModelFile, WeightsThatAreNotFiniteAreRefusedNamingTheTensor) {
    auto net = sample_net("shallow", 64, true, "flatten");
    {
        torch::NoGradGuard no_grad;
        net->named_parameters()["head.dense2.bias"][3] = std::numeric_limits<float>::quiet_NaN();
    }
    boneage::save_model(dir_ / "nan.bin", net, sample_metadata());
    expect_bad_model(dir_ / "nan.bin", "head.dense2.bias");
    {
        torch::NoGradGuard no_grad;
        net->named_parameters()["head.dense2.bias"][3] = std::numeric_limits<float>::infinity();
    }
    boneage::save_model(dir_ / "inf.bin", net, sample_metadata());
    expect_bad_model(dir_ / "inf.bin", "head.dense2.bias");
}

TEST(ModelFile, TheBundledModelStillLoads) {
    const fs::path file = boneage::find_bundled_file("default.bin");
    if (file.empty()) GTEST_SKIP() << "no models/default.bin";
    const boneage::LoadedModel m = boneage::load_model(file);
    EXPECT_EQ(m.meta.config.arch, "ensemble");
    EXPECT_EQ(m.meta.config.members.size(), 4u);
    EXPECT_EQ(m.net->config().input_size, 320);
}

// ---- what a file's numbers mean, beside their layout ------------------------------------------

TEST(ModelFile, RecordsThePreprocessVersionTheModelVersionAndTheBuild) {
    ScratchDir dir("model_file_meaning");
    auto net = sample_net("shallow", 64, false, "flatten");
    boneage::save_model(dir / "m.bin", net, sample_metadata());
    const std::string bytes = read_bytes(dir / "m.bin");
    const nlohmann::json j = metadata_of(bytes);
    EXPECT_EQ(j["preprocess_version"], boneage::kPreprocessVersion) << j.dump();
    EXPECT_EQ(j["build_commit"], boneage::build_commit()) << j.dump();
    ASSERT_TRUE(j["model_version"].is_string()) << j.dump();
    const std::string version = j["model_version"];
    EXPECT_EQ(version.rfind("shallow-", 0), 0u) << version;
    EXPECT_EQ(version.size(), std::string("shallow-").size() + 12) << version;

    const boneage::LoadedModel loaded = boneage::load_model(dir / "m.bin");
    EXPECT_EQ(loaded.meta.model_version, version);
    EXPECT_EQ(loaded.meta.preprocess_version, boneage::kPreprocessVersion);
    EXPECT_EQ(loaded.meta.build_commit, boneage::build_commit());
    EXPECT_EQ(loaded.file, dir / "m.bin");
    EXPECT_EQ(loaded.sha256, boneage::sha256_hex(bytes.data(), bytes.size()));
    EXPECT_EQ(loaded.sha256, boneage::file_sha256(dir / "m.bin"));

    // The version follows the weights: others, another version; the same, the same.
    {
        torch::NoGradGuard no_grad;
        net->parameters().front().add_(0.01);
    }
    boneage::save_model(dir / "other.bin", net, sample_metadata());
    EXPECT_NE(boneage::load_model(dir / "other.bin").meta.model_version, version);
    boneage::save_model(dir / "again.bin", loaded.net, loaded.meta);
    EXPECT_EQ(metadata_of(read_bytes(dir / "again.bin"))["model_version"], version);

    // A model trained on other preprocessing keeps saying so through a load and a save.
    boneage::ModelMetadata meta = sample_metadata();
    meta.preprocess_version = boneage::kPreprocessVersion + 4;
    boneage::save_model(dir / "older.bin", net, meta);
    EXPECT_EQ(boneage::load_model(dir / "older.bin").meta.preprocess_version,
              boneage::kPreprocessVersion + 4);
}

// Files written before the meaning was recorded (the bundled ones among them) keep loading:
// preprocessing version 1, an unknown build, and the version worked out from the weights as a
// save would record it.
TEST(ModelFile, AFileFromBeforeTheMeaningWasRecordedReadsAsPreprocessVersionOne) {
    ScratchDir dir("model_file_older");
    boneage::save_model(dir / "m.bin", sample_net("shallow", 64, false, "gap"), sample_metadata());
    const std::string bytes = read_bytes(dir / "m.bin");
    nlohmann::json j = metadata_of(bytes);
    const std::string version = j["model_version"];
    for (const char* key : {"preprocess_version", "model_version", "build_commit"}) j.erase(key);
    write_bytes(dir / "old.bin", with_metadata(bytes, j.dump()));

    const boneage::LoadedModel old = boneage::load_model(dir / "old.bin");
    EXPECT_EQ(old.meta.preprocess_version, 1);
    EXPECT_EQ(old.meta.model_version, version);
    EXPECT_EQ(old.meta.build_commit, "unknown");
    EXPECT_EQ(old.sha256, boneage::file_sha256(dir / "old.bin"));
    EXPECT_NE(old.sha256, boneage::file_sha256(dir / "m.bin"));
}

// The test-time views a file records come back; a file without them, or written with one, has
// no key and reads as 1; a number out of range is refused naming the key.
TEST(ModelFile, RecordsItsTestTimeViewsOnlyWhenThereAreSeveral) {
    ScratchDir dir("model_file_views");
    boneage::ModelMetadata meta = sample_metadata();
    const boneage::BoneAgeNet net = sample_net("shallow", 64, false, "gap");
    boneage::save_model(dir / "one.bin", net, meta);
    EXPECT_FALSE(metadata_of(read_bytes(dir / "one.bin")).contains("views"));
    EXPECT_EQ(boneage::load_model(dir / "one.bin").meta.views, 1);
    meta.views = 3;
    boneage::save_model(dir / "three.bin", net, meta);
    const std::string bytes = read_bytes(dir / "three.bin");
    EXPECT_EQ(metadata_of(bytes)["views"], 3);
    EXPECT_EQ(boneage::load_model(dir / "three.bin").meta.views, 3);
    for (const nlohmann::json& bad : {nlohmann::json(0), nlohmann::json(boneage::kMaxViews + 1),
                                      nlohmann::json(2.5), nlohmann::json("3")}) {
        SCOPED_TRACE(bad.dump());
        nlohmann::json j = metadata_of(bytes);
        j["views"] = bad;
        write_bytes(dir / "bad.bin", with_metadata(bytes, j.dump()));
        expect_bad_model(dir / "bad.bin", "views must be a whole");
    }
}

TEST(ModelFile, ARecordedPreprocessVersionOrModelVersionOfTheWrongKindIsRefused) {
    ScratchDir dir("model_file_meaning_bad");
    boneage::save_model(dir / "m.bin", sample_net("shallow", 64, false, "gap"), sample_metadata());
    const std::string bytes = read_bytes(dir / "m.bin");
    struct Case { const char* key; nlohmann::json value; const char* words; };
    for (const Case& c : {Case{"preprocess_version", "one", "preprocess_version must be a whole"},
                          Case{"preprocess_version", 0, "preprocess_version must be a whole"},
                          Case{"model_version", 7, "model_version must be a string"},
                          Case{"build_commit", nullptr, "build_commit must be a string"}}) {
        SCOPED_TRACE(c.words);
        nlohmann::json j = metadata_of(bytes);
        j[c.key] = c.value;
        write_bytes(dir / "bad.bin", with_metadata(bytes, j.dump()));
        expect_bad_model(dir / "bad.bin", c.words);
    }
}

TEST(PreprocessVersion, AMismatchNamesTheFileAndBothVersions) {
    EXPECT_EQ(boneage::preprocess_version_mismatch("m.bin", boneage::kPreprocessVersion), "");
    const std::string why =
        boneage::preprocess_version_mismatch("dir/m.bin", boneage::kPreprocessVersion + 7);
    EXPECT_NE(why.find("dir/m.bin"), std::string::npos) << why;
    EXPECT_NE(why.find("preprocessing version " + std::to_string(boneage::kPreprocessVersion + 7)),
              std::string::npos)
        << why;
    EXPECT_NE(why.find("preprocessing version " + std::to_string(boneage::kPreprocessVersion)),
              std::string::npos)
        << why;
}

// The bundled model's members were trained on this build's preprocessing, and the file says
// so: no run that loads it warns of a mismatch. (A file that records no version reads as 1:
// AFileFromBeforeTheMeaningWasRecordedReadsAsPreprocessVersionOne.)
TEST(ModelFile, TheBundledModelRecordsThePreprocessingVersionItWasTrainedOn) {
    const fs::path file = boneage::find_bundled_file("default.bin");
    if (file.empty()) GTEST_SKIP() << "no models/default.bin";
    const boneage::LoadedModel m = boneage::load_model(file);
    EXPECT_EQ(metadata_of(read_bytes(file)).value("preprocess_version", 0),
              boneage::kPreprocessVersion);
    EXPECT_EQ(boneage::preprocess_version_mismatch(file, m.meta.preprocess_version), "");
    EXPECT_EQ(m.meta.model_version.rfind("ensemble-", 0), 0u) << m.meta.model_version;
    EXPECT_EQ(m.sha256.size(), 64u);
}

TEST(Ensemble, MembersOfDifferentPreprocessingVersionsAreRefused) {
    std::vector<boneage::LoadedModel> members(2);
    for (boneage::LoadedModel& m : members) {
        m.net = sample_net("shallow", 64, false, "gap");
        m.meta.config = m.net->config();
    }
    members[1].meta.preprocess_version = boneage::kPreprocessVersion + 1;
    try {
        boneage::combine_models(members);
        ADD_FAILURE() << "members of different preprocessing versions combined";
    } catch (const boneage::UsageError& e) {
        EXPECT_NE(std::string(e.what()).find("preprocessing version"), std::string::npos)
            << e.what();
    }
    members[1].meta.preprocess_version = boneage::kPreprocessVersion;
    EXPECT_EQ(boneage::combine_models(members).meta.preprocess_version,
              boneage::kPreprocessVersion);
}

TEST(DefaultModelPath, PrefersTheEnvironment) {
    ::setenv("BONEAGE_MODEL", "/tmp/some/model.bin", 1);
    EXPECT_EQ(boneage::default_model_path(), fs::path("/tmp/some/model.bin"));
    ::unsetenv("BONEAGE_MODEL");
    const fs::path found = boneage::default_model_path();
    if (!found.empty()) EXPECT_TRUE(fs::is_regular_file(found)) << found;
}

}  // namespace
