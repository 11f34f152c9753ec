// The phantom generator: deterministic, hand box honest, markers beside the hand, and the age
// and sex signal present in the pixels.
#include "support.hpp"

#include "synth/maturity.hpp"
#include "synth/scene.hpp"

#include <boneage/error.hpp>
#include <boneage/image.hpp>
#include <boneage/synth.hpp>

#include <gtest/gtest.h>
#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>

#include <fstream>
#include <set>
#include <sstream>

namespace boneage {
namespace {

SynthOptions clean_options() {
    SynthOptions o;
    o.nuisances = false;
    return o;
}

bool same_bytes(const cv::Mat& a, const cv::Mat& b) {
    return a.size() == b.size() && a.type() == b.type() && cv::norm(a, b, cv::NORM_INF) == 0;
}

// The bones alone: a clean scene with no soft tissue and a black background, so a threshold
// separates bone from everything else.
cv::Mat bones_only(double age, bool male, std::uint64_t seed) {
    std::mt19937_64 rng(seed);
    synth::Scene scene = synth::sample_scene(rng, false);
    scene.tissue = 0.0;
    scene.background = 0.0;
    return synth::render_phantom({"b", age, male}, scene, clean_options()).image;
}

// Separate pieces of bone: epiphyses and carpal centres count apart from the shafts until
// they fuse with them.
int bone_pieces(const cv::Mat& bones) {
    cv::Mat labels;
    return cv::connectedComponents(bones > 20, labels, 8) - 1;
}

int bone_pixels(const cv::Mat& bones) { return cv::countNonZero(bones > 20); }

TEST(Synth, SameSeedGivesIdenticalBytes) {
    PhantomLabel label{"1000", 100.0, true};
    Phantom a = make_phantom(label, 7);
    Phantom b = make_phantom(label, 7);
    Phantom c = make_phantom(label, 8);
    EXPECT_TRUE(same_bytes(a.image, b.image));
    EXPECT_EQ(a.hand_box, b.hand_box);
    EXPECT_FALSE(same_bytes(a.image, c.image));
}

TEST(Synth, DefaultIsEightBitAtRequestedSizeAndSixteenBitOnRequest) {
    Phantom p = make_phantom({"1", 50.0, false}, 3);
    EXPECT_EQ(p.image.type(), CV_8UC1);
    EXPECT_EQ(p.image.cols, 512);
    EXPECT_EQ(p.image.rows, 640);
    SynthOptions o;
    o.bits16 = true;
    o.width = 300;
    o.height = 200;
    Phantom q = make_phantom({"1", 50.0, false}, 3, o);
    EXPECT_EQ(q.image.type(), CV_16UC1);
    EXPECT_EQ(q.image.size(), cv::Size(300, 200));
    double lo, hi;
    cv::minMaxLoc(q.image, &lo, &hi);
    EXPECT_GT(hi, 1000.0);  // the full 16-bit range is used, not 8-bit values in 16 bits
}

TEST(Synth, RejectsImpossibleRequests) {
    SynthOptions tiny;
    tiny.width = 10;
    EXPECT_THROW(make_phantom({"1", 50.0, true}, 1, tiny), UsageError);
    EXPECT_THROW(make_phantom({"1", -5.0, true}, 1), UsageError);
    EXPECT_THROW(phantom_labels(-1, 1), UsageError);
}

TEST(Synth, HandBoxLiesInsideTheFrameForEveryPose) {
    SynthOptions o;
    for (int seed = 0; seed < 24; ++seed) {
        o.width = seed % 3 == 0 ? 400 : 512;
        o.height = seed % 3 == 0 ? 300 : 640;  // a landscape frame too
        Phantom p = make_phantom({"x", 10.0 + 9.0 * seed, seed % 2 == 0}, seed, o);
        cv::Rect frame({0, 0}, p.image.size());
        EXPECT_EQ(p.hand_box & frame, p.hand_box) << "seed " << seed;
        EXPECT_GT(p.hand_box.area(), frame.area() / 20) << "seed " << seed;
        EXPECT_LT(p.hand_box.area(), frame.area()) << "seed " << seed;
    }
}

TEST(Synth, HandBoxIsTightAndBrighterThanTheBackground) {
    Phantom p = make_phantom({"x", 120.0, true}, 11, clean_options());
    const cv::Rect& box = p.hand_box;
    cv::Mat outside(p.image.size(), CV_8UC1, cv::Scalar(255));
    outside(box).setTo(0);
    double background = cv::mean(p.image, outside)[0];
    double hand = cv::mean(p.image(box))[0];
    EXPECT_GT(hand, background + 25.0);
    // Tight: the box's outermost rows and columns touch the hand (whose soft tissue thins out
    // at its edge); a few pixels beyond them is background.
    auto brightest = [&](cv::Rect r) {
        double hi;
        cv::minMaxLoc(p.image(r & cv::Rect({0, 0}, p.image.size())), nullptr, &hi);
        return hi;
    };
    EXPECT_GT(brightest({box.x, box.y, box.width, 3}), background + 8.0);
    EXPECT_GT(brightest({box.x, box.br().y - 3, box.width, 3}), background + 8.0);
    EXPECT_GT(brightest({box.x, box.y, 3, box.height}), background + 8.0);
    EXPECT_GT(brightest({box.br().x - 3, box.y, 3, box.height}), background + 8.0);
    EXPECT_LT(brightest({box.x, box.y - 4, box.width, 1}), background + 4.0);
    EXPECT_LT(brightest({box.x, box.br().y + 3, box.width, 1}), background + 4.0);
    EXPECT_LT(brightest({box.x - 4, box.y, 1, box.height}), background + 4.0);
    EXPECT_LT(brightest({box.br().x + 3, box.y, 1, box.height}), background + 4.0);
}

TEST(Synth, MarkersLieOutsideTheHandBox) {
    int with_markers = 0;
    for (int seed = 0; seed < 30; ++seed) {
        Phantom p = make_phantom({"x", 6.0 * seed + 5.0, true}, 100 + seed);
        for (const cv::Rect& m : p.markers) {
            EXPECT_EQ((m & p.hand_box).area(), 0) << "seed " << seed;
            EXPECT_EQ(m & cv::Rect({0, 0}, p.image.size()), m) << "seed " << seed;
            double hi;
            cv::minMaxLoc(p.image(m), nullptr, &hi);
            EXPECT_GT(hi, 120.0) << "a marker is bright, seed " << seed;
        }
        with_markers += !p.markers.empty();
    }
    EXPECT_GT(with_markers, 20);
}

TEST(Synth, MarkersChangeNoPixelOfTheHand) {
    // The same scene with and without its markers differs only away from the hand.
    for (std::uint64_t seed : {3u, 4u, 5u}) {
        std::mt19937_64 rng(seed);
        synth::Scene scene = synth::sample_scene(rng, true);
        synth::Scene bare = scene;
        bare.markers.clear();
        Phantom a = synth::render_phantom({"m", 90.0, false}, scene, {});
        Phantom b = synth::render_phantom({"m", 90.0, false}, bare, {});
        ASSERT_EQ(a.hand_box, b.hand_box);
        cv::Mat diff = a.image != b.image;
        EXPECT_GT(cv::countNonZero(diff), 0) << "seed " << seed;
        EXPECT_EQ(cv::countNonZero(diff(a.hand_box)), 0) << "seed " << seed;
    }
}

TEST(Synth, BoneAreaGrowsWithAge) {
    std::vector<double> ages{3, 24, 60, 100, 140, 180, 220};
    std::vector<double> bright, share;
    for (double age : ages) {
        Phantom p = make_phantom({"a", age, true}, 5, clean_options());
        int hand = cv::countNonZero(p.image > 40);  // background is about 15
        int bone = cv::countNonZero(p.image > 100);  // no soft tissue is this bright
        bright.push_back(bone);
        share.push_back(double(bone) / hand);
    }
    for (std::size_t i = 1; i < ages.size(); ++i)
        EXPECT_GT(bright[i], bright[i - 1] * 0.97) << "age " << ages[i];
    EXPECT_GT(bright.back(), 2.0 * bright.front());
    // Not only a bigger hand: more of the hand is bone.
    EXPECT_GT(share.back(), share.front() + 0.1);
}

TEST(Synth, CarpalBonesAppearWithAge) {
    // With the shafts' slots empty of tissue, the carpal region is where new pieces appear:
    // between one and eight years six carpal centres and most epiphyses ossify.
    EXPECT_GT(bone_pieces(bones_only(96, true, 2)), bone_pieces(bones_only(10, true, 2)) + 12);
    EXPECT_LT(synth::carpal_size(10, 30), 1e-9);
    EXPECT_GT(synth::carpal_size(40, 30), 0.0);
}

TEST(Synth, GrowthPlatesCloseInAdolescence) {
    // At six the epiphyses stand apart from their shafts; at seventeen most have fused, so the
    // skeleton falls into far fewer separate pieces.
    int child = bone_pieces(bones_only(72, true, 9));
    int adult = bone_pieces(bones_only(204, true, 9));
    EXPECT_GT(child, adult + 10) << "child " << child << ", adult " << adult;
    synth::EpiphysisSchedule phalanx{16, 160, 192};
    EXPECT_GT(synth::epiphysis_at(72, phalanx).gap, 0.2);
    EXPECT_EQ(synth::epiphysis_at(204, phalanx).gap, 0.0);
}

TEST(Synth, GirlsMatureEarlierThanBoys) {
    // Same age, same hand: at 14 years the girl's growth plates have closed, the boy's not yet.
    int boy = bone_pieces(bones_only(172, true, 4));
    int girl = bone_pieces(bones_only(172, false, 4));
    EXPECT_GT(boy, girl + 4) << "boy " << boy << ", girl " << girl;
    // At five the girl has more bone for her hand's size.
    cv::Mat young_boy = bones_only(60, true, 4), young_girl = bones_only(60, false, 4);
    EXPECT_FALSE(same_bytes(young_boy, young_girl));
    EXPECT_GT(synth::maturity_months(100, false), synth::maturity_months(100, true) * 1.1);
}

TEST(Synth, LabelsSpreadOverAgesAndSexes) {
    std::vector<PhantomLabel> labels = phantom_labels(200, 42);
    ASSERT_EQ(labels.size(), 200u);
    EXPECT_EQ(labels.front().id, "1000");
    EXPECT_EQ(labels.back().id, "1199");
    int male = 0, young = 0, old = 0;
    for (const PhantomLabel& l : labels) {
        EXPECT_GE(l.age_months, 1.0);
        EXPECT_LE(l.age_months, 228.0);
        EXPECT_EQ(l.age_months, std::round(l.age_months));
        male += l.male;
        young += l.age_months < 57;
        old += l.age_months > 171;
    }
    EXPECT_EQ(male, 100);
    EXPECT_NEAR(young, 50, 3);
    EXPECT_NEAR(old, 50, 3);
    std::vector<PhantomLabel> again = phantom_labels(200, 42);
    for (std::size_t i = 0; i < labels.size(); ++i) {
        EXPECT_EQ(again[i].age_months, labels[i].age_months);
        EXPECT_EQ(again[i].male, labels[i].male);
    }
    std::vector<PhantomLabel> other = phantom_labels(200, 43);
    int differ = 0;
    for (std::size_t i = 0; i < labels.size(); ++i) differ += other[i].age_months != labels[i].age_months;
    EXPECT_GT(differ, 100);
}

std::vector<std::vector<std::string>> read_csv(const std::filesystem::path& file) {
    std::ifstream in(file);
    std::vector<std::vector<std::string>> rows;
    for (std::string line; std::getline(in, line);) {
        std::vector<std::string> cells;
        std::stringstream ss(line);
        for (std::string cell; std::getline(ss, cell, ',');) cells.push_back(cell);
        rows.push_back(cells);
    }
    return rows;
}

TEST(Synth, PhantomSetWritesImagesAndRsnaLabels) {
    test::ScratchDir dir("synth-set");
    int calls = 0;
    std::vector<Phantom> set = write_phantom_set(dir.path(), 6, 77, {}, PhantomFormat::Png,
                                                 [&](int done, int total) {
                                                     ++calls;
                                                     EXPECT_LE(done, total);
                                                 });
    EXPECT_EQ(calls, 6);
    ASSERT_EQ(set.size(), 6u);
    auto rows = read_csv(dir / "labels.csv");
    ASSERT_EQ(rows.size(), 7u);
    EXPECT_EQ(rows[0], (std::vector<std::string>{"id", "boneage", "male"}));
    std::vector<PhantomLabel> labels = phantom_labels(6, 77);
    for (int i = 0; i < 6; ++i) {
        const auto& row = rows[i + 1];
        ASSERT_EQ(row.size(), 3u);
        EXPECT_EQ(row[0], labels[i].id);
        EXPECT_EQ(std::stoi(row[1]), int(labels[i].age_months));
        EXPECT_TRUE(row[2] == "True" || row[2] == "False");
        EXPECT_EQ(row[2] == "True", labels[i].male);
        EXPECT_TRUE(set[i].image.empty());
        // Each image is what make_phantom draws alone for (seed, index), whatever the threads.
        cv::Mat written = cv::imread((dir / (row[0] + ".png")).string(), cv::IMREAD_UNCHANGED);
        Phantom alone = make_phantom(labels[i], phantom_seed(77, i));
        EXPECT_TRUE(same_bytes(written, alone.image)) << row[0];
        EXPECT_EQ(set[i].hand_box, alone.hand_box);
    }
}

TEST(Synth, DicomSetIsSixteenBitAndReadsBack) {
    test::ScratchDir dir("synth-dcm");
    SynthOptions o;
    o.width = 200;
    o.height = 250;
    std::vector<Phantom> set = write_phantom_set(dir.path(), 6, 5, o, PhantomFormat::Dicom);
    std::multiset<std::string> photometric;
    for (int i = 0; i < 6; ++i) {
        Radiograph r = read_radiograph(dir / (set[i].label.id + ".dcm"));
        EXPECT_EQ(r.pixels.size(), cv::Size(200, 250));
        EXPECT_EQ(r.pixels.depth(), CV_16U);
        photometric.insert(r.info.photometric);
        // Bone stays bright after reading, MONOCHROME1 or not.
        o.bits16 = true;
        cv::Mat drawn = make_phantom(set[i].label, phantom_seed(5, i), o).image;
        cv::Mat a, b;
        drawn.convertTo(a, CV_32F);
        r.pixels.convertTo(b, CV_32F);
        cv::Mat corr;
        cv::matchTemplate(a, b, corr, cv::TM_CCOEFF_NORMED);
        EXPECT_GT(corr.at<float>(0, 0), 0.95) << set[i].label.id;
    }
    EXPECT_EQ(photometric.count("MONOCHROME1"), 2u);
    EXPECT_EQ(photometric.count("MONOCHROME2"), 4u);
}

TEST(Synth, LargeFramesKeepTheHandInside) {
    SynthOptions o;
    o.width = 1500;
    o.height = 2000;
    Phantom p = make_phantom({"big", 150.0, false}, 21, o);
    EXPECT_EQ(p.image.size(), cv::Size(1500, 2000));
    EXPECT_EQ(p.hand_box & cv::Rect(0, 0, 1500, 2000), p.hand_box);
    EXPECT_GT(p.hand_box.height, 600);
    for (const cv::Rect& m : p.markers) EXPECT_EQ((m & p.hand_box).area(), 0);
}

}  // namespace
}  // namespace boneage
