// Evaluation and prediction: the metrics against their formulas, the predictor on phantoms
// with a tiny untrained model, and the report's files.
#include <boneage/evaluate.hpp>
#include <boneage/fast_path.hpp>
#include <boneage/model.hpp>
#include <boneage/predict.hpp>
#include <boneage/preprocess.hpp>
#include <boneage/synth.hpp>

#include "support.hpp"

#include <gtest/gtest.h>
#include <fmt/format.h>
#include <nlohmann/json.hpp>
#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>

#include <cmath>
#include <fstream>

namespace fs = std::filesystem;
using namespace boneage;

namespace {

constexpr int kSize = 64;  // a tiny input keeps every forward pass in milliseconds

// A freshly initialised shallow model on 64 px inputs, saved to `file`, with a short training
// history in its metadata as train would record it.
LoadedModel tiny_model(const fs::path& file, bool use_sex = false, unsigned seed = 1) {
    torch::manual_seed(seed);
    ModelConfig config;
    config.arch = "shallow";
    config.use_sex = use_sex;
    config.input_size = kSize;
    config.label_offset = 120;
    config.label_scale = 40;
    ModelMetadata meta;
    meta.config = config;
    meta.preprocess.output_size = kSize;
    meta.training = {{"ms_per_step", 12.5},
                     {"history",
                      {{{"epoch", 1}, {"train_loss", 0.30}, {"train_mae", 40.0}, {"val_loss", 0.35},
                        {"val_mae", 42.0}, {"val_rmse", 50.0}, {"ms_per_step", 12.0}},
                       {{"epoch", 2}, {"train_loss", 0.10}, {"train_mae", 25.0}, {"val_loss", 0.15},
                        {"val_mae", 28.0}, {"val_rmse", 35.0}, {"ms_per_step", 13.0}}}}};
    meta.validation = {{"n", 10}, {"mae", 28.0}, {"rmse", 35.0}, {"msle", 0.15}};
    BoneAgeNet net = make_model(config);
    save_model(file, net, meta);
    return load_model(file);
}

void write_text(const fs::path& file, const std::string& text) {
    std::ofstream(file, std::ios::binary) << text;
}

}  // namespace

TEST(Metrics, EqualTheirFormulasOnHandValues) {
    std::vector<double> truth = {10, 20, 30, 100};
    std::vector<double> pred = {12, 18, 33, 90};
    Metrics m = compute_metrics(truth, pred);
    EXPECT_EQ(m.n, 4u);
    EXPECT_DOUBLE_EQ(m.mae, (2.0 + 2.0 + 3.0 + 10.0) / 4.0);
    EXPECT_DOUBLE_EQ(m.rmse, std::sqrt((4.0 + 4.0 + 9.0 + 100.0) / 4.0));
    double msle = 0;
    for (int i = 0; i < 4; ++i) msle += std::pow(std::log(pred[i] + 1) - std::log(truth[i] + 1), 2);
    EXPECT_NEAR(m.msle, msle / 4.0, 1e-12);
}

TEST(Metrics, MsleClipsNegativePredictionsAsKerasDoes) {
    double expected = std::pow(std::log(1e-7 + 1.0) - std::log(6.0), 2);
    EXPECT_NEAR(squared_log_error(5.0, -3.0), expected, 1e-12);
    EXPECT_NEAR(compute_metrics({5.0}, {-3.0}).msle, expected, 1e-12);
    EXPECT_DOUBLE_EQ(squared_log_error(42.0, 42.0), 0.0);
}

TEST(Metrics, EmptyInputGivesZeroAndMismatchedLengthsThrow) {
    Metrics m = compute_metrics({}, {});
    EXPECT_EQ(m.n, 0u);
    EXPECT_EQ(m.mae, 0.0);
    EXPECT_THROW(compute_metrics({1, 2}, {1}), Error);
}

TEST(Metrics, AgeBandsGroupItemsByTrueAge) {
    std::vector<ItemResult> items = {
        {"a", 12, 14, true}, {"b", 30, 20, false}, {"c", 50, 50, true}, {"d", 230, 220, true}};
    auto bands = metrics_by_age_band(items);
    ASSERT_EQ(bands.size(), 3u);  // 0-2 y, 2-5 y, 15-19 y; empty bands are left out
    EXPECT_EQ(bands[0].first.label, "0-2 y");
    EXPECT_DOUBLE_EQ(bands[0].second.mae, 2.0);
    EXPECT_EQ(bands[1].second.n, 2u);
    EXPECT_DOUBLE_EQ(bands[1].second.mae, 5.0);
    EXPECT_EQ(bands[2].first.label, "15-19 y");  // older than 228 months joins the last band
    EXPECT_DOUBLE_EQ(bands[2].second.mae, 10.0);
}

