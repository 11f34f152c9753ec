// The hand gate: whether an input is a whole hand radiograph, before any bone age is given.
// Cheap rules first (too small, in colour), then a small network on a 64 x 64 view of the whole
// frame that tells a hand from the negatives of negatives.hpp (blank, noise, documents, charts,
// close-ups of part of a hand, other body parts). Its verdict names the likeliest kind of
// non-hand, so a refusal says why in words a person understands.
//
//   boneage::HandGate gate = boneage::HandGate::load(boneage::default_gate_path());
//   boneage::GateVerdict v = gate.check(boneage::read_radiograph("upload.png"));
//   if (!v.accepted) std::cerr << "rejected: " << v.reason << '\n';
#pragma once

#include <boneage/image.hpp>
#include <boneage/negatives.hpp>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <nlohmann/json.hpp>
#include <opencv2/core.hpp>
#include <string>
#include <vector>

namespace boneage {

// Side of the square the network sees: the whole frame squashed, as RSNA's thumbnails are.
constexpr int kGateViewSize = 64;
// No hand radiograph worth reading is smaller than this on its shorter side.
constexpr int kMinRadiographSide = 128;
// Above this colourfulness (colourfulness() below) an image is a photograph or a document.
constexpr double kMaxRadiographColour = 12.0;

struct GateVerdict {
    bool accepted = true;
    double hand_score = 1.0;  // the network's probability of a whole hand; 0 when a rule refused
    std::string kind;         // when refused: "too-small", "colour", or a NegativeKind's name
    std::string reason;       // when refused: in words, for the person who sent the file
};

// The gate's input: `grey` (8 or 16 bits) to 8 bits, squashed to kGateViewSize a side.
cv::Mat gate_view(const cv::Mat& grey);

// The refusal for each kind the gate knows, in words.
std::string refusal_reason(const std::string& kind);

struct GateNetImpl;  // the network (hand_gate.cpp)

class HandGate {
public:
    // An untrained gate (random weights from `seed`), to be trained.
    explicit HandGate(std::uint64_t seed = 1);
    // Reads a gate file written by save(). Throws boneage::Error (BadModel) naming the file
    // when it is not one.
    static HandGate load(const std::filesystem::path& file);
    // Writes weights and metadata, through a temporary file renamed into place.
    void save(const std::filesystem::path& file) const;

    // Rules, then the network. Thread-safe: the network only reads its weights.
    GateVerdict check(const Radiograph& radiograph) const;
    // The network's class probabilities for views (kGateViewSize square, CV_8UC1): column 0 a
    // hand, column 1 + k the negative kind kNegativeKinds[k].
    std::vector<std::vector<float>> probabilities(const std::vector<cv::Mat>& views) const;

    double threshold() const { return threshold_; }
    void set_threshold(double t) { threshold_ = t; }
    // What the file records about how the gate was trained and how it scored.
    nlohmann::json& meta() { return meta_; }
    const nlohmann::json& meta() const { return meta_; }
    std::shared_ptr<GateNetImpl> net() const { return net_; }

private:
    std::shared_ptr<GateNetImpl> net_;
    double threshold_ = 0.5;  // a hand score below this is refused
    nlohmann::json meta_ = nlohmann::json::object();
};

// models/hand_gate.bin beside the bundled model ($BONEAGE_GATE overrides); empty when absent.
std::filesystem::path default_gate_path();

struct GateTrainingOptions {
    int epochs = 12;
    int batch = 128;
    double learning_rate = 1e-3;
    std::uint64_t seed = 1;
    int negatives_per_kind = 2000;  // drawn once; augmented anew each epoch
    // The share of hands also shown as boneage's preprocessing crops them (tight, CLAHE,
    // letterboxed): a whole hand cut close is still a whole hand.
    double cropped_share = 0.5;
    double validation_fraction = 0.1;
    // The share of validation hands the threshold may refuse; it is set at that quantile of
    // their scores, never above 0.5.
    double refused_hands = 0.002;
    std::function<void(int epoch, double loss)> on_epoch;  // after each epoch
};

struct GateTrainingReport {
    int hands_train = 0, hands_validation = 0;
    std::vector<double> epoch_loss;
    double threshold = 0.5;
    double hands_refused = 0.0;  // validation hands below the threshold
    std::vector<std::pair<std::string, double>> negatives_refused;  // per kind, validation
};

// Trains `gate` on whole hand radiographs `hands` (8-bit grey, any size) against negatives
// drawn by make_negative (close-ups cut from the training hands), sets its threshold on the
// validation hands, and records the report in its meta(). Hands are split by index.
GateTrainingReport train_hand_gate(HandGate& gate, const std::vector<cv::Mat>& hands,
                                   const GateTrainingOptions& options = {});

}  // namespace boneage
