// MediaPipe's hand detector, ported: anchors, palm decoding, weighted suppression, the hand
// region, and the settings that choose the crop.
#include "detect/palm_anchors.hpp"
#include "detect/palm_detection.hpp"

#include <boneage/error.hpp>
#include <boneage/hand_detector.hpp>
#include <boneage/image.hpp>
#include <boneage/preprocess.hpp>
#include <boneage/sha256.hpp>
#include <boneage/synth.hpp>

#include "support.hpp"

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <cmath>
#include <filesystem>
#include <vector>

namespace {

using namespace boneage;
using namespace boneage::detect;

constexpr float kPi = 3.14159265358979f;

TEST(PalmAnchors, AreThePalmDetectorsTwoThousandAndSixteenInItsOrder) {
    const std::vector<Anchor> anchors = ssd_anchors();
    ASSERT_EQ(anchors.size(), 2016u);  // 24 x 24 cells x 2, then 12 x 12 cells x 6
    EXPECT_FLOAT_EQ(anchors[0].x_center, 0.5f / 24);
    EXPECT_FLOAT_EQ(anchors[0].y_center, 0.5f / 24);
    EXPECT_FLOAT_EQ(anchors[1].x_center, anchors[0].x_center);  // two anchors per cell
    EXPECT_FLOAT_EQ(anchors[2].x_center, 1.5f / 24);
    EXPECT_FLOAT_EQ(anchors[2 * 24].y_center, 1.5f / 24);  // the next row
    EXPECT_FLOAT_EQ(anchors[1152].x_center, 0.5f / 12);    // the stride-16 map starts
    EXPECT_FLOAT_EQ(anchors[1157].x_center, 0.5f / 12);    // six anchors per cell
    EXPECT_FLOAT_EQ(anchors[1158].x_center, 1.5f / 12);
    EXPECT_FLOAT_EQ(anchors.back().x_center, 11.5f / 12);
    EXPECT_FLOAT_EQ(anchors.back().y_center, 11.5f / 12);
    for (const Anchor& a : anchors) {
        EXPECT_EQ(a.width, 1.0f);
        EXPECT_EQ(a.height, 1.0f);
    }
}

TEST(PalmAnchors, TakeTheirSizesFromTheScalesWhenNotFixed) {
    SsdAnchorOptions o;
    o.fixed_anchor_size = false;
    const std::vector<Anchor> anchors = ssd_anchors(o);
    ASSERT_EQ(anchors.size(), 2016u);
    EXPECT_FLOAT_EQ(anchors[0].width, 0.1484375f);  // the first layer's scale
    // The interpolated anchor: sqrt(scale of layer 0 * scale of layer 1).
    const float layer1 = 0.1484375f + (0.75f - 0.1484375f) / 3;
    EXPECT_NEAR(anchors[1].width, std::sqrt(0.1484375f * layer1), 1e-6);
    EXPECT_NEAR(anchors.back().width, std::sqrt(0.75f * 1.0f), 1e-6);  // the last layer's
}

// One anchor's 18 raw values: box centre offset, size, and 7 keypoints, in input pixels.
std::vector<float> raw_row(float dx, float dy, float w, float h) {
    std::vector<float> row = {dx, dy, w, h};
    for (int k = 0; k < 7; ++k) {
        row.push_back(dx + 10.0f * k);
        row.push_back(dy - 5.0f * k);
    }
    return row;
}

TEST(PalmDecoding, PlacesBoxesAndKeypointsAroundTheirAnchors) {
    const std::vector<Anchor> anchors = {{0.25f, 0.5f, 1, 1}, {0.75f, 0.5f, 1, 1}};
    std::vector<float> boxes = raw_row(19.2f, -9.6f, 96, 48);
    const std::vector<float> second = raw_row(0, 0, 10, 10);
    boxes.insert(boxes.end(), second.begin(), second.end());
    const std::vector<float> logits = {2.0f, -3.0f};  // the second is below 0.5
    const std::vector<PalmDetection> palms = decode_palms(boxes.data(), logits.data(), anchors);
    ASSERT_EQ(palms.size(), 1u);
    const PalmDetection& p = palms[0];
    EXPECT_NEAR(p.score, 1 / (1 + std::exp(-2.0f)), 1e-6);
    EXPECT_NEAR(p.xmin, 0.25f + 0.1f - 0.25f, 1e-6);  // centre 0.35, width 0.5
    EXPECT_NEAR(p.ymin, 0.5f - 0.05f - 0.125f, 1e-6);
    EXPECT_NEAR(p.width, 0.5f, 1e-6);
    EXPECT_NEAR(p.height, 0.25f, 1e-6);
    EXPECT_NEAR(p.keypoints[3].x, 0.25f + (19.2f + 30) / 192, 1e-6);
    EXPECT_NEAR(p.keypoints[3].y, 0.5f + (-9.6f - 15) / 192, 1e-6);
}

TEST(PalmDecoding, ClipsLogitsBeforeTheSigmoid) {
    const std::vector<Anchor> anchors = {{0.5f, 0.5f, 1, 1}};
    const std::vector<float> boxes = raw_row(0, 0, 10, 10);
    const std::vector<float> logits = {1e30f};
    const std::vector<PalmDetection> palms = decode_palms(boxes.data(), logits.data(), anchors);
    ASSERT_EQ(palms.size(), 1u);
    EXPECT_FLOAT_EQ(palms[0].score, 1 / (1 + std::exp(-100.0f)));
}

PalmDetection palm(float x, float y, float w, float h, float score) {
    PalmDetection p;
    p.xmin = x;
    p.ymin = y;
    p.width = w;
    p.height = h;
    p.score = score;
    for (int k = 0; k < 7; ++k) p.keypoints[k] = {x + w / 2, y + k * 0.01f};
    return p;
}

TEST(WeightedSuppression, MergesOverlappingPalmsIntoTheirScoreWeightedMean) {
    const std::vector<PalmDetection> kept = weighted_nms({
        palm(0.10f, 0.10f, 0.20f, 0.20f, 0.6f),
        palm(0.12f, 0.10f, 0.20f, 0.20f, 0.9f),  // IoU 0.82 with the first
        palm(0.60f, 0.60f, 0.20f, 0.20f, 0.7f),  // apart
    });
    ASSERT_EQ(kept.size(), 2u);
    EXPECT_FLOAT_EQ(kept[0].score, 0.9f);  // the best keeps its own score
    EXPECT_NEAR(kept[0].xmin, (0.10f * 0.6f + 0.12f * 0.9f) / 1.5f, 1e-6);
    EXPECT_NEAR(kept[0].width, 0.20f, 1e-6);
    EXPECT_NEAR(kept[0].keypoints[0].x, (0.20f * 0.6f + 0.22f * 0.9f) / 1.5f, 1e-6);
    EXPECT_FLOAT_EQ(kept[1].score, 0.7f);
    EXPECT_NEAR(kept[1].xmin, 0.60f, 1e-6);
}

TEST(WeightedSuppression, KeepsPalmsThatOverlapByNoMoreThanTheThreshold) {
    // IoU of these two: 0.1 x 0.2 overlap / (0.04 + 0.04 - 0.02) = 1/3 > 0.3, then 0.25 < 0.3.
    EXPECT_EQ(weighted_nms({palm(0, 0, 0.2f, 0.2f, 0.9f), palm(0.1f, 0, 0.2f, 0.2f, 0.8f)}).size(), 1u);
    EXPECT_EQ(weighted_nms({palm(0, 0, 0.2f, 0.2f, 0.9f), palm(0.12f, 0, 0.2f, 0.2f, 0.8f)}).size(), 2u);
    EXPECT_NEAR(box_iou(palm(0, 0, 0.2f, 0.2f, 1), palm(0.1f, 0, 0.2f, 0.2f, 1)), 1.0f / 3, 1e-6);
    EXPECT_EQ(box_iou(palm(0, 0, 0, 0.2f, 1), palm(0, 0, 0, 0.2f, 1)), 0.0f);
}

TEST(Letterbox, RemovingItMapsTheInputSquareBackOntoTheImage) {
    const Letterbox tall = square_letterbox({100, 200});  // bars left and right
    EXPECT_FLOAT_EQ(tall.left, 0.25f);
    EXPECT_FLOAT_EQ(tall.right, 0.25f);
    EXPECT_FLOAT_EQ(tall.top, 0.0f);
    const PalmDetection back = remove_letterbox(palm(0.25f, 0.1f, 0.5f, 0.2f, 1), tall);
    EXPECT_NEAR(back.xmin, 0.0f, 1e-6);
    EXPECT_NEAR(back.width, 1.0f, 1e-6);
    EXPECT_NEAR(back.ymin, 0.1f, 1e-6);
    EXPECT_NEAR(back.keypoints[0].x, 0.5f, 1e-6);
    const Letterbox wide = square_letterbox({300, 150});
    EXPECT_FLOAT_EQ(wide.top, 0.25f);
    EXPECT_FLOAT_EQ(wide.left, 0.0f);
}

PalmDetection pointing(cv::Point2f wrist, cv::Point2f middle) {
    PalmDetection p = palm(0.4f, 0.4f, 0.2f, 0.1f, 0.9f);
    p.keypoints[0] = wrist;
    p.keypoints[2] = middle;
    return p;
}

TEST(HandRegion, StandsUprightForAnUprightHandAndMovesTowardsTheFingers) {
    const HandRegion r = hand_region(pointing({0.5f, 0.6f}, {0.5f, 0.4f}), {400, 400});
    EXPECT_NEAR(r.rotation, 0.0f, 1e-6);
    EXPECT_NEAR(r.x_center, 0.5f, 1e-6);
    EXPECT_NEAR(r.y_center, 0.45f - 0.5f * 0.1f, 1e-6);  // half the palm's height up
    EXPECT_NEAR(r.width, 0.2f * 2.6f, 1e-6);  // square on the longer side, 2.6 times
    EXPECT_NEAR(r.height, 0.2f * 2.6f, 1e-6);
    const std::array<cv::Point2f, 4> c = region_corners(r, {400, 400});
    EXPECT_NEAR(c[0].x, (0.5f - 0.26f) * 400, 1e-3);  // bottom-left
    EXPECT_NEAR(c[0].y, (0.4f + 0.26f) * 400, 1e-3);
    EXPECT_NEAR(c[2].x, (0.5f + 0.26f) * 400, 1e-3);  // top-right
    EXPECT_NEAR(c[2].y, (0.4f - 0.26f) * 400, 1e-3);
}

TEST(HandRegion, TurnsWithAHandPointingRight) {
    const HandRegion r = hand_region(pointing({0.3f, 0.5f}, {0.6f, 0.5f}), {400, 400});
    EXPECT_NEAR(r.rotation, kPi / 2, 1e-6);
    EXPECT_NEAR(r.x_center, 0.5f + 0.5f * 0.1f, 1e-6);  // moved right, towards the fingers
    EXPECT_NEAR(r.y_center, 0.45f, 1e-6);
}

TEST(HandRegion, IsSquareInPixelsOnAnImageThatIsNot) {
    const HandRegion r = hand_region(pointing({0.5f, 0.6f}, {0.5f, 0.4f}), {200, 400});
    // Palm 0.2 x 200 = 40 px wide, 0.1 x 400 = 40 px high: a 104-px square.
    EXPECT_NEAR(r.width * 200, 104.0f, 1e-3);
    EXPECT_NEAR(r.height * 400, 104.0f, 1e-3);
}

TEST(LandmarkBox, BoundsTheTwentyOnePointsInsideTheImage) {
    HandLandmarks hand;
    for (int i = 0; i < 21; ++i) hand.points[i] = {50.0f + i, 80.0f - i};
    hand.points[4] = {-10.0f, 30.0f};
    const cv::Rect box = landmark_box(hand, {100, 100});
    EXPECT_EQ(box.x, 0);
    EXPECT_EQ(box.y, 30);
    EXPECT_EQ(box.br().x, 71);  // 70 rounded up, one past
    EXPECT_EQ(box.br().y, 81);
}

TEST(CropSettings, NameTheDetectorAndTravelThroughJson) {
    PreprocessSettings s;
    EXPECT_STREQ(crop_method(s), "threshold");
    s.detector = crop_detector_from_string("mediapipe");
    s.landmark_margin = 0.3;
    EXPECT_STREQ(crop_method(s), "mediapipe");
    nlohmann::json j = s;
    EXPECT_EQ(j["detector"], "mediapipe");
    PreprocessSettings back = j.get<PreprocessSettings>();
    EXPECT_EQ(back.detector, CropDetector::mediapipe);
    EXPECT_DOUBLE_EQ(back.landmark_margin, 0.3);
    j.erase("detector");  // a file from before the MediaPipe crop
    EXPECT_EQ(j.get<PreprocessSettings>().detector, CropDetector::classical);
    j["detector"] = "palm";
    EXPECT_THROW(j.get<PreprocessSettings>(), Error);
    EXPECT_THROW(crop_detector_from_string("yolo"), UsageError);
    s.crop_hand = false;
    EXPECT_STREQ(crop_method(s), "none");
}

TEST(CropSettings, ThePlainPreprocessRefusesToGuessAMediaPipeCrop) {
    PreprocessSettings s;
    s.detector = CropDetector::automatic;
    Radiograph r;
    r.pixels = cv::Mat(64, 64, CV_8UC1, cv::Scalar(100));
    EXPECT_THROW(preprocess(r, s), UsageError);
    s.crop_hand = false;  // no crop: nothing to detect
    EXPECT_NO_THROW(preprocess(r, s));
}

// --- The port against MediaPipe's own build --------------------------------------------------

// MediaPipe Hands' landmarks on clean phantoms (`boneage synth --clean --count 40 --seed 1`),
// as MediaPipe's own WebAssembly build (npm @mediapipe/hands 0.4.1675469240, full models, one
// hand, detection confidence 0.5, each image alone) found them in headless Chromium with
// scripts/mediapipe-reference: x and y as fractions of the 512 x 640 film. The PNG's SHA-256
// says which pixels they were computed on.
struct Reference {
    const char* id;
    const char* png_sha256;
    float points[21][2];
};

const Reference kReferences[] = {
    {"1001", "1ff7d396bb66d55d9026824b7a302e2417c1e225fc57e1121eedb37ee0d9dca0",
     {{0.505699, 0.613052}, {0.569325, 0.580671}, {0.607719, 0.523567}, {0.638358, 0.469756}, {0.673401, 0.426497}, {0.546904, 0.445961}, {0.575280, 0.369465}, {0.593316, 0.316727}, {0.605582, 0.273891}, {0.496590, 0.439631}, {0.501742, 0.354927}, {0.506704, 0.296711}, {0.507998, 0.248773}, {0.451704, 0.451269}, {0.433096, 0.373886}, {0.420798, 0.319535}, {0.411134, 0.274772}, {0.413199, 0.478421}, {0.375585, 0.425792}, {0.351722, 0.387647}, {0.331913, 0.352068}}},
    {"1002", "bdd3339338e749ffd53f383df11b2997c2b90386f0afa380ed6be7b881177ed8",
     {{0.505167, 0.612015}, {0.572447, 0.577557}, {0.613339, 0.520723}, {0.647344, 0.464744}, {0.683701, 0.417466}, {0.548722, 0.437897}, {0.579886, 0.355159}, {0.595874, 0.301098}, {0.606116, 0.256810}, {0.494523, 0.429959}, {0.499735, 0.337819}, {0.503659, 0.276961}, {0.503662, 0.227585}, {0.446065, 0.441726}, {0.418742, 0.358146}, {0.399320, 0.299834}, {0.383238, 0.252176}, {0.405930, 0.469103}, {0.364794, 0.409216}, {0.339051, 0.367837}, {0.316774, 0.328990}}},
    {"1021", "8c05eb59e289a2c54e28b023329da50a39e4c24f631af9b0a07a978884ff0e84",
     {{0.495614, 0.609597}, {0.557522, 0.578986}, {0.593464, 0.527822}, {0.619992, 0.478094}, {0.652617, 0.436763}, {0.541584, 0.455888}, {0.569685, 0.386334}, {0.587160, 0.340010}, {0.599642, 0.301126}, {0.496126, 0.448323}, {0.503803, 0.369919}, {0.509168, 0.316145}, {0.510924, 0.272791}, {0.454830, 0.457617}, {0.439216, 0.387117}, {0.429498, 0.339136}, {0.422158, 0.299841}, {0.418250, 0.479795}, {0.388029, 0.430217}, {0.368339, 0.394254}, {0.352107, 0.359985}}},
    {"1033", "27bb598c5cdabdc0983e38c228aa6c954ced1478dd6a0ef5ade36a03624c1f83",
     {{0.500534, 0.615004}, {0.565995, 0.583347}, {0.608337, 0.528639}, {0.643184, 0.476414}, {0.680508, 0.432182}, {0.548190, 0.442737}, {0.573914, 0.367975}, {0.588205, 0.318033}, {0.597734, 0.275863}, {0.494436, 0.436425}, {0.495000, 0.351109}, {0.493323, 0.292832}, {0.488379, 0.244358}, {0.446775, 0.449534}, {0.426759, 0.373173}, {0.413517, 0.321337}, {0.402609, 0.278888}, {0.405401, 0.478171}, {0.367602, 0.423988}, {0.343215, 0.385951}, {0.322287, 0.349625}}},
    {"1037", "94397aeaa68c353df25a6bbc95debdae9e9e8d89215d11f5b6b0b699005ecec2",
     {{0.502487, 0.604784}, {0.572124, 0.573516}, {0.614993, 0.523015}, {0.649958, 0.471125}, {0.690476, 0.422127}, {0.552876, 0.433932}, {0.583842, 0.351964}, {0.599755, 0.295716}, {0.609341, 0.248214}, {0.494448, 0.427779}, {0.493591, 0.335102}, {0.492386, 0.271168}, {0.486470, 0.218093}, {0.442449, 0.441350}, {0.418667, 0.360295}, {0.401668, 0.302162}, {0.388546, 0.253912}, {0.399842, 0.468863}, {0.359630, 0.410041}, {0.334775, 0.368739}, {0.314301, 0.330166}}},
    {"1039", "c644c68e0fc36e1f031d0848e8553a42a3cfd2398052c2047bea023ca22626ac",
     {{0.498640, 0.610399}, {0.560344, 0.576059}, {0.598769, 0.523264}, {0.630377, 0.470723}, {0.669005, 0.428252}, {0.538940, 0.440934}, {0.567036, 0.366358}, {0.584118, 0.319614}, {0.596926, 0.278140}, {0.488544, 0.435011}, {0.493625, 0.353120}, {0.497824, 0.297413}, {0.498007, 0.251641}, {0.443111, 0.446377}, {0.421558, 0.370554}, {0.407847, 0.319674}, {0.396850, 0.277777}, {0.404525, 0.470045}, {0.371784, 0.412690}, {0.350608, 0.374072}, {0.332943, 0.337618}}},
};

bool have_models() {
    return std::filesystem::exists(mediapipe_model_dir() / "palm_detection_full.tflite") &&
           std::filesystem::exists(mediapipe_model_dir() / "hand_landmark_full.tflite");
}

#define SKIP_WITHOUT_MODELS()                                                                  \
    if (!have_models())                                                                        \
    GTEST_SKIP() << "MediaPipe's models are not in " << mediapipe_model_dir()                  \
                 << " (scripts/fetch-mediapipe-models puts them there)"

class MediaPipePort : public ::testing::Test {
protected:
    static void SetUpTestSuite() {
        dir_ = new boneage::test::ScratchDir("mediapipe");
        SynthOptions clean;
        clean.nuisances = false;
        write_phantom_set(dir_->path(), 40, 1, clean);
    }
    static void TearDownTestSuite() {
        delete dir_;
        dir_ = nullptr;
    }
    static std::filesystem::path film(const std::string& id) { return dir_->path() / (id + ".png"); }
    static boneage::test::ScratchDir* dir_;
};
boneage::test::ScratchDir* MediaPipePort::dir_ = nullptr;

// Within a pixel of MediaPipe's own answer on every point, a third of one on average: the
// reference ran XNNPACK on WebAssembly and sampled its inputs with the GPU converter, whose
// bilinear weights are not float32's (0.06 to 0.29 px mean difference on these six).
TEST_F(MediaPipePort, FindsTheLandmarksMediaPipesOwnBuildFinds) {
    SKIP_WITHOUT_MODELS();
    const MediaPipeHands hands;
    for (const Reference& ref : kReferences) {
        SCOPED_TRACE(ref.id);
        ASSERT_EQ(file_sha256(film(ref.id)), ref.png_sha256)
            << "the phantom generator draws other pixels than the reference was computed on: "
               "run scripts/mediapipe-reference on the new phantoms and update kReferences";
        const cv::Mat grey = to_grey8(read_radiograph(film(ref.id)).pixels, "test");
        const std::optional<HandLandmarks> hand = hands.find(grey);
        ASSERT_TRUE(hand.has_value());
        EXPECT_GT(hand->presence, 0.9f);
        EXPECT_GT(hand->palm_score, 0.5f);
        double sum = 0;
        for (int i = 0; i < 21; ++i) {
            const cv::Point2f expected(ref.points[i][0] * grey.cols, ref.points[i][1] * grey.rows);
            const double distance = cv::norm(hand->points[i] - expected);
            EXPECT_LT(distance, 1.0) << "landmark " << i << " at " << hand->points[i] << ", MediaPipe " << expected;
            sum += distance;
        }
        EXPECT_LT(sum / 21, 0.4);
    }
}

TEST_F(MediaPipePort, CropsAPhantomHandWithItsWristAndFingertips) {
    SKIP_WITHOUT_MODELS();
    PreprocessSettings settings;
    settings.detector = CropDetector::mediapipe;
    // A phantom's hand fills less of its frame than a radiograph's: the palm detector finds it
    // without the border that real films need.
    settings.landmark_padding = 0;
    const std::shared_ptr<const HandFinder> finder = hand_finder_for(settings);
    SynthOptions clean;
    clean.nuisances = false;
    const std::vector<PhantomLabel> labels = phantom_labels(40, 1);
    for (int index : {1, 21, 33}) {
        const Phantom phantom = make_phantom(labels[index], phantom_seed(1, index), clean);
        SCOPED_TRACE(phantom.label.id);
        const Preprocessed p = preprocess(Radiograph{phantom.image, {}}, settings, *finder);
        ASSERT_EQ(p.hand.method, "mediapipe");
        const cv::Rect crop =
            crop_box(p.hand.box, phantom.image.size(), crop_margin_for(p.hand.method, settings));
        // The whole hand down to the forearm's cut: the phantom's own extent, all but the
        // forearm below the crop (the film runs on to its edge).
        const cv::Rect hand = phantom.hand_box;
        EXPECT_LE(crop.x, hand.x);
        EXPECT_GE(crop.br().x, hand.br().x);
        EXPECT_LE(crop.y, hand.y);
        EXPECT_GT(crop.br().y, hand.y + hand.height * 3 / 4);
        EXPECT_EQ(p.image.size(), cv::Size(settings.output_size, settings.output_size));
    }
}

TEST_F(MediaPipePort, FallsBackToTheClassicalFinderOnlyWhenAsked) {
    SKIP_WITHOUT_MODELS();
    Radiograph blank;
    blank.pixels = cv::Mat(400, 300, CV_8UC1, cv::Scalar(20));
    PreprocessSettings settings;
    settings.detector = CropDetector::mediapipe;
    HandBox alone = hand_finder_for(settings)->find(blank.pixels, settings);
    EXPECT_EQ(alone.method, "full-frame");
    ASSERT_FALSE(alone.warnings.empty());
    EXPECT_NE(alone.warnings.front().find("MediaPipe"), std::string::npos) << alone.warnings.front();
    settings.detector = CropDetector::automatic;
    HandBox fallback = hand_finder_for(settings)->find(blank.pixels, settings);
    const HandBox classical = find_hand(blank.pixels, settings);
    EXPECT_EQ(fallback.method, classical.method);
    EXPECT_EQ(fallback.box, classical.box);
    ASSERT_FALSE(fallback.warnings.empty());
    EXPECT_NE(fallback.warnings.front().find("classical finder"), std::string::npos);
}

TEST(MediaPipeModels, MissingOnesAreNamedWithTheWayToFetchThem) {
    const std::filesystem::path nowhere = std::filesystem::temp_directory_path() / "no-such-models";
    try {
        MediaPipeHands hands(nowhere);
        FAIL() << "loaded models from a folder that does not exist";
    } catch (const Error& e) {
        EXPECT_EQ(e.kind(), ErrorKind::NotFound);
        EXPECT_NE(std::string(e.what()).find("palm_detection_full.tflite"), std::string::npos) << e.what();
        EXPECT_NE(std::string(e.what()).find("fetch-mediapipe-models"), std::string::npos) << e.what();
    }
}

}  // namespace
