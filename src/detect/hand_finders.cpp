// The hand finders preprocess() takes for each crop detector: MediaPipe's landmarks, or
// MediaPipe with the classical finder behind it.
#include <boneage/hand_detector.hpp>

#include <fmt/format.h>

#include <map>
#include <mutex>

namespace boneage {

namespace {

// The models of a folder, loaded once per process: every finder of the process shares them.
std::shared_ptr<const MediaPipeHands> shared_models(const std::filesystem::path& dir) {
    static std::mutex mutex;
    static std::map<std::filesystem::path, std::shared_ptr<const MediaPipeHands>> loaded;
    const std::lock_guard<std::mutex> lock(mutex);
    auto& models = loaded[dir];
    if (!models) models = std::make_shared<const MediaPipeHands>(dir);
    return models;
}

HandBox no_hand(const cv::Mat& grey8, std::string why) {
    HandBox box;
    box.box = cv::Rect(0, 0, grey8.cols, grey8.rows);
    box.method = "full-frame";
    box.confidence = 0.0;
    box.warnings.push_back(std::move(why));
    return box;
}

class MediaPipeFinder final : public HandFinder {
public:
    explicit MediaPipeFinder(std::shared_ptr<const MediaPipeHands> models, bool fall_back)
        : models_(std::move(models)), fall_back_(fall_back) {}

    HandBox find(const cv::Mat& grey8, const PreprocessSettings& settings) const override {
        const std::optional<HandLandmarks> hand = models_->find(grey8, settings.landmark_padding);
        const float presence = hand ? hand->presence : 0.0f;
        if (hand && presence >= settings.landmark_min_score) {
            HandBox box;
            box.box = landmark_box(*hand, grey8.size(), settings.landmark_forearm);
            if (!box.box.empty()) {
                box.method = "mediapipe";
                box.confidence = presence;
                return box;
            }
        }
        const std::string why =
            hand ? fmt::format("MediaPipe's hand presence {:.2f} is below {:.2f}", presence,
                               settings.landmark_min_score)
                 : std::string("MediaPipe's palm detector found no palm");
        if (!fall_back_) return no_hand(grey8, "no hand found (" + why + "); kept the whole image");
        HandBox box = find_hand(grey8, settings);
        box.warnings.insert(box.warnings.begin(), why + "; the classical finder's box");
        return box;
    }

private:
    std::shared_ptr<const MediaPipeHands> models_;
    bool fall_back_;
};

}  // namespace

std::shared_ptr<const HandFinder> hand_finder_for(const PreprocessSettings& settings) {
    if (!settings.crop_hand || settings.detector == CropDetector::classical)
        return std::shared_ptr<const HandFinder>(&classical_hand_finder(), [](const HandFinder*) {});
    return std::make_shared<const MediaPipeFinder>(shared_models(mediapipe_model_dir()),
                                                   settings.detector == CropDetector::automatic);
}

}  // namespace boneage