TEST(Split, KeepsTheValidationOrTrainingSideById) {
    auto val = parse_split("val:0.3");
    auto train = parse_split("train:0.3");
    int in_val = 0;
    for (int i = 0; i < 200; ++i) {
        std::string id = std::to_string(1000 + i);
        EXPECT_EQ(val(id), in_validation_split(id, 0.3));
        EXPECT_NE(val(id), train(id));
        in_val += val(id);
    }
    EXPECT_GT(in_val, 20);
    EXPECT_LT(in_val, 110);
    EXPECT_TRUE(parse_split("all")("anything"));
    EXPECT_THROW(parse_split("val"), UsageError);
    EXPECT_THROW(parse_split("val:1.5"), UsageError);
    EXPECT_THROW(parse_split("test:0.1"), UsageError);
    EXPECT_THROW(parse_split("val:0.1x"), UsageError);
}

TEST(Split, FoldKeepsOneCrossValidationFoldAndNotfoldTheRest) {
    // fold 0 of 5 is the 20% validation split, id for id.
    auto fold0 = parse_split("fold:0/5"), val = parse_split("val:0.2");
    auto fold3 = parse_split("fold:3/5"), not3 = parse_split("notfold:3/5");
    int in_fold3 = 0;
    for (int i = 0; i < 2000; ++i) {
        const std::string id = std::to_string(1000 + i);
        EXPECT_EQ(fold0(id), val(id)) << id;
        EXPECT_EQ(fold3(id), fold_of(id, 5) == 3) << id;
        EXPECT_NE(fold3(id), not3(id)) << id;
        in_fold3 += fold3(id);
    }
    EXPECT_GT(in_fold3, 300);
    EXPECT_LT(in_fold3, 500);
    for (const char* bad : {"fold:5/5", "fold:0/1", "fold:a/5", "fold:1", "fold:-1/5",
                            "notfold:2/", "fold:1/5x", "fold"})
        EXPECT_THROW(parse_split(bad), UsageError) << bad;
}

// Two folds of hand-made predictions whose every figure is worked out below.
TEST(OutOfFold, SummaryMatchesHandComputedFigures) {
    auto item = [](const std::string& id, double truth, double error, bool male) {
        ItemResult r;
        r.id = id;
        r.true_months = truth;
        r.predicted_months = truth + error;
        r.male = male;
        return r;
    };
    // Errors +2, -4 (fold 0) and +6, -8 (fold 1): |e| 2, 4, 6, 8.
    const std::vector<std::vector<ItemResult>> parts = {
        {item("a", 30, 2, false), item("b", 100, -4, true)},
        {item("c", 110, 6, true), item("d", 200, -8, false)}};
    const OutOfFoldSummary s = summarise_out_of_fold(parts);
    EXPECT_EQ(s.all.n, 4u);
    EXPECT_DOUBLE_EQ(s.all.mae, 5.0);
    // Sample SD of 2, 4, 6, 8 is sqrt(20 / 3); over sqrt(4).
    EXPECT_NEAR(s.all.mae_se, std::sqrt(20.0 / 3.0) / 2.0, 1e-12);
    EXPECT_NEAR(s.all.rmse, std::sqrt(30.0), 1e-12);
    EXPECT_DOUBLE_EQ(s.all.mean_error, -1.0);

    ASSERT_EQ(s.folds.size(), 2u);
    EXPECT_EQ(s.folds[0].label, "fold 0");
    EXPECT_DOUBLE_EQ(s.folds[0].mae, 3.0);
    EXPECT_NEAR(s.folds[0].mae_se, std::sqrt(2.0) / std::sqrt(2.0), 1e-12);  // SD of 2, 4
    EXPECT_DOUBLE_EQ(s.folds[1].mae, 7.0);
    EXPECT_DOUBLE_EQ(s.folds[1].mean_error, -1.0);

    // 30 months: 2-5 y; 100 and 110: 5-9 y and 9-12 y; 200: 15-19 y.
    ASSERT_EQ(s.age_bands.size(), 4u);
    EXPECT_EQ(s.age_bands[0].label, "2-5 y");
    EXPECT_EQ(s.age_bands[1].label, "5-9 y");
    EXPECT_DOUBLE_EQ(s.age_bands[1].mae, 4.0);
    EXPECT_EQ(s.age_bands[2].label, "9-12 y");
    EXPECT_EQ(s.age_bands[3].label, "15-19 y");
    EXPECT_EQ(s.age_bands[3].n, 1u);
    EXPECT_TRUE(std::isnan(s.age_bands[3].mae_se));  // one item has no spread

    ASSERT_EQ(s.sexes.size(), 2u);
    EXPECT_EQ(s.sexes[0].label, "girls");
    EXPECT_DOUBLE_EQ(s.sexes[0].mae, 5.0);  // 2 and 8
    EXPECT_DOUBLE_EQ(s.sexes[0].mean_error, -3.0);
    EXPECT_EQ(s.sexes[1].label, "boys");
    EXPECT_DOUBLE_EQ(s.sexes[1].mean_error, 1.0);

    // An id in two folds is no longer out-of-fold.
    std::vector<std::vector<ItemResult>> twice = parts;
    twice[1].push_back(item("a", 30, 1, false));
    EXPECT_THROW(summarise_out_of_fold(twice), UsageError);
    EXPECT_THROW(summarise_out_of_fold({{}, {}}), UsageError);
}

