// The paper's regressors (Section V) in LibTorch, and the model file that carries one.
//
//   boneage::ModelConfig c;  c.arch = "resnet50";  c.use_sex = true;
//   boneage::BoneAgeNet net = boneage::make_model(c);
//   torch::Tensor months = net->forward(images, sex);     // images N x 1 x 320 x 320 in [0,1]
//   boneage::save_model("m.bin", net, meta);  auto m = boneage::load_model("m.bin");
#pragma once

#include <boneage/preprocess.hpp>

#include <nlohmann/json.hpp>
#include <torch/torch.h>

#include <cstdint>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

namespace boneage {

struct ModelConfig {
    // "shallow" | "resnet18" | "resnet50" | "inceptionv4", or "ensemble": the mean of the
    // months of `members`, each a whole model of its own.
    std::string arch = "shallow";
    std::string head = "flatten";   // "flatten" (the paper's) | "gap" (global average pooling)
                                    // | "mean" (an ensemble's)
    bool use_sex = false;           // feed sex (1 male, 0 female) into the head
    int input_size = 320;           // side of the square input, pixels
    // The network's linear output y is read as months = y * label_scale + label_offset, so a
    // freshly initialised head starts near the training mean; train sets both from its data.
    double label_offset = 0.0;
    double label_scale = 1.0;
    // The net's first step: images become (x - input_mean) / input_std (x in [0, 1]); train's
    // --input-norm dataset sets them from the training pixels. The defaults, 0 and 1, leave the
    // images as they are; files that predate the fields omit them and so read as the defaults.
    double input_mean = 0.0;
    double input_std = 1.0;
    std::vector<ModelConfig> members;  // an ensemble's; empty for every other arch
};

void to_json(nlohmann::json& j, const ModelConfig& c);
void from_json(const nlohmann::json& j, ModelConfig& c);

// Every architecture implements this. forward() takes images N x 1 x S x S (float in [0,1])
// and sex N (float, 1 male, 0 female; ignored unless config().use_sex) and returns N months.
class BoneAgeNetImpl : public torch::nn::Module {
public:
    explicit BoneAgeNetImpl(ModelConfig config) : config_(std::move(config)) {}
    virtual torch::Tensor forward(const torch::Tensor& images, const torch::Tensor& sex) = 0;
    // The weights that carry the paper's L2 0.01 (a Keras kernel_regularizer on one named
    // dense layer); the training loss adds 0.01 x the sum of their squares.
    virtual std::vector<torch::Tensor> l2_weights() = 0;
    const ModelConfig& config() const { return config_; }

