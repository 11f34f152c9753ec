// The hand gate: the negatives it learns from, its rules, its file, its training, the bundled
// gate on fresh phantoms and negatives, and the rejected status through predict and evaluate.
#include <gtest/gtest.h>

#include <boneage/error.hpp>
#include <boneage/hand_gate.hpp>
#include <boneage/model.hpp>
#include <boneage/negatives.hpp>
#include <boneage/splitmix.hpp>
#include <boneage/synth.hpp>
#include <fstream>
#include <nlohmann/json.hpp>
#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>

#include "model_support.hpp"
#include "support.hpp"

namespace fs = std::filesystem;
using boneage::GateVerdict;
using boneage::HandGate;
using boneage::NegativeKind;
using boneage::test::run_command;
using boneage::test::ScratchDir;

namespace {

const std::string kCli = BONEAGE_CLI;

std::string q(const fs::path& p) { return "'" + p.string() + "'"; }

// Runs the CLI with its stderr dropped, so that stdout alone can be parsed.
int run_stdout(const std::string& args, std::string* out) {
    return run_command("{ " + kCli + " " + args + " 2>/dev/null; }", out);
}

cv::Mat phantom(std::uint64_t seed, int width = 512, int height = 640) {
    boneage::SynthOptions o;
    o.width = width;
    o.height = height;
    return boneage::make_phantom({"", 12.0 + static_cast<double>(seed % 200), seed % 2 == 0}, seed,
                                 o)
        .image;
}

boneage::Radiograph as_radiograph(const cv::Mat& image) {
    boneage::Radiograph r;
    if (image.channels() == 3)
        cv::cvtColor(image, r.pixels, cv::COLOR_BGR2GRAY);
    else
        r.pixels = image;
    return r;
}

const HandGate& bundled_gate() {
    static const HandGate gate = HandGate::load(boneage::default_gate_path());
    return gate;
}

bool have_bundled_gate() { return !boneage::default_gate_path().empty(); }

}  // namespace

TEST(Negatives, EachKindIsDeterministicAndOfTheStatedSize) {
    const cv::Mat source = phantom(5);
    for (NegativeKind kind : boneage::kNegativeKinds) {
        const cv::Mat a = boneage::make_negative(kind, 11, source);
        const cv::Mat b = boneage::make_negative(kind, 11, source);
        const cv::Mat c = boneage::make_negative(kind, 12, source);
        SCOPED_TRACE(boneage::to_string(kind));
        ASSERT_EQ(a.depth(), CV_8U);
        EXPECT_TRUE(a.channels() == 1 || a.channels() == 3);
        EXPECT_GE(std::min(a.cols, a.rows), 24);
        EXPECT_LE(std::max(a.cols, a.rows), 1024);
        EXPECT_EQ(cv::norm(a, b, cv::NORM_INF), 0.0) << "same seed, same image";
        EXPECT_TRUE(a.size() != c.size() || cv::norm(a, c, cv::NORM_L1) > 0.0)
            << "another seed, another image";
        EXPECT_EQ(boneage::parse_negative_kind(boneage::to_string(kind)), kind);
    }
    EXPECT_FALSE(boneage::parse_negative_kind("hand").has_value());
}

TEST(Negatives, ACloseUpNeedsARadiographToCutFrom) {
    EXPECT_THROW(boneage::make_negative(NegativeKind::PartialHand, 1), boneage::Error);
    const cv::Mat source = phantom(9);
    const cv::Mat crop = boneage::make_negative(NegativeKind::PartialHand, 1, source);
    // A close-up is cut from the radiograph: its grey levels are the source's, not a drawing's.
    double lo, hi;
    cv::minMaxLoc(crop, &lo, &hi);
    EXPECT_GT(hi - lo, 20.0);
}

TEST(HandGate, ViewIsTheWholeFrameSquashedToEightBits) {
    cv::Mat wide(300, 900, CV_16UC1);
    cv::randu(wide, 0, 65535);
    const cv::Mat view = boneage::gate_view(wide);
    EXPECT_EQ(view.type(), CV_8UC1);
    EXPECT_EQ(view.rows, boneage::kGateViewSize);
    EXPECT_EQ(view.cols, boneage::kGateViewSize);
    EXPECT_THROW(boneage::gate_view(cv::Mat()), boneage::Error);
}

