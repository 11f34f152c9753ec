// A film whose JPEG data was cut short: `boneage predict` still reads it, and says in its JSON
// and CSV results that the data was damaged, where libjpeg's own message used to reach only
// the console.
#include <gtest/gtest.h>

#include <boneage/synth.hpp>
#include <fstream>
#include <nlohmann/json.hpp>
#include <opencv2/imgcodecs.hpp>

#include "model_support.hpp"
#include "support.hpp"

namespace fs = std::filesystem;
using boneage::test::run_command;
using boneage::test::ScratchDir;

namespace {

std::string q(const fs::path& p) { return "'" + p.string() + "'"; }

std::string slurp(const fs::path& file) {
    std::ifstream in(file);
    return std::string(std::istreambuf_iterator<char>(in), {});
}

// A phantom encoded as JPEG, its scan cut at 60% and closed with an end-of-image marker.
fs::path cut_short_jpeg(const fs::path& file) {
    boneage::SynthOptions o;
    o.width = 256;
    o.height = 320;
    const cv::Mat film = boneage::make_phantom({"7", 96.0, false}, 5, o).image;
    std::vector<std::uint8_t> jpeg;
    EXPECT_TRUE(cv::imencode(".jpg", film, jpeg, {cv::IMWRITE_JPEG_QUALITY, 90}));
    jpeg.resize(jpeg.size() * 6 / 10);
    jpeg.push_back(0xff);
    jpeg.push_back(0xd9);
    std::ofstream(file, std::ios::binary)
        .write(reinterpret_cast<const char*>(jpeg.data()), static_cast<std::streamsize>(jpeg.size()));
    return file;
}

TEST(DamagedJpeg, PredictJsonAndCsvCarryTheDamageWarning) {
    ScratchDir dir("damaged-jpeg");
    const fs::path model = boneage::test::write_tiny_model(dir / "tiny.bin");
    const fs::path film = cut_short_jpeg(dir / "cut.jpg");
    const std::string common =
        std::string(BONEAGE_CLI) + " predict --accept-all --model " + q(model) + " " + q(film);

    std::string json_out;
    ASSERT_EQ(run_command(common + " --format json 2>" + q(dir / "json.err"), &json_out), 0)
        << json_out;
    const nlohmann::json results = nlohmann::json::parse(json_out);
    ASSERT_EQ(results.size(), 1u);
    EXPECT_EQ(results[0]["status"], "ok");
    const std::string warnings = results[0]["warnings"].dump();
    EXPECT_NE(warnings.find("JPEG data is damaged"), std::string::npos) << warnings;
    EXPECT_NE(warnings.find("premature end of data segment"), std::string::npos) << warnings;
    // libjpeg's own line on the console is gone: only the result says it.
    EXPECT_EQ(slurp(dir / "json.err").find("Corrupt JPEG data"), std::string::npos)
        << slurp(dir / "json.err");

    std::string csv_out;
    ASSERT_EQ(run_command(common + " --format csv 2>" + q(dir / "csv.err"), &csv_out), 0) << csv_out;
    const std::size_t header_end = csv_out.find('\n');
    ASSERT_NE(header_end, std::string::npos) << csv_out;
    EXPECT_NE(csv_out.substr(0, header_end).find("warnings"), std::string::npos);
    EXPECT_NE(csv_out.find("JPEG data is damaged", header_end), std::string::npos) << csv_out;
    EXPECT_EQ(slurp(dir / "csv.err").find("Corrupt JPEG data"), std::string::npos);
}

}  // namespace