TEST(OutOfFold, ReadsTheReportsPredictionsCsv) {
    test::ScratchDir dir("oof-csv");
    const fs::path good = dir / "good.csv";
    write_text(good,
               "id,true,predicted,male,error,model\n"
               "1377,180.00,171.500,False,-8.500,fold0\n"
               "\"a,\"\"b\"\"\",24.00,30.250,True,6.250,fold0\r\n");
    const std::vector<ItemResult> items = read_predictions_csv(good);
    ASSERT_EQ(items.size(), 2u);
    EXPECT_EQ(items[0].id, "1377");
    EXPECT_DOUBLE_EQ(items[0].true_months, 180.0);
    EXPECT_DOUBLE_EQ(items[0].predicted_months, 171.5);
    EXPECT_FALSE(items[0].male);
    EXPECT_EQ(items[1].id, "a,\"b\"");
    EXPECT_TRUE(items[1].male);
    EXPECT_DOUBLE_EQ(items[1].error(), 6.25);

    const fs::path two_models = dir / "two.csv";
    write_text(two_models,
               "id,true,predicted,male,error,model\n1,10,11,True,1,a\n2,10,12,True,2,b\n");
    try {
        read_predictions_csv(two_models);
        FAIL() << "two models accepted";
    } catch (const Error& e) {
        EXPECT_EQ(e.kind(), ErrorKind::BadData);
        EXPECT_NE(std::string(e.what()).find("line 3"), std::string::npos) << e.what();
    }
    const fs::path bad_number = dir / "bad.csv";
    write_text(bad_number, "id,true,predicted,male\n1,ten,11,True\n");
    EXPECT_THROW(read_predictions_csv(bad_number), Error);
    const fs::path no_column = dir / "short.csv";
    write_text(no_column, "id,true,male\n1,10,True\n");
    EXPECT_THROW(read_predictions_csv(no_column), Error);
    EXPECT_THROW(read_predictions_csv(dir / "absent.csv"), Error);
}

TEST(Predictor, GivesTheNetsOwnAnswerAndAHandBoxOnPhantoms) {
    test::ScratchDir dir("predict-phantoms");
    auto phantoms = write_phantom_set(dir.path(), 3, 7);
    PredictorOptions fp32;
    fp32.precision = Precision::Fp32;
    Predictor predictor(tiny_model(dir / "m.bin"), fp32);
    std::vector<fs::path> files;
    for (const Phantom& p : phantoms) files.push_back(dir / (p.label.id + ".png"));
    std::size_t progress_calls = 0;
    auto out = predictor.predict_files(files, {}, [&](std::size_t, std::size_t total) {
        EXPECT_EQ(total, 3u);
        ++progress_calls;
    });
    ASSERT_EQ(out.size(), 3u);
    EXPECT_GE(progress_calls, 1u);
    for (std::size_t i = 0; i < out.size(); ++i) {
        SCOPED_TRACE(files[i].string());
        EXPECT_EQ(out[i].status, "ok") << out[i].message;
        // The network's own forward on the image preprocessed with the model's settings; the
        // tiny net answers near its label offset (120 months), so nothing is clamped.
        torch::NoGradGuard no_grad;
        const cv::Mat prepared =
            preprocess(read_radiograph(files[i]), predictor.settings()).image.clone();
        const torch::Tensor image = images_to_tensor({prepared.data}, kSize);
        const double expected = predictor.model().net->forward(image, {}).item<double>();
        EXPECT_NEAR(out[i].raw_months, expected, 1e-3);
        EXPECT_EQ(out[i].bone_age_months, out[i].raw_months);
        EXPECT_EQ(out[i].path, files[i]);
        EXPECT_GT(out[i].hand.box.area(), 0);
        EXPECT_EQ(out[i].width, 512);
        EXPECT_FALSE(out[i].z_score.has_value());
    }
    // The same image in memory gives the same answer as from its file.
    Prediction single = predictor.predict(read_radiograph(files[1]));
    EXPECT_NEAR(single.raw_months, out[1].raw_months, 1e-4);
}

