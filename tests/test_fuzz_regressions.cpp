// The fuzz targets' inputs replayed by the ordinary tests: every file of the regression corpus
// (tests/corpus/<target>/, inputs a fuzzer once found a crash, a sanitizer report or a wrong
// kind of error with) and every seed the targets start from, fed to the same entry points
// (fuzz/entry_points.hpp). Each must end normally or with a boneage::Error of a kind other
// than Internal: never a crash, never another exception. The image readers must also print
// nothing. Under `make test-sanitize` AddressSanitizer checks every read and write as well.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <boneage/error.hpp>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "entry_points.hpp"
#include "seeds.hpp"
#include "support.hpp"

namespace {

namespace fs = std::filesystem;
using boneage::fuzz::Target;

const Target& target_named(const std::string& name) {
    for (const Target& t : boneage::fuzz::targets())
        if (t.name == name) return t;
    throw std::runtime_error("no fuzz target " + name);
}

std::string slurp(const fs::path& file) {
    std::ifstream in(file, std::ios::binary);
    return std::string(std::istreambuf_iterator<char>(in), {});
}

// What an entry point did with `bytes`: "ok", "error: <kind>", or a description of what it must
// never do. Whatever it printed on stderr goes to `printed`.
std::string outcome(const Target& target, const std::string& bytes, std::string* printed) {
    const fs::path capture =
        fs::temp_directory_path() / ("boneage-fuzz-stderr-" + std::to_string(::getpid()));
    std::fflush(stderr);
    const int saved = ::dup(2);
    const int fd = ::open(capture.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
    ::dup2(fd, 2);
    ::close(fd);
    std::string result;
    try {
        target.run(reinterpret_cast<const std::uint8_t*>(bytes.data()), bytes.size());
        result = "ok";
    } catch (const boneage::Error& e) {
        result = e.kind() == boneage::ErrorKind::Internal
                     ? std::string("boneage::Error of kind Internal: ") + e.what()
                     : std::string("error: ") + boneage::to_string(e.kind());
    } catch (const std::exception& e) {
        result = std::string("an exception that is not a boneage::Error: ") + e.what();
    } catch (...) {
        result = "an exception that is not a std::exception";
    }
    std::fflush(stderr);
    ::dup2(saved, 2);
    ::close(saved);
    *printed = slurp(capture);
    fs::remove(capture);
    return result;
}

bool acceptable(const std::string& result) {
    return result == "ok" || result.rfind("error: ", 0) == 0;
}

std::vector<fs::path> corpus_files(const std::string& target) {
    const fs::path dir = fs::path(BONEAGE_SOURCE_DIR) / "tests" / "corpus" / target;
    std::vector<fs::path> files;
    if (fs::is_directory(dir))
        for (const auto& entry : fs::directory_iterator(dir))
            if (entry.is_regular_file()) files.push_back(entry.path());
    std::sort(files.begin(), files.end());
    return files;
}

// The readers of files print nothing; the HTTP target's server is allowed its own log lines.
bool must_be_silent(const std::string& target) { return target != "http"; }

class FuzzRegressions : public ::testing::TestWithParam<std::string> {
protected:
    static void TearDownTestSuite() { boneage::fuzz::stop_http(); }
};

TEST_P(FuzzRegressions, EveryCorpusFileEndsInSuccessOrABoneageError) {
    const Target& target = target_named(GetParam());
    for (const fs::path& file : corpus_files(target.name)) {
        std::string printed;
        const std::string result = outcome(target, slurp(file), &printed);
        EXPECT_TRUE(acceptable(result)) << file << ": " << result;
        if (must_be_silent(target.name)) {
            EXPECT_EQ(printed, "") << file;
        }
    }
}

// The seeds are well-formed inputs: each is read whole, which also shows that the fuzzer
// starts deep inside the parser it fuzzes. Labels seeds are also fed to the manifest reader,
// which refuses a labels file, so those need only end acceptably.
TEST_P(FuzzRegressions, EverySeedIsReadWithoutError) {
    const Target& target = target_named(GetParam());
    const std::vector<boneage::fuzz::Seed> seeds = boneage::fuzz::make_seeds(target.name);
    ASSERT_GE(seeds.size(), 2u);
    for (const boneage::fuzz::Seed& seed : seeds) {
        std::string printed;
        const std::string result = outcome(target, seed.bytes, &printed);
        if (target.name == "labels") {
            EXPECT_TRUE(acceptable(result)) << seed.name << ": " << result;
        } else {
            EXPECT_EQ(result, "ok") << seed.name;
        }
        if (must_be_silent(target.name)) {
            EXPECT_EQ(printed, "") << seed.name;
        }
    }
}

// Each seed cut short at a few points and with a few bytes overwritten: inputs like the ones
// the fuzzer starts with, in every build, so the regression test finds the easy crashes too.
TEST_P(FuzzRegressions, DamagedSeedsEndInSuccessOrABoneageError) {
    const Target& target = target_named(GetParam());
    for (const boneage::fuzz::Seed& seed : boneage::fuzz::make_seeds(target.name)) {
        const std::string& whole = seed.bytes;
        std::vector<std::string> damaged;
        for (std::size_t cut : {std::size_t(0), std::size_t(1), whole.size() / 7, whole.size() / 2,
                                whole.size() - 1})
            damaged.push_back(whole.substr(0, std::min(cut, whole.size())));
        for (std::size_t at : {std::size_t(0), std::size_t(9), std::size_t(20), whole.size() / 3}) {
            if (at >= whole.size()) continue;
            std::string flipped = whole;
            flipped[at] = static_cast<char>(flipped[at] ^ 0x5a);
            damaged.push_back(flipped);
        }
        for (std::size_t i = 0; i < damaged.size(); ++i) {
            std::string printed;
            const std::string result = outcome(target, damaged[i], &printed);
            EXPECT_TRUE(acceptable(result)) << seed.name << " damaged #" << i << ": " << result;
            if (must_be_silent(target.name)) {
                EXPECT_EQ(printed, "") << seed.name << " damaged #" << i;
            }
        }
    }
}

// The HTTP seeds are answered, not only survived: the upload reaches the route whole.
TEST(FuzzHttpSeeds, EachIsAnsweredAndTheUploadIsRecognised) {
    for (const boneage::fuzz::Seed& seed : boneage::fuzz::make_seeds("http")) {
        const std::string answer = boneage::fuzz::exchange_http(
            reinterpret_cast<const std::uint8_t*>(seed.bytes.data()), seed.bytes.size());
        EXPECT_EQ(answer.rfind("HTTP/1.1 ", 0), 0u) << seed.name << ": " << answer;
        if (seed.name == "predict.http" || seed.name == "expect.http" ||
            seed.name == "chunked.http") {
            EXPECT_NE(answer.find("HTTP/1.1 200"), std::string::npos) << seed.name << answer;
            EXPECT_NE(answer.find("\"ext\":\"png\""), std::string::npos) << seed.name << answer;
        }
    }
    boneage::fuzz::stop_http();
}

INSTANTIATE_TEST_SUITE_P(Targets, FuzzRegressions,
                         ::testing::Values("image", "dicom", "labels", "model", "cache", "http"),
                         [](const ::testing::TestParamInfo<std::string>& info) {
                             return info.param;
                         });

}  // namespace
