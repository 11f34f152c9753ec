// Test-time views: the predictor's answer with N views is the mean of its answers on the N
// changed images, the views are the documented ones, and the CLI takes --tta and records it.
#include <boneage/model.hpp>
#include <boneage/predict.hpp>
#include <boneage/preprocess.hpp>
#include <boneage/synth.hpp>
#include <boneage/augment.hpp>

#include "model_support.hpp"
#include "support.hpp"

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>
#include <torch/torch.h>

#include <cmath>
#include <string>
#include <vector>

using namespace boneage;

namespace {

const std::string kCli = BONEAGE_CLI;

// Runs the CLI with its stderr dropped, so that the output is stdout alone.
int run_stdout(const std::string& args, std::string* out) {
    return test::run_command("{ " + kCli + " " + args + " 2>/dev/null; }", out);
}

constexpr int kSize = 64;

std::vector<cv::Mat> preprocessed_phantoms(int count) {
    PreprocessSettings settings;
    settings.output_size = kSize;
    std::vector<cv::Mat> out;
    for (const PhantomLabel& label : phantom_labels(count, 23)) {
        Radiograph r;
        r.pixels = make_phantom(label, 11 + out.size()).image;
        out.push_back(preprocess(r, settings).image.clone());
    }
    return out;
}

// A shallow net at kSize px with sex as an input, its batch norms drawn at random and its
// output spread wide enough that a view's change shows.
LoadedModel small_model() {
    torch::manual_seed(3);
    LoadedModel m;
    m.meta.config.arch = "shallow";
    m.meta.config.input_size = kSize;
    m.meta.config.use_sex = true;
    m.meta.config.label_offset = 120.0;
    m.meta.config.label_scale = 400.0;
    m.meta.preprocess.output_size = kSize;
    m.net = make_model(m.meta.config);
    test::randomise_batch_norms(*m.net);
    return m;
}

std::vector<const std::uint8_t*> pixels(const std::vector<cv::Mat>& images) {
    std::vector<const std::uint8_t*> out;
    for (const cv::Mat& m : images) out.push_back(m.data);
    return out;
}

Predictor fp32_predictor(const LoadedModel& m, int views) {
    PredictorOptions options;
    options.precision = Precision::Fp32;
    options.views = views;
    options.batch = 2;  // several forward passes per view, the last one short
    return Predictor(m, options);
}

}  // namespace

TEST(TestTimeViews, TheFirstViewIsTheImageAndTheOthersComeInOppositePairs) {
    const std::vector<Augmentation> all = tta_views(kMaxViews);
    ASSERT_EQ(all.size(), std::size_t(kMaxViews));
    EXPECT_EQ(all[0].rotation_deg, 0.0);
    EXPECT_EQ(all[0].scale, 1.0);
    EXPECT_EQ(all[0].shift_x, 0.0);
    EXPECT_EQ(all[0].contrast, 1.0);
    EXPECT_EQ(all[0].brightness, 0.0);
    for (std::size_t v = 1; v + 1 < all.size(); v += 2) {
        SCOPED_TRACE(v);
        EXPECT_DOUBLE_EQ(all[v].rotation_deg, -all[v + 1].rotation_deg);
        EXPECT_DOUBLE_EQ(all[v].scale - 1.0, 1.0 - all[v + 1].scale);
        EXPECT_DOUBLE_EQ(all[v].shift_x, -all[v + 1].shift_x);
        const bool changes = all[v].rotation_deg != 0.0 || all[v].scale != 1.0 || all[v].shift_x != 0.0;
        EXPECT_TRUE(changes) << "every view after the first must change the image";
    }
    EXPECT_EQ(tta_views(3).size(), 3u);
    EXPECT_THROW(tta_views(0), Error);
    EXPECT_THROW(tta_views(kMaxViews + 1), Error);
    PredictorOptions bad;
    bad.views = -1;
    EXPECT_THROW(Predictor(small_model(), bad), Error);
}

// A model file may record the views it was measured with; prediction takes them unless told.
TEST(TestTimeViews, TheModelsOwnNumberIsTheDefaultAndAGivenNumberWins) {
    LoadedModel m = small_model();
    EXPECT_EQ(Predictor(m).views(), 1);
    m.meta.views = 3;
    EXPECT_EQ(Predictor(m).views(), 3);
    PredictorOptions one;
    one.views = 1;
    EXPECT_EQ(Predictor(m, one).views(), 1);
    m.meta.views = kMaxViews + 1;
    EXPECT_THROW(Predictor(m, PredictorOptions{}), Error);  // not `Predictor(m);`, a declaration
}