TEST(Predictor, BadInputFailsAloneAndTheOthersGoOn) {
    test::ScratchDir dir("predict-bad");
    auto phantoms = write_phantom_set(dir.path(), 2, 3);
    write_text(dir / "broken.png", "this is not an image");
    Predictor predictor(tiny_model(dir / "m.bin"));
    std::vector<fs::path> files = {dir / (phantoms[0].label.id + ".png"), dir / "broken.png",
                                   dir / "missing.png", dir / (phantoms[1].label.id + ".png")};
    auto out = predictor.predict_files(files);
    ASSERT_EQ(out.size(), 4u);
    EXPECT_TRUE(out[0].ok()) << out[0].message;
    EXPECT_EQ(out[1].status, "error");
    EXPECT_NE(out[1].message.find("broken.png"), std::string::npos) << out[1].message;
    EXPECT_EQ(out[2].status, "error");
    EXPECT_NE(out[2].message.find("missing.png"), std::string::npos) << out[2].message;
    EXPECT_TRUE(out[3].ok()) << out[3].message;
    nlohmann::json j = out[1];
    EXPECT_EQ(j["status"], "error");
    EXPECT_TRUE(j["bone_age_months"].is_null());
}

TEST(Predictor, AveragesBothSexesWhenTheModelUsesSexAndNoneIsGiven) {
    test::ScratchDir dir("predict-sex");
    Predictor predictor(tiny_model(dir / "m.bin", /*use_sex=*/true, 5));
    cv::Mat a(kSize, kSize, CV_8UC1, cv::Scalar(0)), b(kSize, kSize, CV_8UC1, cv::Scalar(0));
    cv::circle(a, {30, 30}, 20, cv::Scalar(200), -1);
    cv::rectangle(b, cv::Rect(10, 5, 40, 50), cv::Scalar(150), -1);
    std::vector<const std::uint8_t*> images = {a.data, b.data};
    auto as_male = predictor.predict_preprocessed(images, {true, true});
    auto as_female = predictor.predict_preprocessed(images, {false, false});
    auto unknown = predictor.predict_preprocessed(images);
    for (int i = 0; i < 2; ++i) EXPECT_NEAR(unknown[i], 0.5 * (as_male[i] + as_female[i]), 1e-4);
    EXPECT_THROW(predictor.predict_preprocessed(images, {true}), Error);

    auto phantoms = write_phantom_set(dir.path(), 1, 9);
    fs::path file = dir / (phantoms[0].label.id + ".png");
    Prediction guessed = predictor.predict_files({file}).front();
    ASSERT_TRUE(guessed.ok()) << guessed.message;
    EXPECT_TRUE(guessed.sex_averaged);
    EXPECT_FALSE(guessed.male.has_value());
    bool warned = false;
    for (const auto& w : guessed.warnings) warned = warned || w.find("sex not given") != std::string::npos;
    EXPECT_TRUE(warned);
    PredictRequest request;
    request.male = false;
    request.chronological_age_months = 100;
    Prediction given = predictor.predict_files({file}, request).front();
    EXPECT_FALSE(given.sex_averaged);
    EXPECT_EQ(given.male, std::optional<bool>(false));
    EXPECT_EQ(given.chronological_age_months, std::optional<double>(100));
}