    // The trunk and the head apart, so that Grad-CAM (heatmap.hpp) reaches the last
    // convolutional stage: forward(images, sex) computes head(features(images), sex).
    // features() returns that stage's activations, N x C x h x w; head() returns N months.
    // A net without one convolutional trunk (an ensemble: see ensemble_members) says false
    // here, and both throw UsageError.
    virtual bool has_features() const { return false; }
    virtual torch::Tensor features(const torch::Tensor& images);
    virtual torch::Tensor head(const torch::Tensor& features, const torch::Tensor& sex);

protected:
    ModelConfig config_;
};
using BoneAgeNet = std::shared_ptr<BoneAgeNetImpl>;

// Builds a freshly initialised model. Throws boneage::UsageError for an unknown arch or head,
// and for an ensemble without members, of members that are ensembles, or of members that
// differ in input size.
BoneAgeNet make_model(const ModelConfig& config);

// The configuration of the ensemble of `members`: arch "ensemble", head "mean", their common
// input size, sex used when any member uses it. Throws UsageError as make_model does.
ModelConfig ensemble_config(std::vector<ModelConfig> members);

// An ensemble's member nets in order (registered as "member0", "member1", ...); for any other
// model, the model itself alone.
std::vector<BoneAgeNet> ensemble_members(const BoneAgeNet& net);

// Number of trainable parameters.
std::int64_t parameter_count(const torch::nn::Module& module);

// The one place where images become tensors: `count` images of size x size uint8 pixels,
// row-major, to a float tensor count x 1 x size x size in [0,1].
torch::Tensor images_to_tensor(const std::vector<const std::uint8_t*>& images, int size);

// Resizes a batch N x 1 x S x S to N x 1 x size x size (bilinear, antialiased when shrinking),
// as training does when the model's input size differs from the cache's; prediction must do
// the same. Returns the batch unchanged when S == size.
torch::Tensor resize_batch(const torch::Tensor& images, int size);

// The input normalisation of `config` applied to images N x 1 x S x S in [0, 1]: the images
// themselves when it is the identity (mean 0, SD 1). Every architecture's forward() and
// features() begin with it, and the fused inference path applies it before its trunk.
torch::Tensor normalise_input(const ModelConfig& config, const torch::Tensor& images);

// Everything a model file records beside the weights.
struct ModelMetadata {
    ModelConfig config;
    PreprocessSettings preprocess;
    nlohmann::json training = nlohmann::json::object();    // data summary, recipe, epochs, ...
    nlohmann::json validation = nlohmann::json::object();  // metrics on the validation split
    // How the file stores the parameters: "float32"; "float16" for a file half the size; or
    // "int8" for a quarter (each convolution's and dense layer's weights as int8 with a
    // float32 scale per output channel, vectors as float16). Buffers such as batch-norm
    // statistics stay float32. Whatever it is, load_model returns a float32 net; a file without
    // the field is float32.
    std::string weights_dtype = "float32";
    // The preprocessing version (kPreprocessVersion, preprocess.hpp) of the images the weights
    // were trained on. A file written before it was recorded reads as 1.
    int preprocess_version = kPreprocessVersion;
    // The model's own version: its architecture and the first 12 hex digits of the SHA-256 of
    // its stored weights ("resnet18-3f2a9c1b7d4e"), so equal versions mean equal weights.
    // save_model records it, working it out afresh whatever is set here; load_model reads it,
    // and works it out the same way for a file written before it was recorded.
    std::string model_version;
    // The commit of the build that wrote the file (build_info.hpp): save_model records this
    // build's; load_model reads the file's, "unknown" for a file written before it was recorded.
    std::string build_commit;
    // The test-time views (tta_views, predict.hpp) that prediction averages with this model
    // unless told otherwise: a number chosen with the weights, by cross-validation, and part of
    // what its measured accuracy means. 1 (the image alone) unless set; written to the file
    // only when it is not 1, so a file without it reads as 1.
    int views = 1;
};

// The most test-time views there are (tta_views) and that a model file may record.
constexpr int kMaxViews = 7;

struct LoadedModel {
    BoneAgeNet net;
    ModelMetadata meta;
    std::filesystem::path file;  // the file load_model read; empty for a model made in memory
    std::string sha256;          // that file's SHA-256 (64 hex digits), computed as it was read
};

// One file: "BONEAGE-MODEL\0\0\0" (16 bytes), u32 format version, u64 metadata length,
// metadata JSON, then the LibTorch archive of the weights and buffers. Written atomically.
// Besides `meta` the metadata records model_version (worked out from the weights written) and
// build_commit (this build's), each under its own name.
// Saving a loaded float32 or float16 model again gives the same bytes (an int8 one, weights
// within one int8 step of the first). The parameters are stored in meta.weights_dtype; throws
// boneage::Error (BadModel) naming the file when that is not "float32", "float16" or "int8",
// or a parameter stored as float16 lies outside its range.
constexpr std::uint32_t kModelFormatVersion = 1;
void save_model(const std::filesystem::path& file, const BoneAgeNet& net, const ModelMetadata& meta);

// Throws boneage::Error (BadModel) naming the file when it is not a boneage model, is of
// another format version, is truncated, names an unknown weights dtype, or its weights do not
// match its architecture or are not finite; and, before the weights are read or the network
// is built, when a metadata key is missing (every key of config and preprocess; training,
// validation and weights_dtype may be absent) or out of bounds (input and letterbox sizes
// 32 to 1024, label offset within +-1200 months, label scale in (0, 1200], 1 to 16 members
// for an ensemble), naming the field ("config.members[1].input_size"). Every reason is one
// line. The net is float32 whatever the file's weights dtype. The result records the file and
// its SHA-256; meta.preprocess_version may differ from this build's (see
// preprocess_version_mismatch in preprocess.hpp: the caller decides whether that is fatal).
LoadedModel load_model(const std::filesystem::path& file);

// One model that averages `members` (loaded model files): an "ensemble" net holding a copy of
// each member's weights, with the members' common preprocessing, and metadata that records each
// member's training and validation under training.members. Stored as `weights_dtype`. Throws
// UsageError when there are no members, a member is itself an ensemble, or the members differ
// in preprocessing settings or input size (they must see the same image).
LoadedModel combine_models(const std::vector<LoadedModel>& members,
                           const std::string& weights_dtype = "float32");

// The bundled default model: $BONEAGE_MODEL if set, else find_bundled_file("default.bin").
// Empty path when none is found.
std::filesystem::path default_model_path();

// A file shipped in models/ (the bundled model, the hand gate): the first that exists of
// <dir>/models/<name> beside the executable, <prefix>/share/boneage/models/<name> under its
// install prefix (the executable in <prefix>/bin), and models/<name> in the source tree it
// was built from, so an installed copy never reads the build machine's files. Empty path when
// none does.
std::filesystem::path find_bundled_file(const std::string& name);

}  // namespace boneage
