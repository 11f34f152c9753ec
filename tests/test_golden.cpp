// Golden values: what this build makes of a few fixed phantoms, pinned, so that any change to
// them is seen. The preprocessed bytes are pinned by a hash, the bundled model's answers in
// months with a tolerance.
//
// When preprocessing changes on purpose (hand finder, crop, CLAHE, letterbox), or the bundled
// model is replaced, update the values below with an explanation in the commit: what changed,
// and why the new values are right (and bump kPreprocessVersion, preprocess.hpp, for the
// former). An OpenCV upgrade may change the bytes too; that also deserves a line in the commit.
#include <gtest/gtest.h>

#include <boneage/fast_path.hpp>
#include <boneage/predict.hpp>
#include <boneage/preprocess.hpp>
#include <boneage/synth.hpp>

#include <cstdint>
#include <cstdio>
#include <string>
#include <vector>

namespace boneage {
namespace {

const std::filesystem::path kBundled = std::filesystem::path(BONEAGE_SOURCE_DIR) / "models" /
                                       "default.bin";

// 64-bit FNV-1a of the image's rows, as hex: a fingerprint, not a security hash.
std::string fingerprint(const cv::Mat& image) {
    std::uint64_t h = 14695981039346656037ull;
    for (int y = 0; y < image.rows; ++y) {
        const std::uint8_t* row = image.ptr<std::uint8_t>(y);
        for (std::size_t x = 0; x < image.cols * image.elemSize(); ++x) {
            h ^= row[x];
            h *= 1099511628211ull;
        }
    }
    char text[17];
    std::snprintf(text, sizeof text, "%016llx", static_cast<unsigned long long>(h));
    return text;
}

struct Golden {
    PhantomLabel label;
    std::uint64_t seed;
    int width, height;
    bool bits16;
    std::string bytes;  // fingerprint of preprocess() at the bundled model's settings
    double months;      // the bundled model's fp32 answer, sex given (the model was trained on
                        // real films, so a phantom's drawn age is not its answer)
};

const std::vector<Golden>& goldens() {
    static const std::vector<Golden> g = {
        // 512 px on the longer side, as the development films.
        {{"g1", 24.0, false}, 101, 512, 640, false, "33980eab97ac71bb", 45.400},
        {{"g2", 96.0, true}, 102, 512, 640, false, "b443c9a014b1bde0", 87.156},
        {{"g3", 168.0, false}, 103, 512, 640, false, "f65181c5f9dca062", 155.105},
        // A 16-bit film of a scanner's size.
        {{"g4", 132.0, true}, 104, 1200, 1500, true, "43bd806531c6bb12", 119.448},
    };
    return g;
}

Phantom draw(const Golden& g) {
    SynthOptions o;
    o.width = g.width;
    o.height = g.height;
    o.bits16 = g.bits16;
    return make_phantom(g.label, g.seed, o);
}

TEST(Golden, PreprocessedBytesOfFixedPhantoms) {
    const PreprocessSettings settings = load_model(kBundled).meta.preprocess;
    for (const Golden& g : goldens()) {
        SCOPED_TRACE(g.label.id);
        Radiograph r;
        r.pixels = draw(g).image;
        const Preprocessed out = preprocess(r, settings);
        ASSERT_EQ(out.hand.method, "threshold") << "the finder must find these hands";
        EXPECT_EQ(fingerprint(out.image), g.bytes);
    }
}

TEST(Golden, BundledModelMonthsOnFixedPhantomsAndOlderScoresOlder) {
    PredictorOptions options;
    options.precision = Precision::Fp32;
    Predictor predictor(load_model(kBundled), options);
    std::vector<double> months;
    for (const Golden& g : goldens()) {
        SCOPED_TRACE(g.label.id);
        Radiograph r;
        r.pixels = draw(g).image;
        PredictRequest request;
        request.male = g.label.male;
        const Prediction p = predictor.predict(r, request);
        ASSERT_TRUE(p.ok()) << p.message;
        // fp32 on another CPU's kernels moves an answer by thousandths of a month.
        EXPECT_NEAR(p.raw_months, g.months, 0.05);
        months.push_back(p.raw_months);
    }
    // The three phantoms drawn alike at 2, 8 and 14 years: each scores older than the one
    // before, by years.
    ASSERT_EQ(months.size(), 4u);
    EXPECT_GT(months[1] - months[0], 24.0) << months[0] << " then " << months[1];
    EXPECT_GT(months[2] - months[1], 24.0) << months[1] << " then " << months[2];
}

}  // namespace
}  // namespace boneage