TEST(HandGate, RulesRefuseSmallAndColourImagesBeforeTheNetwork) {
    const HandGate gate(3);  // untrained: only the rules decide here
    boneage::Radiograph small = as_radiograph(phantom(1, 200, 120));
    GateVerdict v = gate.check(small);
    EXPECT_FALSE(v.accepted);
    EXPECT_EQ(v.kind, "too-small");
    EXPECT_NE(v.reason.find("200x120"), std::string::npos) << v.reason;

    // Colour is measured when a file is read: a page with coloured discs is refused, the same
    // page in grey saved as three equal channels is not refused for colour.
    ScratchDir dir("gate_colour");
    cv::Mat page(400, 400, CV_8UC3, cv::Scalar(250, 250, 250));
    cv::circle(page, {120, 150}, 80, cv::Scalar(0, 0, 255), cv::FILLED);
    cv::circle(page, {280, 260}, 70, cv::Scalar(255, 120, 0), cv::FILLED);
    cv::imwrite((dir / "colour.png").string(), page);
    cv::Mat grey, grey3;
    cv::cvtColor(page, grey, cv::COLOR_BGR2GRAY);
    cv::cvtColor(grey, grey3, cv::COLOR_GRAY2BGR);
    cv::imwrite((dir / "grey3.png").string(), grey3);
    const boneage::Radiograph colour = boneage::read_radiograph(dir / "colour.png");
    const boneage::Radiograph grey_page = boneage::read_radiograph(dir / "grey3.png");
    EXPECT_GT(colour.info.colourfulness, boneage::kMaxRadiographColour);
    EXPECT_LT(grey_page.info.colourfulness, 1.0);
    v = gate.check(colour);
    EXPECT_FALSE(v.accepted);
    EXPECT_EQ(v.kind, "colour");
    EXPECT_NE(gate.check(grey_page).kind, "colour");
}

TEST(HandGate, FileRoundTripKeepsWeightsThresholdAndMeta) {
    ScratchDir dir("gate_file");
    HandGate gate(7);
    gate.set_threshold(0.37);
    gate.meta()["note"] = "round trip";
    gate.save(dir / "gate.bin");
    EXPECT_FALSE(fs::exists(dir / "gate.bin.partial"));
    const HandGate back = HandGate::load(dir / "gate.bin");
    EXPECT_DOUBLE_EQ(back.threshold(), 0.37);
    EXPECT_EQ(back.meta().value("note", ""), "round trip");
    const std::vector<cv::Mat> views = {boneage::gate_view(phantom(2)),
                                        boneage::gate_view(phantom(3))};
    const auto a = gate.probabilities(views), b = back.probabilities(views);
    ASSERT_EQ(a.size(), 2u);
    ASSERT_EQ(a[0].size(), 1 + boneage::kNegativeKinds.size());
    for (std::size_t i = 0; i < a.size(); ++i)
        for (std::size_t k = 0; k < a[i].size(); ++k) EXPECT_FLOAT_EQ(a[i][k], b[i][k]);
}

TEST(HandGate, RefusesFilesThatAreNotGates) {
    ScratchDir dir("gate_bad");
    { std::ofstream(dir / "text.bin") << "not a gate"; }
    try {
        HandGate::load(dir / "text.bin");
        FAIL() << "a text file loaded as a gate";
    } catch (const boneage::Error& e) {
        EXPECT_EQ(e.kind(), boneage::ErrorKind::BadModel);
        EXPECT_NE(std::string(e.what()).find("text.bin"), std::string::npos) << e.what();
    }
    // A boneage model file is a zip archive too, but not a gate.
    boneage::test::write_tiny_model(dir / "model.bin");
    EXPECT_THROW(HandGate::load(dir / "model.bin"), boneage::Error);
    EXPECT_THROW(HandGate::load(dir / "missing.bin"), boneage::Error);
}

TEST(HandGate, TrainingSeparatesPhantomsFromNegatives) {
    std::vector<cv::Mat> hands;
    for (std::uint64_t s = 0; s < 240; ++s) {
        cv::Mat h = phantom(100 + s, 256, 320);
        hands.push_back(h);
    }
    boneage::GateTrainingOptions o;
    o.epochs = 4;
    o.batch = 64;
    o.negatives_per_kind = 120;
    o.seed = 5;
    o.cropped_share = 0.0;  // full frames only: the small run learns one kind of hand
    HandGate gate(5);
    const boneage::GateTrainingReport report = boneage::train_hand_gate(gate, hands, o);
    ASSERT_EQ(report.epoch_loss.size(), 4u);
    EXPECT_LT(report.epoch_loss.back(), report.epoch_loss.front()) << "the loss falls";
    EXPECT_GT(report.threshold, 0.0);
    EXPECT_LE(report.threshold, 0.5);
    EXPECT_TRUE(gate.meta().contains("training"));

    // Fresh phantoms and fresh negatives, none seen in training.
    int hands_ok = 0, negatives_refused = 0, negatives = 0;
    for (std::uint64_t s = 0; s < 20; ++s)
        hands_ok += gate.check(as_radiograph(phantom(9000 + s, 256, 320))).accepted;
    for (NegativeKind kind : {NegativeKind::Blank, NegativeKind::Noise, NegativeKind::Document}) {
        for (std::uint64_t s = 0; s < 10; ++s) {
            negatives_refused +=
                !gate.check(as_radiograph(boneage::make_negative(kind, 7000 + s))).accepted;
            ++negatives;
        }
    }
    EXPECT_GE(hands_ok, 16) << "of 20 fresh phantoms accepted";
    EXPECT_GE(negatives_refused, 24) << "of " << negatives << " fresh negatives refused";
}

