// The paper's preprocessing (Section IV): hand crop -> CLAHE -> letterbox to a black square
// -> one 8-bit channel. Each step is a pure function; all parameters live in
// PreprocessSettings, which a model file records so prediction repeats training exactly.
//
//   boneage::PreprocessSettings s;                       // the documented defaults
//   boneage::Preprocessed p = boneage::preprocess(boneage::read_radiograph("hand.png"), s);
//   cv::imwrite("hand_320.png", p.image);                // 320x320 CV_8UC1
#pragma once

#include <boneage/image.hpp>

#include <nlohmann/json_fwd.hpp>
#include <opencv2/core.hpp>

#include <filesystem>
#include <string>
#include <vector>

namespace boneage {

// Who finds the hand when the radiograph is cropped (PreprocessSettings::crop_hand).
enum class CropDetector {
    classical,  // the threshold-and-outline finder of find_hand()
    mediapipe,  // MediaPipe's palm detector and 21 hand landmarks (the paper's crop)
    automatic,  // MediaPipe when it finds a hand with confidence, else the classical finder
};

struct PreprocessSettings {
    int output_size = 320;        // side of the square letterbox, pixels (the paper: 320)
    double clahe_clip_limit = 2.0;  // CLAHE contrast limit (OpenCV's clipLimit), per tile
    int clahe_tile_grid = 8;      // CLAHE tiles per side
    double crop_margin = 0.04;    // margin added around the hand box, fraction of its longer side
    bool crop_hand = true;        // false skips the crop and keeps the whole frame
    int detect_size = 512;        // the hand is searched on a copy whose longer side is this
    CropDetector detector = CropDetector::classical;  // who finds the hand (--crop)
    double landmark_margin = 0.1;     // MediaPipe crop: margin around the landmarks' box,
                                      // fraction of its longer side
    double landmark_forearm = 0.35;   // MediaPipe crop: the box reaches this far past the wrist
                                      // landmark, in hand lengths (the radius and ulna; 0: the
                                      // 21 points alone)
    double landmark_padding = 0.5;    // MediaPipe: black border around the film before palm
                                      // detection, fraction of its longer side per side
    double landmark_min_score = 0.5;  // MediaPipe: hand presence below this finds no hand
};

// "classical", "mediapipe" or "auto": the --crop words and the JSON form.
const char* to_string(CropDetector detector);
// The detector a --crop word names; UsageError for another word.
CropDetector crop_detector_from_string(const std::string& word);

// The version of the preprocessing algorithm: what preprocess() makes of a radiograph for given
// settings. Bump it with any change to the code that changes its output (the hand finder, the
// crop, CLAHE, the letterbox), so that models and caches made before the change are told apart
// from this build's. Model files and caches record it; files written before it was recorded
// read as version 1.
//   1  CLAHE on the crop at the film's own resolution, then the letterbox (the bundled
//      models/default.bin of two members, before the cross-validated one, was trained on it)
//   2  the crop brought to the output size first, then CLAHE, then the bars: the contrast
//      tiles see the same detail whatever the film's resolution
constexpr int kPreprocessVersion = 2;

// How the settings crop the radiograph: "threshold" (the classical hand finder, then the
// margin), "mediapipe" (the box of MediaPipe's landmarks, then their margin), "auto" (either,
// per image) or "none" (the whole frame). Each image's own HandBox::method says what happened
// to it ("threshold", "mediapipe", or "full-frame" where no hand was found).
inline const char* crop_method(const PreprocessSettings& s) {
    if (!s.crop_hand) return "none";
    switch (s.detector) {
        case CropDetector::mediapipe: return "mediapipe";
        case CropDetector::automatic: return "auto";
        case CropDetector::classical: break;
    }
    return "threshold";
}

// Why images prepared by this build may differ from those `file` (a model or a cache) was made
// from: one line naming the file and both preprocessing versions, or an empty string when
// `file_version` is kPreprocessVersion.
std::string preprocess_version_mismatch(const std::filesystem::path& file, int file_version);

// Throws UsageError naming the first setting out of range: output_size outside [8, 4096],
// detect_size outside [16, 8192], crop_margin or landmark_margin outside [0, 1],
// landmark_forearm outside [0, 2], landmark_padding outside [0, 2],
// landmark_min_score outside [0, 1], clip limit outside (0, 1000], tile grid outside [1, 64].
void validate(const PreprocessSettings& s);

// JSON with one key per field, named as the fields. from_json keeps the default for a
// missing key and throws boneage::Error (BadData) for a value out of range.
void to_json(nlohmann::json& j, const PreprocessSettings& s);
void from_json(const nlohmann::json& j, PreprocessSettings& s);

// Where the hand is, in original pixels, and how sure the finder is.
struct HandBox {
    cv::Rect box;                 // x, y, w, h in the original image
    std::string method;           // "threshold" for the classical finder, "mediapipe" for the box
                                  // of MediaPipe's landmarks, "full-frame" if none found,
                                  // "preprocessed" for an image already preprocess()'s output
    double confidence = 0.0;      // 0..1
    std::vector<std::string> warnings;  // e.g. "no hand found; kept the whole image"
};

// Finds the hand in an 8-bit grey radiograph (bone and soft tissue bright). Never throws on
// a valid image: when no hand is found the box is the whole image, method "full-frame",
// confidence 0 and a warning says so.
HandBox find_hand(const cv::Mat& grey8, const PreprocessSettings& settings = {});

// What finds the hand for preprocess(): the classical finder below, or MediaPipe's detector
// (boneage/hand_detector.hpp: hand_finder_for(), which runs networks on LibTorch).
class HandFinder {
public:
    virtual ~HandFinder() = default;
    // The hand in an 8-bit grey radiograph; never throws on a valid image (see find_hand).
    virtual HandBox find(const cv::Mat& grey8, const PreprocessSettings& settings) const = 0;
};

// The classical finder as a HandFinder: find_hand().
const HandFinder& classical_hand_finder();

// The region preprocess() crops: `hand` grown on every side by `margin` times its longer
// side, clamped to an image of `image_size`.
cv::Rect crop_box(const cv::Rect& hand, cv::Size image_size, double margin);

// Contrast-limited adaptive histogram equalisation with the settings' clip limit and grid.
cv::Mat apply_clahe(const cv::Mat& grey8, const PreprocessSettings& settings = {});

// Scales `grey8` to fit a size x size square keeping its aspect ratio exactly, centred on
// black. The scale is min(size/w, size/h).
cv::Mat letterbox(const cv::Mat& grey8, int size);

struct Preprocessed {
    cv::Mat image;                // output_size x output_size, CV_8UC1
    HandBox hand;
};

// The margin preprocess() grows a hand box of `method` by: landmark_margin for "mediapipe",
// crop_margin otherwise.
double crop_margin_for(const std::string& method, const PreprocessSettings& settings);

// The whole chain on one radiograph: to 8 bits, find the hand, crop with margin, CLAHE,
// letterbox. An image that is already its output for `settings` (output_size square, one 8-bit
// channel from a lossless file, content between exact-zero bars where the letterbox puts them)
// is returned as it is: method "preprocessed", the box its content, a warning saying so.
// The two-argument form uses the classical finder, and throws UsageError when the settings ask
// for MediaPipe (a program that offers it passes hand_finder_for(settings)).
Preprocessed preprocess(const Radiograph& radiograph, const PreprocessSettings& settings = {});
Preprocessed preprocess(const Radiograph& radiograph, const PreprocessSettings& settings,
                        const HandFinder& finder);

}  // namespace boneage
