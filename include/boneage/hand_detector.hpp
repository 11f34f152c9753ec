// MediaPipe's hand detector run natively: the palm detector finds the hand, the landmark model
// places its 21 points inside the turned square around the palm, and the paper's crop is the
// box of those points plus a margin. The networks are MediaPipe's own TFLite files (Apache-2.0;
// scripts/fetch-mediapipe-models puts them in mediapipe_model_dir()), read and run on LibTorch.
//
//   boneage::PreprocessSettings s;
//   s.detector = boneage::CropDetector::mediapipe;
//   auto finder = boneage::hand_finder_for(s);     // loads the models once per process
//   boneage::Preprocessed p = boneage::preprocess(radiograph, s, *finder);
//   // p.hand.method: "mediapipe", or "full-frame" when no hand was found
#pragma once

#include <boneage/preprocess.hpp>

#include <opencv2/core.hpp>

#include <array>
#include <filesystem>
#include <memory>
#include <optional>

namespace boneage {

// Where the four models are looked for: $BONEAGE_MEDIAPIPE_DIR, else
// ${XDG_CACHE_HOME:-$HOME/.cache}/boneage/mediapipe (where scripts/fetch-mediapipe-models,
// run by scripts/install-deps, puts them).
std::filesystem::path mediapipe_model_dir();

// One hand as MediaPipe sees it, in pixels of the image it was found in.
struct HandLandmarks {
    // 0 wrist; 1-4 thumb; 5-8 index; 9-12 middle; 13-16 ring; 17-20 little finger (base to tip).
    std::array<cv::Point2f, 21> points{};
    float presence = 0;    // the landmark model's hand presence, 0..1
    float palm_score = 0;  // the palm detector's score, 0..1
    std::array<cv::Point2f, 4> region{};  // the turned square the landmarks were read in
};

enum class MediaPipeModel { full, lite };

// The palm detector and the landmark model, loaded once; find() is const and thread-safe.
class MediaPipeHands {
public:
    // Throws boneage::Error (NotFound) naming a missing model file and how to fetch it, or
    // BadData for a file that is not the expected model.
    explicit MediaPipeHands(const std::filesystem::path& dir = mediapipe_model_dir(),
                            MediaPipeModel model = MediaPipeModel::full);
    ~MediaPipeHands();
    MediaPipeHands(MediaPipeHands&&) noexcept;
    MediaPipeHands& operator=(MediaPipeHands&&) noexcept;

    // The most confident hand in an 8-bit grey or BGR image, or nothing when the palm detector
    // finds none. The landmarks are read whatever their presence score: the caller decides.
    // `padding` > 0 first surrounds the image with a black border of that fraction of its longer
    // side on every side (the palm detector misses hands that fill the frame, as a radiograph's
    // hand does); the points are still in the image's own pixels.
    std::optional<HandLandmarks> find(const cv::Mat& image, double padding = 0.0) const;

private:
    struct Models;
    std::unique_ptr<Models> models_;
};

// The box around the 21 landmarks and, when `forearm` > 0, a point that far beyond the wrist
// along the hand's axis (wrist to the middle finger's base), in hand lengths (wrist to the
// middle finger's tip): the wrist landmark sits on the carpus, and bone age is read on the
// radius and ulna too. Clamped to an image of `size`; the crop's margin is added by
// preprocess() (PreprocessSettings::landmark_margin).
cv::Rect landmark_box(const HandLandmarks& hand, cv::Size size, double forearm = 0.0);

// The finder for the settings' detector: the classical finder, MediaPipe's (models loaded on
// first use and shared by the process), or auto (MediaPipe when its hand presence reaches
// landmark_min_score, else the classical finder, with a warning saying why). Throws
// boneage::Error when MediaPipe is asked for and its models cannot be loaded.
std::shared_ptr<const HandFinder> hand_finder_for(const PreprocessSettings& settings);

}  // namespace boneage
