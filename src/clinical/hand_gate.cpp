// The hand gate's network, its file and its verdict. The network is small on purpose: a 64 px
// view of the whole frame is enough to see five fingers on a palm, and at about a millisecond
// per image the refusal step costs little beside preprocessing.
#include <fmt/format.h>
#include <torch/torch.h>

#include <algorithm>
#include <boneage/durable_file.hpp>
#include <boneage/error.hpp>
#include <boneage/model.hpp>
#include <boneage/hand_gate.hpp>
#include <cstdlib>
#include <sstream>
#include <opencv2/imgproc.hpp>

#include "clinical/gate_net.hpp"

namespace boneage {

constexpr int kGateFormatVersion = 1;

cv::Mat gate_view(const cv::Mat& grey) {
    if (grey.empty() || grey.channels() != 1)
        throw Error(ErrorKind::Usage, "the hand gate takes a non-empty grey image");
    const cv::Mat grey8 = grey.depth() == CV_8U ? grey : to_8bit(grey);
    cv::Mat view;
    cv::resize(grey8, view, cv::Size(kGateViewSize, kGateViewSize), 0, 0, cv::INTER_AREA);
    return view;
}

std::string refusal_reason(const std::string& kind) {
    if (kind == "too-small") return "image too small to hold a readable hand radiograph";
    if (kind == "colour") return "not a radiograph: a colour image";
    if (kind == "blank") return "not a radiograph: the image is blank";
    if (kind == "noise") return "not a radiograph: the image is noise";
    if (kind == "document") return "not a radiograph: a page of text or a drawing";
    if (kind == "chart") return "not a radiograph: a chart or plot";
    if (kind == "partial-hand")
        return "only part of a hand: a close-up of fingers, bones or the forearm";
    if (kind == "other-body-part") return "no hand found: another body part or object";
    return "not a whole hand radiograph";
}

HandGate::HandGate(std::uint64_t seed) {
    torch::manual_seed(seed);
    net_ = std::make_shared<GateNetImpl>();
    net_->eval();
}

namespace {

torch::Tensor views_to_tensor(const std::vector<cv::Mat>& views) {
    torch::Tensor x = torch::empty(
        {static_cast<std::int64_t>(views.size()), 1, kGateViewSize, kGateViewSize}, torch::kUInt8);
    std::uint8_t* dst = x.data_ptr<std::uint8_t>();
    const std::size_t pixels = kGateViewSize * kGateViewSize;
    for (std::size_t i = 0; i < views.size(); ++i) {
        const cv::Mat& v = views[i];
        if (v.type() != CV_8UC1 || v.rows != kGateViewSize || v.cols != kGateViewSize)
            throw Error(ErrorKind::Usage,
                        fmt::format("a gate view must be {0}x{0} 8-bit grey", kGateViewSize));
        const cv::Mat c = v.isContinuous() ? v : v.clone();
        std::copy_n(c.ptr<std::uint8_t>(), pixels, dst + i * pixels);
    }
    return x.to(torch::kFloat32).div_(64.0).sub_(2.0);
}

}  // namespace

std::vector<std::vector<float>> HandGate::probabilities(const std::vector<cv::Mat>& views) const {
    if (views.empty()) return {};
    c10::InferenceMode guard;
    const torch::Tensor p = torch::softmax(net_->forward(views_to_tensor(views)), 1).contiguous();
    std::vector<std::vector<float>> out(views.size());
    const float* data = p.data_ptr<float>();
    for (std::size_t i = 0; i < views.size(); ++i)
        out[i].assign(data + i * kGateClasses, data + (i + 1) * kGateClasses);
    return out;
}

GateVerdict HandGate::check(const Radiograph& radiograph) const {
    GateVerdict v;
    auto refuse = [&v](const std::string& kind, double score) {
        v.accepted = false;
        v.kind = kind;
        v.hand_score = score;
        v.reason = refusal_reason(kind);
        return v;
    };
    const cv::Mat& pixels = radiograph.pixels;
    if (pixels.empty() || std::min(pixels.cols, pixels.rows) < kMinRadiographSide) {
        GateVerdict small = refuse("too-small", 0.0);
        small.reason += fmt::format(" ({}x{} pixels; at least {} a side are needed)", pixels.cols,
                                    pixels.rows, kMinRadiographSide);
        return small;
    }
    if (radiograph.info.colourfulness > kMaxRadiographColour) return refuse("colour", 0.0);
    const std::vector<float> p = probabilities({gate_view(pixels)}).front();
    v.hand_score = p[0];
    if (v.hand_score >= threshold_) return v;
    const auto likeliest = std::max_element(p.begin() + 1, p.end()) - (p.begin() + 1);
    return refuse(to_string(kNegativeKinds[static_cast<std::size_t>(likeliest)]), p[0]);
}

void HandGate::save(const std::filesystem::path& file) const {
    nlohmann::json meta = meta_;
    meta["format"] = "boneage-hand-gate";
    meta["version"] = kGateFormatVersion;
    meta["view_size"] = kGateViewSize;
    meta["threshold"] = threshold_;
    nlohmann::json classes = {"hand"};
    for (NegativeKind k : kNegativeKinds) classes.push_back(to_string(k));
    meta["classes"] = classes;
    torch::serialize::OutputArchive archive;
    net_->save(archive);
    archive.write("gate_meta", c10::IValue(meta.dump()));
    std::ostringstream bytes;  // in memory first: LibTorch's file writer aborts on a full disk
    archive.save_to(bytes);
    write_file_atomically(file, bytes.str());
}

HandGate HandGate::load(const std::filesystem::path& file) {
    std::error_code ec;
    if (!std::filesystem::is_regular_file(file, ec))
        throw Error(ErrorKind::NotFound, file, "no such gate file");
    HandGate gate;
    nlohmann::json meta;
    try {
        torch::serialize::InputArchive archive;
        archive.load_from(file.string());
        c10::IValue text;
        if (!archive.try_read("gate_meta", text) || !text.isString())
            throw Error(ErrorKind::BadModel, file,
                        "not a boneage hand gate file (no gate metadata)");
        meta = nlohmann::json::parse(text.toStringRef());
        if (meta.value("format", "") != "boneage-hand-gate" ||
            meta.value("version", 0) != kGateFormatVersion ||
            meta.value("view_size", 0) != kGateViewSize)
            throw Error(
                ErrorKind::BadModel, file,
                fmt::format("a hand gate of another format or version ({} {}); this build reads "
                            "version {}",
                            meta.value("format", "?"), meta.value("version", 0),
                            kGateFormatVersion));
        gate.net_->load(archive);
    } catch (const Error&) {
        throw;
    } catch (const std::exception& e) {
        std::string what = e.what();
        throw Error(ErrorKind::BadModel, file,
                    "not a readable hand gate file: " + first_line(what));
    }
    const double threshold = meta.value("threshold", -1.0);
    if (!(threshold > 0.0 && threshold < 1.0))
        throw Error(ErrorKind::BadModel, file, "the gate's threshold is missing or outside (0, 1)");
    gate.threshold_ = threshold;
    gate.meta_ = std::move(meta);
    gate.net_->eval();
    return gate;
}

std::filesystem::path default_gate_path() {
    if (const char* env = std::getenv("BONEAGE_GATE"); env != nullptr && *env != '\0') return env;
    return find_bundled_file("hand_gate.bin");
}

}  // namespace boneage