TEST(TestTimeViews, TheAnswerIsTheMeanOverTheChangedImages) {
    torch::set_num_threads(2);
    const std::vector<cv::Mat> images = preprocessed_phantoms(3);
    const LoadedModel m = small_model();
    const int views = 5;
    Predictor single = fp32_predictor(m, 1);
    Predictor averaged = fp32_predictor(m, views);
    EXPECT_EQ(averaged.views(), views);

    // Sex given, and sex unknown (each view read as both sexes).
    for (const std::vector<bool>& male : {std::vector<bool>{true, false, true}, std::vector<bool>{}}) {
        SCOPED_TRACE(male.empty() ? "sex unknown" : "sex given");
        std::vector<double> expected(images.size(), 0.0);
        double moved_most = 0.0;
        const std::vector<double> plain = single.predict_preprocessed(pixels(images), male);
        for (const Augmentation& view : tta_views(views)) {
            std::vector<cv::Mat> changed;
            for (const cv::Mat& image : images) {
                cv::Mat out(kSize, kSize, CV_8UC1);
                augment_image(image.data, kSize, view, out.data);
                changed.push_back(out);
            }
            const std::vector<double> months = single.predict_preprocessed(pixels(changed), male);
            for (std::size_t i = 0; i < images.size(); ++i) {
                expected[i] += months[i] / views;
                moved_most = std::max(moved_most, std::abs(months[i] - plain[i]));
            }
        }
        ASSERT_GT(moved_most, 1e-2) << "the views must change the answers";
        const std::vector<double> got = averaged.predict_preprocessed(pixels(images), male);
        ASSERT_EQ(got.size(), expected.size());
        for (std::size_t i = 0; i < got.size(); ++i) EXPECT_NEAR(got[i], expected[i], 1e-6) << i;
    }
}

TEST(TestTimeViewsCli, TtaIsRecordedAndOutOfRangeIsAUsageError) {
    test::ScratchDir dir("tta-cli");
    auto phantoms = write_phantom_set(dir.path(), 2, 4);
    LoadedModel m = small_model();
    save_model(dir / "m.bin", m.net, m.meta);
    const std::string model = " --model '" + (dir / "m.bin").string() + "'";
    const std::string image = " '" + (dir / (phantoms[0].label.id + ".png")).string() + "'";
    std::string out;
    ASSERT_EQ(run_stdout("predict --format json --tta 3" + model + image, &out), 0) << out;
    nlohmann::json j = nlohmann::json::parse(out);
    EXPECT_EQ(j[0]["views"], 3);
    ASSERT_EQ(run_stdout("evaluate --format json --tta 3" + model + " --images '" +
                             dir.path().string() + "' --labels '" +
                             (dir / "labels.csv").string() + "'", &out),
              0)
        << out;
    j = nlohmann::json::parse(out);
    EXPECT_EQ(j["views"], 3);
    EXPECT_EQ(j["n"], 2);
    // An ensemble written with --tta 5 runs five views by default; --tta still overrides it.
    ASSERT_EQ(test::run_command(kCli + " ensemble '" + (dir / "m.bin").string() + "' '" +
                                    (dir / "m.bin").string() + "' --tta 5 --out '" +
                                    (dir / "e.bin").string() + "'",
                                &out),
              0)
        << out;
    EXPECT_NE(out.find("5 test-time views"), std::string::npos) << out;
    EXPECT_EQ(load_model(dir / "e.bin").meta.views, 5);
    const std::string ensemble = " --model '" + (dir / "e.bin").string() + "'";
    ASSERT_EQ(run_stdout("predict --format json" + ensemble + image, &out), 0) << out;
    EXPECT_EQ(nlohmann::json::parse(out)[0]["views"], 5);
    ASSERT_EQ(run_stdout("predict --format json --tta 1" + ensemble + image, &out), 0) << out;
    EXPECT_EQ(nlohmann::json::parse(out)[0]["views"], 1);
    ASSERT_EQ(run_stdout("predict --format json" + model + image, &out), 0) << out;
    EXPECT_EQ(nlohmann::json::parse(out)[0]["views"], 1);
    EXPECT_EQ(test::run_command(kCli + " ensemble '" + (dir / "m.bin").string() +
                                    "' --tta 0 --out '" + (dir / "f.bin").string() + "'",
                                &out),
              2)
        << out;
    EXPECT_FALSE(std::filesystem::exists(dir / "f.bin"));

    for (const std::string sub : {"predict", "evaluate"}) {
        SCOPED_TRACE(sub);
        int rc = test::run_command(kCli + " " + sub + " --tta 8" + model + image, &out);
        EXPECT_EQ(rc, 2) << out;
        EXPECT_NE(out.find("--tta"), std::string::npos) << out;
    }
}
