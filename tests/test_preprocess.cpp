// Preprocessing (paper, Section IV): the hand finder on phantoms, CLAHE, the letterbox, the
// whole chain and the settings' JSON form.
#include <boneage/error.hpp>
#include <boneage/image.hpp>
#include <boneage/preprocess.hpp>
#include <boneage/synth.hpp>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>
#include <opencv2/imgproc.hpp>

#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "preprocess/hand_finder_steps.hpp"
#include "support.hpp"

namespace {

using boneage::PreprocessSettings;
using boneage::test::ScratchDir;

double iou(const cv::Rect& a, const cv::Rect& b) {
    const double inter = (a & b).area();
    return inter / (a.area() + b.area() - inter);
}

// Fraction of `truth` that lies outside `found`.
double cut_off(const cv::Rect& found, const cv::Rect& truth) {
    return 1.0 - static_cast<double>((found & truth).area()) / truth.area();
}

// Mean over 16x16 windows of the local standard deviation: what CLAHE should raise.
double mean_local_sd(const cv::Mat& grey) {
    cv::Mat f, mean, sq_mean;
    grey.convertTo(f, CV_32F);
    cv::blur(f, mean, cv::Size(16, 16));
    cv::blur(f.mul(f), sq_mean, cv::Size(16, 16));
    cv::Mat var = sq_mean - mean.mul(mean);
    cv::max(var, 0.0, var);
    cv::sqrt(var, var);
    return cv::mean(var)[0];
}

struct FinderScore {
    int count = 0;
    int tight = 0;                 // IoU >= 0.9 with the true hand box
    double worst_cut_off = 0.0;    // largest fraction of a true hand box outside the crop
    std::string worst;
};

// The finder on `count` phantoms with every nuisance, several frame sizes and both depths.
FinderScore score_finder(int count) {
    const std::vector<cv::Size> frames = {{512, 640}, {640, 512}, {400, 400}, {900, 1200}};
    const std::vector<boneage::PhantomLabel> labels = boneage::phantom_labels(count, 7);
    PreprocessSettings settings;
    FinderScore s;
    for (int i = 0; i < count; ++i) {
        boneage::SynthOptions o;
        o.width = frames[i % frames.size()].width;
        o.height = frames[i % frames.size()].height;
        o.bits16 = i % 5 == 4;
        const boneage::Phantom p = boneage::make_phantom(labels[i], 1000 + i, o);
        const boneage::HandBox hand = boneage::find_hand(p.image, settings);
        const cv::Rect crop = boneage::crop_box(hand.box, p.image.size(), settings.crop_margin);
        ++s.count;
        if (iou(hand.box, p.hand_box) >= 0.9) ++s.tight;
        const double lost = cut_off(crop, p.hand_box);
        if (lost > s.worst_cut_off) {
            s.worst_cut_off = lost;
            s.worst = labels[i].id;
        }
    }
    return s;
}

// The finder's box (before the margin) is compared with the true hand box by IoU; the crop
// (box plus margin, what the model sees) must contain the true box. The margin (4% of the
// longer side) is kept out of the IoU so that the test measures the finder, not the margin.
TEST(HandFinder, FindsTheWholeHandOnPhantomsWithNuisances) {
    const FinderScore s = score_finder(60);
    EXPECT_GE(s.tight, static_cast<int>(std::ceil(0.95 * s.count)))
        << s.tight << " of " << s.count << " boxes had IoU >= 0.9";
    EXPECT_LE(s.worst_cut_off, 0.01) << "phantom " << s.worst << " lost " << s.worst_cut_off
                                     << " of its hand outside the crop";
}

// find_hand computes its steps the fast way (ellipse morphology run by run, intermediates
// shared between steps); find_hand_reference computes them as the finder was first written
// (OpenCV's own morphology, every step on its own). The boxes must agree on phantoms of every
// size and nuisance; measured, they are equal to the pixel.
TEST(HandFinder, FastFinderAgreesWithTheReferenceOnPhantoms) {
    const std::vector<cv::Size> frames = {{512, 640}, {640, 512}, {300, 420}, {1000, 1300},
                                          {512, 512}};
    const std::vector<boneage::PhantomLabel> labels = boneage::phantom_labels(40, 11);
    int equal = 0;
    for (int i = 0; i < 40; ++i) {
        SCOPED_TRACE(labels[i].id);
        boneage::SynthOptions o;
        o.width = frames[i % frames.size()].width;
        o.height = frames[i % frames.size()].height;
        o.nuisances = i % 8 != 7;  // mostly with every nuisance, some clean
        o.bits16 = i % 5 == 3;
        const boneage::Phantom p = boneage::make_phantom(labels[i], 500 + i, o);
        const cv::Mat grey = boneage::to_8bit(p.image);
        const boneage::HandBox fast = boneage::find_hand(grey);
        const boneage::HandBox reference = boneage::hand_finder::find_hand_reference(grey);
        EXPECT_GE(iou(fast.box, reference.box), 0.95)
            << "fast " << fast.box << ", reference " << reference.box;
        EXPECT_EQ(fast.method, reference.method);
        if (fast.box == reference.box) ++equal;
    }
    EXPECT_GE(equal, 38) << "boxes equal to the pixel on " << equal << " of 40 phantoms";
}

// The ellipse morphology the fast finder uses gives OpenCV's pixels, at the frame's edges too.
TEST(HandFinder, EllipseMorphologyGivesOpenCvsPixels) {
    cv::RNG rng(3);
    for (const cv::Size size : {cv::Size(1, 1), cv::Size(1, 9), cv::Size(7, 3), cv::Size(40, 33),
                                cv::Size(512, 400)}) {
        for (const int k : {3, 7, 9, 31}) {
            SCOPED_TRACE(::testing::Message() << size << " k=" << k);
            cv::Mat noise(size, CV_8UC1), mask;
            rng.fill(noise, cv::RNG::UNIFORM, 0, 256);
            mask = noise > 250;  // sparse specks, which dilation grows into ellipses
            const cv::Mat element =
                cv::getStructuringElement(cv::MORPH_ELLIPSE, cv::Size(k, k));
            cv::Mat dilated, closed, closed_grey;
            cv::dilate(mask, dilated, element);
            cv::morphologyEx(mask, closed, cv::MORPH_CLOSE, element);
            cv::morphologyEx(noise, closed_grey, cv::MORPH_CLOSE, element);
            EXPECT_EQ(cv::norm(boneage::hand_finder::dilate_ellipse(mask, k), dilated,
                               cv::NORM_INF), 0.0);
            EXPECT_EQ(cv::norm(boneage::hand_finder::close_ellipse(mask, k), closed,
                               cv::NORM_INF), 0.0);
            EXPECT_EQ(cv::norm(boneage::hand_finder::close_ellipse(noise, k), closed_grey,
                               cv::NORM_INF), 0.0);
        }
    }
}

// The fast finder's box is the reference's to the pixel, with the same method, confidence
// and warnings, on phantoms of every frame size and depth, with and without nuisances (film
// rims, markers, labels, shading): the fast steps (run-length components, the 16-bit Hough
// accumulator, the background rounds' shared noise list) change the cost, not the answer.
TEST(HandFinder, FastFinderGivesTheReferencesBoxesOnPhantoms) {
    const std::vector<cv::Size> frames = {{512, 640}, {640, 512}, {400, 400}, {900, 1200},
                                          {350, 512}};
    const std::vector<boneage::PhantomLabel> labels = boneage::phantom_labels(30, 23);
    for (int i = 0; i < 30; ++i) {
        SCOPED_TRACE(labels[i].id);
        boneage::SynthOptions o;
        o.width = frames[i % frames.size()].width;
        o.height = frames[i % frames.size()].height;
        o.nuisances = i % 6 != 5;
        o.bits16 = i % 4 == 2;
        const boneage::Phantom p = boneage::make_phantom(labels[i], 2000 + i, o);
        const cv::Mat grey = boneage::to_8bit(p.image);
        const boneage::HandBox fast = boneage::find_hand(grey);
        const boneage::HandBox reference = boneage::hand_finder::find_hand_reference(grey);
        EXPECT_EQ(fast.box, reference.box);
        EXPECT_EQ(fast.method, reference.method);
        EXPECT_EQ(fast.confidence, reference.confidence);
        EXPECT_EQ(fast.warnings, reference.warnings);
    }
}

// hough_segments finds cv::HoughLinesP's segments, in its order, on edge maps with long
// lines (which start walks and withdraw votes), short ones, and scattered pixels.
TEST(HandFinder, HoughSegmentsAreOpenCvsSegments) {
    cv::RNG rng(17);
    for (int trial = 0; trial < 60; ++trial) {
        cv::Mat edges = cv::Mat::zeros(60 + rng.uniform(0, 460), 60 + rng.uniform(0, 460), CV_8UC1);
        for (int l = rng.uniform(0, 8); l > 0; --l)
            cv::line(edges, {rng.uniform(-40, edges.cols + 40), rng.uniform(-40, edges.rows + 40)},
                     {rng.uniform(-40, edges.cols + 40), rng.uniform(-40, edges.rows + 40)},
                     cv::Scalar(255), 1);
        for (int k = rng.uniform(0, 4000); k > 0; --k)
            edges.at<uchar>(rng.uniform(0, edges.rows), rng.uniform(0, edges.cols)) = 255;
        const int length = std::max(edges.cols, edges.rows) / 4;
        std::vector<cv::Vec4i> expected;
        cv::HoughLinesP(edges, expected, 1, CV_PI / 360, length / 2, length, 3);
        const std::vector<cv::Vec4i> found =
            boneage::hand_finder::hough_segments(edges, CV_PI / 360, length / 2, length, 3);
        ASSERT_EQ(found.size(), expected.size()) << "trial " << trial << ", " << edges.size();
        for (std::size_t i = 0; i < found.size(); ++i) EXPECT_EQ(found[i], expected[i]);
    }
}

// connected_components gives OpenCV's components (8-connected): the same areas and boxes,
// and the same pixels together, whatever the numbering.
TEST(HandFinder, RunComponentsAreOpenCvsComponents) {
    cv::RNG rng(29);
    for (const cv::Size size : {cv::Size(1, 1), cv::Size(9, 1), cv::Size(1, 7), cv::Size(37, 23),
                                cv::Size(512, 400)}) {
        for (const int density : {250, 200, 120}) {
            SCOPED_TRACE(::testing::Message() << size << " density " << density);
            cv::Mat noise(size, CV_8UC1);
            rng.fill(noise, cv::RNG::UNIFORM, 0, 256);
            const cv::Mat mask = noise > density;
            cv::Mat labels, stats, centroids, fast_labels, fast_stats;
            const int count = cv::connectedComponentsWithStats(mask, labels, stats, centroids, 8, CV_32S);
            ASSERT_EQ(boneage::hand_finder::connected_components(mask, fast_labels, fast_stats), count);
            std::vector<int> to_fast(count, -1);
            for (int y = 0; y < mask.rows; ++y)
                for (int x = 0; x < mask.cols; ++x) {
                    const int a = labels.at<int>(y, x), b = fast_labels.at<int>(y, x);
                    ASSERT_EQ(a == 0, b == 0);
                    if (to_fast[a] < 0) to_fast[a] = b;
                    ASSERT_EQ(to_fast[a], b) << "at " << x << "," << y;
                }
            for (int i = 1; i < count; ++i)
                for (const int stat : {cv::CC_STAT_LEFT, cv::CC_STAT_TOP, cv::CC_STAT_WIDTH,
                                       cv::CC_STAT_HEIGHT, cv::CC_STAT_AREA})
                    EXPECT_EQ(fast_stats.at<int>(to_fast[i], stat), stats.at<int>(i, stat));
        }
    }
}

TEST(HandFinder, BlankImageKeepsTheWholeFrameWithAWarning) {
    for (int value : {0, 128, 255}) {
        const cv::Mat blank(300, 200, CV_8UC1, cv::Scalar(value));
        boneage::HandBox hand;
        ASSERT_NO_THROW(hand = boneage::find_hand(blank));
        EXPECT_EQ(hand.box, cv::Rect(0, 0, 200, 300));
        EXPECT_EQ(hand.method, "full-frame");
        EXPECT_EQ(hand.confidence, 0.0);
        ASSERT_FALSE(hand.warnings.empty());
        EXPECT_EQ(hand.warnings.back(), "no hand found; kept the whole image");
    }
}

TEST(HandFinder, NoiseAloneIsNotAHand) {
    cv::Mat noise(400, 300, CV_8UC1);
    cv::randn(noise, 40, 3);
    const boneage::HandBox hand = boneage::find_hand(noise);
    EXPECT_EQ(hand.method, "full-frame");
    EXPECT_EQ(hand.box, cv::Rect(0, 0, 300, 400));
}

TEST(HandFinder, EmptyImageThrows) {
    EXPECT_THROW(boneage::find_hand(cv::Mat()), boneage::Error);
}

TEST(CropBox, AddsTheMarginAndStaysInsideTheImage) {
    EXPECT_EQ(boneage::crop_box({100, 100, 50, 100}, {400, 400}, 0.1),
              cv::Rect(90, 90, 70, 120));
    EXPECT_EQ(boneage::crop_box({0, 5, 50, 100}, {60, 100}, 0.1), cv::Rect(0, 0, 60, 100));
}

TEST(Clahe, RaisesLocalContrastOfALowContrastImage) {
    cv::Mat low(256, 256, CV_8UC1);
    for (int y = 0; y < low.rows; ++y)
        for (int x = 0; x < low.cols; ++x)
            low.at<uchar>(y, x) = static_cast<uchar>(100 + x / 16 + 3 * ((x / 8 + y / 8) % 2));
    const cv::Mat out = boneage::apply_clahe(low);
    ASSERT_EQ(out.size(), low.size());
    ASSERT_EQ(out.type(), CV_8UC1);
    EXPECT_GT(mean_local_sd(out), 2.0 * mean_local_sd(low));
}

TEST(Clahe, HigherClipLimitGivesMoreContrast) {
    cv::Mat low(256, 256, CV_8UC1);
    cv::randn(low, 120, 4);
    PreprocessSettings gentle, strong;
    gentle.clahe_clip_limit = 1.0;
    strong.clahe_clip_limit = 4.0;
    EXPECT_GT(mean_local_sd(boneage::apply_clahe(low, strong)),
              mean_local_sd(boneage::apply_clahe(low, gentle)));
}

TEST(Letterbox, WideImageGetsBarsAboveAndBelow) {
    const cv::Mat wide(100, 200, CV_8UC1, cv::Scalar(200));
    const cv::Mat out = boneage::letterbox(wide, 320);
    ASSERT_EQ(out.size(), cv::Size(320, 320));
    ASSERT_EQ(out.type(), CV_8UC1);
    EXPECT_EQ(cv::countNonZero(out.rowRange(0, 80)), 0);
    EXPECT_EQ(cv::countNonZero(out.rowRange(240, 320)), 0);
    EXPECT_EQ(cv::countNonZero(out.rowRange(80, 240) != 200), 0);
}

TEST(Letterbox, TallImageKeepsItsAspectRatio) {
    // 100x300 scales by 320/300: 106.7 rounds to 107 columns, placed at (320 - 107) / 2 = 106.
    const cv::Mat tall(300, 100, CV_8UC1, cv::Scalar(90));
    const cv::Mat out = boneage::letterbox(tall, 320);
    EXPECT_EQ(cv::countNonZero(out.colRange(0, 106)), 0);
    EXPECT_EQ(cv::countNonZero(out.colRange(213, 320)), 0);
    EXPECT_EQ(cv::countNonZero(out.colRange(106, 213) != 90), 0);
}

TEST(Letterbox, SmallImageIsEnlargedToFill) {
    const cv::Mat small(40, 20, CV_8UC1, cv::Scalar(50));
    const cv::Mat out = boneage::letterbox(small, 320);
    EXPECT_EQ(cv::countNonZero(out), 160 * 320);
}

TEST(Preprocess, GivesTheOutputSizeForEveryDepthAndShape) {
    boneage::SynthOptions o;
    o.width = 700;
    o.height = 500;
    o.bits16 = true;
    const boneage::Phantom p = boneage::make_phantom({"1", 100.0, true}, 3, o);
    boneage::Radiograph r;
    r.pixels = p.image;
    PreprocessSettings s;
    s.output_size = 256;
    const boneage::Preprocessed out = boneage::preprocess(r, s);
    EXPECT_EQ(out.image.size(), cv::Size(256, 256));
    EXPECT_EQ(out.image.type(), CV_8UC1);
    EXPECT_EQ(out.hand.method, "threshold");

    s.crop_hand = false;
    const boneage::Preprocessed whole = boneage::preprocess(r, s);
    EXPECT_EQ(whole.hand.box, cv::Rect(0, 0, 700, 500));
    // 700x500 in a 256 square: 183 rows of content, bars of 36 rows above.
    EXPECT_EQ(cv::countNonZero(whole.image.rowRange(0, 36)), 0);
}

// Preprocessing turns an image into grey the one way the readers do (to_grey): a float or a
// grey-plus-alpha picture, which a caller may hand over directly, gives what its grey does.
TEST(Preprocess, ConvertsToGreyTheWayTheReadersDo) {
    boneage::SynthOptions o;
    o.width = 400;
    o.height = 500;
    o.bits16 = true;
    const boneage::Phantom p = boneage::make_phantom({"2", 120.0, false}, 5, o);
    boneage::Radiograph as_float, with_alpha, plain;
    p.image.convertTo(as_float.pixels, CV_32F, 1.0 / 65535.0);
    plain.pixels = boneage::to_grey(as_float.pixels);
    EXPECT_EQ(plain.pixels.type(), CV_16UC1);
    const cv::Mat expected = boneage::preprocess(plain).image;
    EXPECT_EQ(cv::norm(boneage::preprocess(as_float).image, expected, cv::NORM_INF), 0.0);

    cv::Mat grey8 = boneage::to_8bit(p.image), alpha(grey8.size(), CV_8U, cv::Scalar(255));
    cv::merge(std::vector<cv::Mat>{grey8, alpha}, with_alpha.pixels);
    plain.pixels = grey8;
    EXPECT_EQ(cv::norm(boneage::preprocess(with_alpha).image, boneage::preprocess(plain).image,
                       cv::NORM_INF),
              0.0);
}

TEST(Preprocess, RejectsSettingsOutOfRange) {
    boneage::Radiograph r;
    r.pixels = cv::Mat(100, 100, CV_8UC1, cv::Scalar(10));
    PreprocessSettings s;
    s.clahe_tile_grid = 0;
    EXPECT_THROW(boneage::preprocess(r, s), boneage::UsageError);
}

// What preprocess() writes, read back from a lossless file, is the network's input itself:
// preprocessing it again would crop and equalise a second time. It is used as it is.
TEST(Preprocess, ItsOwnOutputReadBackIsUsedAsItIs) {
    ScratchDir dir("preprocess_twice");
    const PreprocessSettings s;
    for (int i = 0; i < 4; ++i) {
        SCOPED_TRACE(i);
        const boneage::Phantom p = boneage::make_phantom({"1", 36.0 + 48 * i, i % 2 == 0}, 40 + i);
        boneage::Radiograph r;
        r.pixels = p.image;
        const boneage::Preprocessed first = boneage::preprocess(r, s);
        boneage::write_image(dir / "out.png", first.image);
        const boneage::Preprocessed second =
            boneage::preprocess(boneage::read_radiograph(dir / "out.png"), s);
        EXPECT_EQ(cv::norm(second.image, first.image, cv::NORM_INF), 0.0);
        EXPECT_EQ(second.hand.method, "preprocessed");
        ASSERT_EQ(second.hand.warnings.size(), 1u);
        EXPECT_NE(second.hand.warnings[0].find("already"), std::string::npos)
            << second.hand.warnings[0];
    }
}

TEST(Preprocess, AnImageThatOnlyResemblesItsOutputIsPreprocessed) {
    const PreprocessSettings s;
    const boneage::Phantom p = boneage::make_phantom({"1", 120.0, true}, 7);
    boneage::Radiograph r;
    r.pixels = p.image;
    const cv::Mat out = boneage::preprocess(r, s).image;

    // A radiograph drawn at the output size.
    boneage::SynthOptions square;
    square.width = square.height = s.output_size;
    r.pixels = boneage::make_phantom({"1", 120.0, true}, 7, square).image;
    EXPECT_NE(boneage::preprocess(r, s).hand.method, "preprocessed");

    // The output with its content off centre, where the letterbox never puts it.
    cv::Mat shifted = cv::Mat::zeros(out.size(), CV_8UC1);
    out(cv::Rect(0, 0, out.cols - 3, out.rows)).copyTo(shifted(cv::Rect(3, 0, out.cols - 3, out.rows)));
    r.pixels = shifted;
    EXPECT_NE(boneage::preprocess(r, s).hand.method, "preprocessed");

    // The output for other settings: another output size, or a 16-bit source.
    PreprocessSettings smaller = s;
    smaller.output_size = 256;
    r.pixels = out;
    const boneage::Preprocessed resized = boneage::preprocess(r, smaller);
    EXPECT_NE(resized.hand.method, "preprocessed");
    EXPECT_EQ(resized.image.size(), cv::Size(256, 256));
    out.convertTo(r.pixels, CV_16U, 257.0);  // the same picture, from a 16-bit file
    r.info.bits_stored = 16;
    EXPECT_NE(boneage::preprocess(r, s).hand.method, "preprocessed");
}

TEST(PreprocessSettings, RoundTripsThroughJson) {
    PreprocessSettings s;
    s.output_size = 224;
    s.clahe_clip_limit = 3.5;
    s.clahe_tile_grid = 4;
    s.crop_margin = 0.1;
    s.crop_hand = false;
    s.detect_size = 256;
    const nlohmann::json j = s;
    const PreprocessSettings back = j.get<PreprocessSettings>();
    EXPECT_EQ(back.output_size, 224);
    EXPECT_DOUBLE_EQ(back.clahe_clip_limit, 3.5);
    EXPECT_EQ(back.clahe_tile_grid, 4);
    EXPECT_DOUBLE_EQ(back.crop_margin, 0.1);
    EXPECT_FALSE(back.crop_hand);
    EXPECT_EQ(back.detect_size, 256);
    EXPECT_EQ(nlohmann::json(back), j);
}

TEST(PreprocessSettings, MissingKeysKeepDefaultsAndBadValuesThrow) {
    const PreprocessSettings back = nlohmann::json{{"output_size", 128}}.get<PreprocessSettings>();
    EXPECT_EQ(back.output_size, 128);
    EXPECT_EQ(back.clahe_tile_grid, PreprocessSettings{}.clahe_tile_grid);
    EXPECT_THROW(nlohmann::json({{"output_size", -1}}).get<PreprocessSettings>(), boneage::Error);
    EXPECT_THROW(nlohmann::json({{"clahe_clip_limit", "high"}}).get<PreprocessSettings>(),
                 boneage::Error);
}

// One hand cut from a film at its own resolution, at half and at twice it (cv::resize of the
// same pixels), through the chain after the hand finder (crop_hand off, so the finder's own
// box plays no part). CLAHE runs after the crop is brought to the output size, so its tiles see
// the same detail at every resolution and the outputs differ only by what resampling leaves
// (0.1-0.8 grey levels mean absolute difference with no CLAHE at all), which CLAHE's slope
// roughly triples: measured 0.58-2.02, mean 1.11 over these eight pairs. Run at the film's own
// size, as it was, it saw grain at 2x that 0.5x had lost: 1.77-3.11, mean 2.23.
TEST(Preprocess, ResamplingTheFilmBarelyChangesTheOutput) {
    PreprocessSettings settings;
    settings.crop_hand = false;
    double sum = 0.0;
    int pairs = 0;
    for (int i = 0; i < 4; ++i) {
        boneage::SynthOptions o;
        o.width = 1024;
        o.height = 1280;
        const boneage::Phantom p =
            boneage::make_phantom({"1", 30.0 + 50 * i, i % 2 == 0}, 21 + i, o);
        // Even corners, so that the half-size crop is exactly the same region.
        cv::Rect c = boneage::crop_box(p.hand_box, p.image.size(), settings.crop_margin);
        c = cv::Rect(c.x & ~1, c.y & ~1, c.width & ~1, c.height & ~1);
        boneage::Radiograph own;
        own.pixels = p.image(c).clone();
        const cv::Mat reference = boneage::preprocess(own, settings).image;
        for (const double scale : {0.5, 2.0}) {
            cv::Mat resized;
            cv::resize(p.image, resized, cv::Size(), scale, scale,
                       scale < 1.0 ? cv::INTER_AREA : cv::INTER_LINEAR);
            boneage::Radiograph r;
            const cv::Rect scaled(static_cast<int>(c.x * scale), static_cast<int>(c.y * scale),
                                  static_cast<int>(c.width * scale),
                                  static_cast<int>(c.height * scale));
            r.pixels = resized(scaled).clone();
            cv::Mat difference;
            cv::absdiff(boneage::preprocess(r, settings).image, reference, difference);
            const double mad = cv::mean(difference)[0];
            ::testing::Test::RecordProperty(
                "mad_" + std::to_string(i) + (scale < 1.0 ? "_half" : "_double"),
                std::to_string(mad));
            EXPECT_LT(mad, 2.5) << "phantom " << i << " at " << scale << "x";
            sum += mad;
            ++pairs;
        }
    }
    EXPECT_LT(sum / pairs, 1.6);
}

}  // namespace
