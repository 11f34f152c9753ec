// Synthetic hand radiographs ("phantoms") whose appearance depends on age and sex the way
// real ones do: bones lengthen, carpal bones appear and grow, epiphyses appear, grow and
// fuse with the shafts in adolescence (earlier in girls). They carry the nuisances that
// preprocessing must handle: rotation, scale, position, a frame larger than the hand,
// a non-uniform background, noise and blur, lead markers and labels, exposure and contrast.
// They are the fixtures of every test and the demo's default data. Same seed, same images.
//
//   boneage::SynthOptions o;  o.width = 1500; o.height = 2000;
//   boneage::Phantom p = boneage::make_phantom(boneage::PhantomLabel{7, 120.0, true}, 42, o);
//   // p.image: CV_8UC1 (or CV_16UC1 with o.bits16), p.hand_box: the true hand extent
#pragma once

#include <opencv2/core.hpp>

#include <cstdint>
#include <filesystem>
#include <functional>
#include <string>
#include <vector>

namespace boneage {

struct SynthOptions {
    int width = 512;          // frame width, pixels
    int height = 640;         // frame height, pixels
    bool nuisances = true;    // rotation, offset, scale, background, markers, noise, blur, exposure
    bool bits16 = false;      // 16-bit output (as DICOM would carry)
};

struct PhantomLabel {
    std::string id;           // file stem, e.g. "1003"
    double age_months = 0.0;  // bone age, 0..228
    bool male = true;
};

struct Phantom {
    cv::Mat image;            // CV_8UC1 or CV_16UC1, bone bright
    cv::Rect hand_box;        // the tight extent of the hand (soft tissue included), pixels
    PhantomLabel label;
    std::vector<cv::Rect> markers;  // lead markers and labels drawn, pixels; none meets hand_box
};

// Draws one phantom. `seed` fixes every random choice (pose, nuisances, noise).
Phantom make_phantom(const PhantomLabel& label, std::uint64_t seed, const SynthOptions& options = {});

// Labels for a set: `count` phantoms with ages spread over 1..228 months and both sexes, ids
// starting at 1000; deterministic in `seed`.
std::vector<PhantomLabel> phantom_labels(int count, std::uint64_t seed);

enum class PhantomFormat { Png, Dicom };

// Writes DIR/<id>.png (or .dcm; DICOM ones are sometimes MONOCHROME1) and an RSNA-style
// DIR/labels.csv (id,boneage,male). Returns each phantom with its label and hand box, in
// label order; the images are not kept (empty Mat), so large sets stay small in memory.
// `progress`, when set, is called after each image with (done, total).
// Images are drawn on every core; each depends only on (seed, index), never on the threads.
// Throws boneage::Error when the folder or a file cannot be written, UsageError on count < 0.
std::vector<Phantom> write_phantom_set(const std::filesystem::path& dir, int count,
                                       std::uint64_t seed, const SynthOptions& options = {},
                                       PhantomFormat format = PhantomFormat::Png,
                                       const std::function<void(int, int)>& progress = {});

// The seed of image `index` in a set drawn with `seed` (what write_phantom_set passes to
// make_phantom), so one image of a set can be redrawn alone.
std::uint64_t phantom_seed(std::uint64_t seed, int index);

}  // namespace boneage
