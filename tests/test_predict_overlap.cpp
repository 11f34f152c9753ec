// Preprocessing beside the network (PredictorOptions::overlap) changes when inputs are prepared,
// never what comes out: the same answers, bit for bit, in the same order, with the same
// failures, across chunks, sexes known and unknown, and a short last batch.
#include <boneage/model.hpp>
#include <boneage/predict.hpp>
#include <boneage/synth.hpp>

#include "model_support.hpp"
#include "support.hpp"

#include <gtest/gtest.h>
#include <opencv2/imgcodecs.hpp>
#include <torch/torch.h>

#include <fstream>
#include <string>
#include <vector>

using namespace boneage;

namespace {

constexpr int kSize = 64;

// A shallow net at kSize px that takes sex, its batch norms drawn at random so that images and
// sexes get different answers.
LoadedModel small_model() {
    torch::manual_seed(5);
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

std::vector<Prediction> run(const LoadedModel& model, bool overlap,
                            const std::vector<std::filesystem::path>& files,
                            const std::vector<PredictRequest>& requests) {
    PredictorOptions options;
    options.overlap = overlap;
    options.batch = 3;  // several passes per chunk, the last of each group short
    options.precision = Precision::Fp32;
    Predictor p(model, options);
    return p.predict_batch(files, requests);
}

}  // namespace

TEST(PredictOverlap, GivesTheSameAnswersInTheSameOrderAsPreprocessingFirst) {
    test::ScratchDir dir("predict-overlap");
    SynthOptions small;
    small.width = 160;
    small.height = 200;
    std::vector<std::filesystem::path> files;
    std::vector<PredictRequest> requests;
    // 70 inputs: two chunks of the predictor (64 and 6); every ninth unreadable; sexes known
    // (male, female) and unknown in turn.
    const std::vector<PhantomLabel> labels = phantom_labels(70, 17);
    for (std::size_t i = 0; i < labels.size(); ++i) {
        const std::filesystem::path file = dir / ("p" + std::to_string(i) + ".png");
        if (i % 9 == 4) {
            std::ofstream(file) << "not an image";
        } else {
            ASSERT_TRUE(cv::imwrite(file.string(), make_phantom(labels[i], 100 + i, small).image));
        }
        files.push_back(file);
        PredictRequest r;
        if (i % 3 == 0) r.male = true;
        if (i % 3 == 1) r.male = false;
        requests.push_back(r);
    }
    const LoadedModel model = small_model();
    const std::vector<Prediction> before = run(model, false, files, requests);
    const std::vector<Prediction> beside = run(model, true, files, requests);
    ASSERT_EQ(before.size(), files.size());
    ASSERT_EQ(beside.size(), files.size());
    std::size_t ok = 0, failed = 0;
    for (std::size_t i = 0; i < files.size(); ++i) {
        SCOPED_TRACE(files[i].filename().string());
        EXPECT_EQ(beside[i].path, files[i]);
        EXPECT_EQ(beside[i].status, before[i].status);
        EXPECT_EQ(beside[i].message, before[i].message);
        EXPECT_EQ(beside[i].raw_months, before[i].raw_months);  // bit for bit
        EXPECT_EQ(beside[i].bone_age_months, before[i].bone_age_months);
        EXPECT_EQ(beside[i].sex_averaged, before[i].sex_averaged);
        EXPECT_EQ(beside[i].warnings, before[i].warnings);
        EXPECT_EQ(beside[i].hand.box, before[i].hand.box);
        ok += before[i].ok() ? 1 : 0;
        failed += before[i].status == "error" ? 1 : 0;
    }
    EXPECT_EQ(failed, 8u);  // the unreadable ones, and only they
    EXPECT_EQ(ok, 62u);
    // The answers differ between inputs: a test of equal constants would prove nothing.
    EXPECT_NE(before[0].raw_months, before[1].raw_months);
}