TEST(Predictor, ResizesWhenTheModelTakesSmallerInputsThanPreprocessingMakes) {
    test::ScratchDir dir("predict-resize");
    ModelConfig config;
    config.input_size = 32;  // trained on a 64 px cache, resized per batch as training does
    config.label_offset = 100;
    ModelMetadata meta;
    meta.config = config;
    meta.preprocess.output_size = kSize;
    save_model(dir / "small.bin", make_model(config), meta);
    Predictor predictor(load_model(dir / "small.bin"));
    EXPECT_EQ(predictor.image_size(), kSize);
    EXPECT_EQ(predictor.input_size(), 32);
    auto phantoms = write_phantom_set(dir.path(), 1, 4);
    Prediction p = predictor.predict_files({dir / (phantoms[0].label.id + ".png")}).front();
    EXPECT_TRUE(p.ok()) << p.message;
    EXPECT_TRUE(std::isfinite(p.raw_months));

    LoadedModel broken = load_model(dir / "small.bin");
    broken.meta.preprocess.output_size = 0;
    EXPECT_THROW(Predictor{broken}, Error);
}

namespace {

// A phantom set whose labels name one id without an image, and a model beside it.
struct EvalFixture {
    test::ScratchDir dir{"evaluate"};
    fs::path labels;
    EvalFixture() {
        write_phantom_set(dir.path(), 5, 11);
        labels = dir / "labels.csv";
        std::ofstream(labels, std::ios::app) << "4242,100,True\n";
    }
};

}  // namespace

TEST(Evaluate, MetricsMatchTheItemsAndMissingImagesAreListed) {
    EvalFixture f;
    Predictor predictor(tiny_model(f.dir / "m.bin"));
    EvalSetOptions o;
    o.images_dir = f.dir.path();
    o.labels_csv = f.labels;
    EvalSet set = load_eval_set(o, predictor.settings());
    ASSERT_EQ(set.samples.size(), 5u);
    ASSERT_EQ(set.failed.size(), 1u);
    EXPECT_EQ(set.failed[0].id, "4242");
    Evaluation e = evaluate(predictor, set, f.dir / "m.bin");
    ASSERT_EQ(e.items.size(), 5u);
    std::vector<double> truth, pred;
    for (const auto& r : e.items) {
        truth.push_back(r.true_months);
        pred.push_back(r.predicted_months);
        EXPECT_TRUE(std::isfinite(r.predicted_months));
    }
    Metrics m = compute_metrics(truth, pred);
    EXPECT_EQ(e.metrics.n, 5u);
    EXPECT_DOUBLE_EQ(e.metrics.mae, m.mae);
    EXPECT_EQ(e.model, "m");
    EXPECT_EQ(e.arch, "shallow");
    EXPECT_EQ(e.model_bytes, fs::file_size(f.dir / "m.bin"));
    EXPECT_EQ(e.ms_per_step, std::optional<double>(12.5));
    EXPECT_EQ(e.history.size(), 2u);

    nlohmann::json j = e;
    for (const char* key : {"n", "mae", "rmse", "msle", "failed"}) EXPECT_TRUE(j.contains(key)) << key;
    EXPECT_EQ(j["failed"][0]["id"], "4242");
    EXPECT_TRUE(j["failed"][0]["error"].is_string());
}

TEST(Evaluate, TheTrainingLossIsTheOneTheModelFileRecords) {
    EvalFixture f;
    LoadedModel paper = tiny_model(f.dir / "paper.bin");  // no options: the paper's MSLE
    LoadedModel mae = tiny_model(f.dir / "mae.bin");
    mae.meta.training["options"] = {{"loss", "mae"}};
    save_model(f.dir / "mae.bin", mae.net, mae.meta);
    EvalSetOptions o;
    o.images_dir = f.dir.path();
    o.labels_csv = f.labels;
    Predictor first(paper);
    EvalSet set = load_eval_set(o, first.settings());
    EXPECT_EQ(evaluate(first, set, f.dir / "paper.bin").training_loss, "msle");
    Predictor second(load_model(f.dir / "mae.bin"));
    EXPECT_EQ(evaluate(second, set, f.dir / "mae.bin").training_loss, "mae");
}