TEST(BundledGate, AcceptsFreshPhantomsAndRefusesEachKindOfNegative) {
    if (!have_bundled_gate()) GTEST_SKIP() << "no models/hand_gate.bin";
    const HandGate& gate = bundled_gate();
    int accepted = 0;
    const cv::Size frames[] = {{512, 640}, {640, 480}, {1200, 1500}, {320, 320}};
    for (int i = 0; i < 24; ++i) {
        const cv::Size f = frames[i % 4];
        const GateVerdict v =
            gate.check(as_radiograph(phantom(boneage::splitmix64(424242 + i), f.width, f.height)));
        accepted += v.accepted;
        if (!v.accepted)
            ADD_FAILURE() << "phantom " << i << " refused: " << v.reason << " (" << v.hand_score
                          << ")";
    }
    EXPECT_EQ(accepted, 24);
    const cv::Mat source = phantom(31337);
    for (NegativeKind kind : boneage::kNegativeKinds) {
        int refused = 0;
        for (int i = 0; i < 20; ++i) {
            const GateVerdict v = gate.check(as_radiograph(
                boneage::make_negative(kind, boneage::splitmix64(555000 + i), source)));
            refused += !v.accepted;
            if (!v.accepted) {
                EXPECT_FALSE(v.reason.empty());
                EXPECT_LT(v.hand_score, gate.threshold());
            }
        }
        // A close-up of a phantom can hold four whole fingers: the hardest kind to call.
        const int least = kind == NegativeKind::PartialHand ? 16 : 19;
        EXPECT_GE(refused, least) << boneage::to_string(kind) << ": refused " << refused
                                  << " of 20";
    }
}

TEST(BundledGate, PredictRejectsWithAReasonAndAcceptAllReadsAnyway) {
    if (!have_bundled_gate()) GTEST_SKIP() << "no models/hand_gate.bin";
    if (boneage::default_model_path().empty()) GTEST_SKIP() << "no bundled model";
    ScratchDir dir("gate_cli");
    cv::imwrite((dir / "blank.png").string(), cv::Mat(600, 500, CV_8UC1, cv::Scalar(128)));
    cv::imwrite((dir / "hand.png").string(), phantom(77));
    std::string out;
    int rc = run_stdout("predict --format json " + q(dir / "blank.png") + " " + q(dir / "hand.png"),
                        &out);
    EXPECT_EQ(rc, 1) << out;  // as for errors
    const nlohmann::json j = nlohmann::json::parse(out);
    ASSERT_EQ(j.size(), 2u);
    EXPECT_EQ(j[0]["status"], "rejected");
    EXPECT_TRUE(j[0]["bone_age_months"].is_null());
    EXPECT_NE(j[0]["message"].get<std::string>().find("blank"), std::string::npos)
        << j[0]["message"];
    EXPECT_EQ(j[1]["status"], "ok");
    EXPECT_TRUE(j[1]["bone_age_months"].is_number());
    EXPECT_GE(j[1]["hand_score"].get<double>(), j[0]["hand_score"].get<double>());

    rc = run_stdout("predict --accept-all --format csv " + q(dir / "blank.png"), &out);
    EXPECT_EQ(rc, 0) << out;
    EXPECT_NE(out.find(",ok,"), std::string::npos) << out;

    rc = run_command(kCli + " predict " + q(dir / "blank.png"), &out);  // stdout and stderr
    EXPECT_EQ(rc, 1);
    EXPECT_NE(out.find("rejected: not a radiograph"), std::string::npos) << out;
    EXPECT_NE(out.find("no bone age"), std::string::npos) << out;
    EXPECT_EQ(out.find("months"), std::string::npos) << out;
}

TEST(BundledGate, EvaluateCountsRejectedImagesAndLeavesThemOutOfTheFigures) {
    if (!have_bundled_gate()) GTEST_SKIP() << "no models/hand_gate.bin";
    if (boneage::default_model_path().empty()) GTEST_SKIP() << "no bundled model";
    ScratchDir dir("gate_eval");
    std::ofstream labels(dir / "labels.csv");
    labels << "id,boneage,male\n";
    for (int i = 0; i < 3; ++i) {
        cv::imwrite((dir / (std::to_string(100 + i) + ".png")).string(), phantom(600 + i));
        labels << 100 + i << ",120,True\n";
    }
    cv::Mat noise(500, 400, CV_8UC1);
    cv::randu(noise, 0, 255);
    cv::imwrite((dir / "200.png").string(), noise);
    labels << "200,60,False\n";
    labels.close();
    std::string out;
    const std::string args =
        " --format json --images " + q(dir.path()) + " --labels " + q(dir / "labels.csv");
    int rc = run_stdout("evaluate" + args, &out);
    EXPECT_EQ(rc, 1) << out;
    nlohmann::json j = nlohmann::json::parse(out);
    EXPECT_EQ(j["n"], 3);
    ASSERT_EQ(j["rejected"].size(), 1u);
    EXPECT_EQ(j["rejected"][0]["id"], "200");
    EXPECT_TRUE(j["failed"].empty());

    rc = run_stdout("evaluate --accept-all" + args, &out);
    EXPECT_EQ(rc, 0) << out;
    j = nlohmann::json::parse(out);
    EXPECT_EQ(j["n"], 4);
    EXPECT_TRUE(j["rejected"].empty());
}
