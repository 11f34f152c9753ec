// Where the network looked: a saliency map over the preprocessed image a model sees (Grad-CAM
// on the last convolutional stage, or occlusion where there is none), and the overlay picture
// of it that `boneage predict --heatmap` writes and the evaluation report's sample sheet shows.
//
//   boneage::LoadedModel m = boneage::load_model("model.bin");
//   boneage::Preprocessed p = boneage::preprocess(boneage::read_radiograph("hand.png"),
//                                                 m.meta.preprocess);
//   boneage::Saliency s = boneage::saliency(m, p.image, /*male=*/true);
//   cv::Mat png = boneage::render_heatmap(p.image, s.map, "bone age 121 months");
#pragma once

#include <boneage/model.hpp>
#include <opencv2/core.hpp>
#include <optional>
#include <string>

namespace boneage {

enum class SaliencyMethod {
    Auto,       // Grad-CAM where every member of the net has a convolutional trunk, else occlusion
    GradCam,    // Selvaraju et al., arXiv:1610.02391, on the output in months
    Occlusion,  // Zeiler & Fergus, arXiv:1311.2901: the change in months under a black patch
};

struct SaliencyOptions {
    SaliencyMethod method = SaliencyMethod::Auto;
    int occlusion_patch = 0;   // side of the occluding patch, image pixels; 0: a sixth of the image
    int occlusion_stride = 0;  // step between patches, image pixels; 0: half the patch
    int occlusion_batch = 16;  // occluded images per forward pass
};

struct Saliency {
    // Image size, CV_32FC1 in [0, 1], scaled so that the hottest pixel is 1; all zero when the
    // output does not depend on the image at all.
    cv::Mat map;
    // The net's output for the unaltered image (fp32, through the module, so it may differ from
    // the predictor's bf16 answer by a fraction of a month); the mean of both sexes when the
    // model uses sex and none was given.
    double months = 0.0;
    std::string method;  // "grad-cam" or "occlusion"
};

// The saliency of `model`'s months for one preprocessed image (model.meta.preprocess
// .output_size square, CV_8UC1, as preprocess() gives it) of a patient of sex `male` (empty:
// averaged over both, as the predictor does when the model uses sex). Runs the model's module
// in fp32 with autograd, in evaluation mode (a net in training mode is put back after), one
// image at a time: not thread-safe on one model. For an ensemble, the map of the members'
// mean. Throws boneage::Error (Usage) when the image is not of that size and type, or Grad-CAM
// is asked of a net without a convolutional trunk.
Saliency saliency(const LoadedModel& model, const cv::Mat& image, std::optional<bool> male = {},
                  const SaliencyOptions& options = {});

// The overlay alone: `image` (CV_8UC1, square) in grey under `map` (CV_32FC1 in [0, 1], any
// size) in the INFERNO colour map, blended in more strongly where the heat is higher, both
// scaled to `size` x `size`. 8-bit BGR. Throws boneage::Error (Usage) on an empty or wrongly
// typed input or a size below 8.
cv::Mat overlay_heatmap(const cv::Mat& image, const cv::Mat& map, int size = 320);

// Width of render_heatmap's colour bar, and height of its caption strip, pixels.
constexpr int kHeatmapBarWidth = 28;
constexpr int kHeatmapCaptionHeight = 24;

// The picture `boneage predict --heatmap` writes: overlay_heatmap, a colour bar (cold at the
// bottom, hot at the top) on its right and, when given, `caption` in a strip below.
// (size + kHeatmapBarWidth) x (size [+ kHeatmapCaptionHeight]), 8-bit BGR. Throws as
// overlay_heatmap does.
cv::Mat render_heatmap(const cv::Mat& image, const cv::Mat& map, const std::string& caption = {},
                       int size = 320);

}  // namespace boneage