TEST(Evaluate, APreparedCacheGivesTheSamePredictionsAsTheImages) {
    EvalFixture f;
    Predictor predictor(tiny_model(f.dir / "m.bin"));
    PrepareOptions prep;
    prep.images_dir = f.dir.path();
    prep.labels_csv = f.labels;
    prep.out = f.dir / "set.cache";
    prep.settings = predictor.settings();
    prepare_dataset(prep);

    EvalSetOptions from_images;
    from_images.images_dir = f.dir.path();
    from_images.labels_csv = f.labels;
    EvalSetOptions from_cache;
    from_cache.cache = prep.out;
    Evaluation a = evaluate(predictor, load_eval_set(from_images, predictor.settings()), {});
    EvalSet cached = load_eval_set(from_cache, predictor.settings());
    EXPECT_TRUE(cached.warnings.empty());
    Evaluation b = evaluate(predictor, cached, {});
    ASSERT_EQ(a.items.size(), b.items.size());
    for (std::size_t i = 0; i < a.items.size(); ++i) {
        EXPECT_EQ(a.items[i].id, b.items[i].id);
        EXPECT_NEAR(a.items[i].predicted_months, b.items[i].predicted_months, 1e-4);
    }

    PreprocessSettings other = predictor.settings();
    other.output_size = 32;
    EXPECT_THROW(load_eval_set(from_cache, other), UsageError);
    from_cache.images_dir = f.dir.path();
    EXPECT_THROW(load_eval_set(from_cache, predictor.settings()), UsageError);
}

TEST(Report, WritesTheTableThePredictionsAndTheFigures) {
    EvalFixture f;
    Predictor first(tiny_model(f.dir / "first.bin", false, 1));
    Predictor second(tiny_model(f.dir / "second.bin", false, 2));
    EvalSetOptions o;
    o.images_dir = f.dir.path();
    o.labels_csv = f.labels;
    EvalSet set = load_eval_set(o, first.settings());
    std::vector<Evaluation> evals = {evaluate(first, set, f.dir / "first.bin"),
                                     evaluate(second, set, f.dir / "second.bin")};
    fs::path out = f.dir / "report";
    ReportOptions options;
    options.figures = gnuplot_available();
    evals[1].views = 3;  // as a model whose file records three test-time views
    ReportFiles files = write_report(out, evals, &set, options);

    std::ifstream md_in(files.markdown);
    std::string md((std::istreambuf_iterator<char>(md_in)), {});
    EXPECT_NE(md.find("test-time views per image: first 1, second 3 (the mean"), std::string::npos)
        << md;
    EXPECT_NE(md.find("| model | arch |"), std::string::npos);
    EXPECT_NE(md.find("| first | shallow |"), std::string::npos) << md;
    EXPECT_NE(md.find("| second | shallow |"), std::string::npos);
    EXPECT_NE(md.find("ms/step"), std::string::npos);
    EXPECT_NE(md.find("4242"), std::string::npos);  // the missing image is reported

    // The table by sex: the first model's female row from its own items.
    double abs_sum = 0.0;
    std::size_t girls = 0;
    for (const ItemResult& r : evals[0].items)
        if (!r.male) {
            abs_sum += std::abs(r.error());
            ++girls;
        }
    ASSERT_GT(girls, 0u);
    ASSERT_LT(girls, evals[0].items.size());
    EXPECT_NE(md.find(fmt::format("| female | {} | {:.2f} |", girls, abs_sum / double(girls))),
              std::string::npos)
        << md;

    std::ifstream csv(files.predictions);
    std::string header;
    std::getline(csv, header);
    EXPECT_EQ(header, "id,true,predicted,male,error,model");
    int rows = 0;
    for (std::string line; std::getline(csv, line);) ++rows;
    EXPECT_EQ(rows, 10);

    if (!options.figures) GTEST_SKIP() << "gnuplot is not installed; figures not checked";
    for (const char* name : {"metrics.png", "training_first.png", "training_second.png",
                             "scatter_first.png", "age_bands.png", "samples.png"}) {
        cv::Mat png = cv::imread((out / name).string());
        EXPECT_FALSE(png.empty()) << name;
        EXPECT_GT(png.cols, 300) << name;
        EXPECT_NE(md.find(name), std::string::npos) << name;
    }
    EXPECT_EQ(files.figures.size(), 7u);
}

TEST(Report, SampleSheetHasATilePerSampleInAGrid) {
    EvalSet set;
    for (int i = 0; i < 5; ++i)
        set.samples.push_back({std::to_string(i), 20.0 * i, i % 2 == 0,
                               cv::Mat(kSize, kSize, CV_8UC1, cv::Scalar(40 * i))});
    cv::Mat sheet = sample_sheet(set, nullptr, 5, 100);
    ASSERT_FALSE(sheet.empty());
    EXPECT_EQ(sheet.type(), CV_8UC3);
    // Four tiles on the first row, two rows; each tile 100 px wide plus a 2 px border.
    EXPECT_EQ(sheet.cols, 4 * 104);
    EXPECT_GT(sheet.rows, 2 * 104);
}
