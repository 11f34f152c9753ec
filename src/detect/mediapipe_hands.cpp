// MediaPipe Hands on one image: palm detection, the hand region, the 21 landmarks, as the
// palm_detection and hand_landmark graphs of MediaPipe run them on the CPU.
#include <boneage/error.hpp>
#include <boneage/hand_detector.hpp>

#include "detect/palm_detection.hpp"
#include "detect/tflite_graph.hpp"

#include <fmt/format.h>
#include <opencv2/imgproc.hpp>
#include <torch/torch.h>

#include <cmath>
#include <cstdlib>
#include <vector>

namespace boneage {

namespace fs = std::filesystem;
using detect::TfliteGraph;

fs::path mediapipe_model_dir() {
    if (const char* dir = std::getenv("BONEAGE_MEDIAPIPE_DIR"); dir && *dir) return dir;
    if (const char* cache = std::getenv("XDG_CACHE_HOME"); cache && *cache)
        return fs::path(cache) / "boneage" / "mediapipe";
    if (const char* home = std::getenv("HOME"); home && *home)
        return fs::path(home) / ".cache" / "boneage" / "mediapipe";
    return fs::path(".cache") / "boneage" / "mediapipe";
}

namespace {

constexpr int kPalmInput = 192;
constexpr int kLandmarkInput = 224;

TfliteGraph load_model(const fs::path& dir, const std::string& name) {
    const fs::path file = dir / name;
    if (!fs::exists(file))
        throw Error(ErrorKind::NotFound, file,
                    "MediaPipe's model is missing: scripts/fetch-mediapipe-models fetches it "
                    "(or set BONEAGE_MEDIAPIPE_DIR to the folder that holds it)");
    return TfliteGraph::load(file);
}

// The part of `image` under the quadrilateral `corners` (bottom-left, top-left, top-right,
// bottom-right) warped onto a side x side square, then an RGB float tensor 1 x side x side x 3
// in [0, 1], as MediaPipe's ImageToTensor makes it. The corners are in continuous pixel
// coordinates (the image spans 0..width); mapping them with both point sets moved half a pixel
// makes pixel centres land on pixel centres, as MediaPipe's GPU converter samples (its web build
// uses that one): OpenCV's warp alone would put index 0 on the edge, and the landmarks then
// move by a pixel or more.
torch::Tensor image_tensor(const cv::Mat& image, const std::array<cv::Point2f, 4>& corners,
                           int side, int border) {
    const float s = static_cast<float>(side);
    const cv::Point2f half(0.5f, 0.5f);
    const cv::Point2f source[4] = {corners[0] - half, corners[1] - half, corners[2] - half,
                                   corners[3] - half};
    const cv::Point2f target[4] = {cv::Point2f(0, s) - half, cv::Point2f(0, 0) - half,
                                   cv::Point2f(s, 0) - half, cv::Point2f(s, s) - half};
    const cv::Mat projection = cv::getPerspectiveTransform(source, target);
    cv::Mat warped;
    cv::warpPerspective(image, warped, projection, cv::Size(side, side), cv::INTER_LINEAR,
                        border, cv::Scalar::all(0));
    cv::Mat rgb;
    if (warped.channels() == 1)
        cv::cvtColor(warped, rgb, cv::COLOR_GRAY2RGB);
    else
        cv::cvtColor(warped, rgb, cv::COLOR_BGR2RGB);
    cv::Mat real;
    rgb.convertTo(real, CV_32FC3, 1.0 / 255.0);
    return torch::from_blob(real.data, {1, side, side, 3}, torch::kFloat32).clone();
}

}  // namespace

struct MediaPipeHands::Models {
    TfliteGraph palm;
    TfliteGraph landmarks;
    std::vector<detect::Anchor> anchors = detect::ssd_anchors();
};

MediaPipeHands::MediaPipeHands(const fs::path& dir, MediaPipeModel model) {
    const std::string variant = model == MediaPipeModel::full ? "full" : "lite";
    models_ = std::make_unique<Models>(Models{
        load_model(dir, "palm_detection_" + variant + ".tflite"),
        load_model(dir, "hand_landmark_" + variant + ".tflite")});
    const auto& out = models_->palm.outputs();
    const auto anchors = static_cast<int64_t>(models_->anchors.size());
    if (out.size() != 2 || out[0].shape.size() != 3 || out[0].shape[1] != anchors ||
        out[0].shape[2] != 18)
        throw Error(ErrorKind::BadData, dir / ("palm_detection_" + variant + ".tflite"),
                    fmt::format("expected a palm detector with {} anchors of 18 values",
                                models_->anchors.size()));
    if (models_->landmarks.outputs().size() < 2)
        throw Error(ErrorKind::BadData, dir / ("hand_landmark_" + variant + ".tflite"),
                    "expected a hand landmark model (landmarks, then hand presence)");
}

MediaPipeHands::~MediaPipeHands() = default;
MediaPipeHands::MediaPipeHands(MediaPipeHands&&) noexcept = default;
MediaPipeHands& MediaPipeHands::operator=(MediaPipeHands&&) noexcept = default;

std::optional<HandLandmarks> MediaPipeHands::find(const cv::Mat& image, double padding) const {
    if (image.type() != CV_8UC1 && image.type() != CV_8UC3)
        throw UsageError(fmt::format("MediaPipe reads 8-bit grey or BGR images, got type {}",
                                     image.type()));
    if (image.empty()) return std::nullopt;
    if (padding > 0) {
        const int border = static_cast<int>(std::lround(padding * std::max(image.cols, image.rows)));
        cv::Mat framed;
        cv::copyMakeBorder(image, framed, border, border, border, border, cv::BORDER_CONSTANT,
                           cv::Scalar::all(0));
        std::optional<HandLandmarks> hand = find(framed);
        if (hand) {
            const cv::Point2f offset(static_cast<float>(border), static_cast<float>(border));
            for (cv::Point2f& p : hand->points) p -= offset;
            for (cv::Point2f& p : hand->region) p -= offset;
        }
        return hand;
    }
    torch::InferenceMode guard;
    const cv::Size size = image.size();
    // The whole image, letterboxed into the detector's square with black bars.
    const float side = static_cast<float>(std::max(size.width, size.height));
    std::array<cv::Point2f, 4> whole;
    cv::RotatedRect({size.width / 2.0f, size.height / 2.0f}, {side, side}, 0).points(whole.data());
    const std::vector<torch::Tensor> palm_out =
        models_->palm.run({image_tensor(image, whole, kPalmInput, cv::BORDER_CONSTANT)});
    const torch::Tensor boxes = palm_out[0].contiguous();
    const torch::Tensor logits = palm_out[1].contiguous();
    std::vector<detect::PalmDetection> palms = detect::weighted_nms(detect::decode_palms(
        boxes.data_ptr<float>(), logits.data_ptr<float>(), models_->anchors));
    if (palms.empty()) return std::nullopt;
    const detect::PalmDetection palm =
        detect::remove_letterbox(palms.front(), detect::square_letterbox(size));

    const detect::HandRegion region = detect::hand_region(palm, size);
    HandLandmarks hand;
    hand.palm_score = palm.score;
    hand.region = detect::region_corners(region, size);
    const std::vector<torch::Tensor> out = models_->landmarks.run(
        {image_tensor(image, hand.region, kLandmarkInput, cv::BORDER_REPLICATE)});
    const torch::Tensor points = out[0].reshape({-1}).contiguous();
    hand.presence = out[1].reshape({-1})[0].item<float>();
    const float* p = points.data_ptr<float>();
    const float c = std::cos(region.rotation), s = std::sin(region.rotation);
    for (int i = 0; i < 21; ++i) {
        // From the model's square to the image: MediaPipe's LandmarkProjection.
        const float x = p[3 * i] / kLandmarkInput - 0.5f, y = p[3 * i + 1] / kLandmarkInput - 0.5f;
        const float nx = (c * x - s * y) * region.width + region.x_center;
        const float ny = (s * x + c * y) * region.height + region.y_center;
        hand.points[i] = {nx * size.width, ny * size.height};
    }
    return hand;
}

cv::Rect landmark_box(const HandLandmarks& hand, cv::Size size, double forearm) {
    std::vector<cv::Point2f> points(hand.points.begin(), hand.points.end());
    const cv::Point2f wrist = hand.points[0], axis = hand.points[9] - wrist;
    const double axis_length = cv::norm(axis), hand_length = cv::norm(hand.points[12] - wrist);
    if (forearm > 0 && axis_length > 0)
        points.push_back(wrist - axis * static_cast<float>(forearm * hand_length / axis_length));
    float x0 = wrist.x, y0 = wrist.y, x1 = x0, y1 = y0;
    for (const cv::Point2f& p : points) {
        x0 = std::min(x0, p.x);
        y0 = std::min(y0, p.y);
        x1 = std::max(x1, p.x);
        y1 = std::max(y1, p.y);
    }
    const cv::Rect box(cv::Point(static_cast<int>(std::floor(x0)), static_cast<int>(std::floor(y0))),
                       cv::Point(static_cast<int>(std::ceil(x1)) + 1, static_cast<int>(std::ceil(y1)) + 1));
    return box & cv::Rect(0, 0, size.width, size.height);
}

}  // namespace boneage
