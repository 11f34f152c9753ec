// Smoke tests of the boneage binary: help, exit codes, the predict and evaluate contracts, and
// synth -> preprocess -> predict end to end on a tiny untrained model.
#include <gtest/gtest.h>
#include <sched.h>

#include <algorithm>
#include <boneage/model.hpp>
#include <boneage/synth.hpp>
#include <cstring>
#include <fstream>
#include <map>
#include <functional>
#include <nlohmann/json.hpp>
#include <sstream>
#include <utility>

#include "model_support.hpp"
#include "support.hpp"

namespace fs = std::filesystem;
using boneage::test::read_text;
using boneage::test::run_command;
using boneage::test::ScratchDir;
using boneage::test::shell_quote;

namespace {

const std::string kCli = BONEAGE_CLI;

// A fresh shallow model on 64 px inputs; no training needed to exercise the plumbing.
fs::path tiny_model(const fs::path& file, unsigned seed = 1) {
    return boneage::test::write_tiny_model(file, seed,
                                           {{"ms_per_step", 10.0},
                                            {"history",
                                             {{{"epoch", 1},
                                               {"train_loss", 0.2},
                                               {"val_loss", 0.25},
                                               {"train_mae", 30.0},
                                               {"val_mae", 33.0},
                                               {"val_rmse", 40.0}}}}});
}

// As tiny_model, with sex fed into the head: without a sex it reads each image as both.
fs::path tiny_model_using_sex(const fs::path& file) {
    torch::manual_seed(1);
    boneage::ModelConfig config;
    config.input_size = 64;
    config.label_offset = 120;
    config.label_scale = 40;
    config.use_sex = true;
    boneage::ModelMetadata meta;
    meta.config = config;
    meta.preprocess.output_size = 64;
    boneage::save_model(file, boneage::make_model(config), meta);
    return file;
}

std::size_t count_of(const std::string& text, const std::string& word) {
    std::size_t n = 0;
    for (auto at = text.find(word); at != std::string::npos; at = text.find(word, at + 1)) ++n;
    return n;
}

// Runs the CLI with stderr kept apart, so stdout can be parsed.
int run_stdout(const std::string& args, std::string* out, const fs::path& scratch) {
    fs::path err = scratch / "stderr.txt";
    int rc = run_command("{ " + kCli + " " + args + " 2>" + shell_quote(err) + "; }", out);
    return rc;
}

std::vector<std::string> split_line(const std::string& line) {
    std::vector<std::string> cells;
    std::string cell;
    bool quoted = false;
    for (char c : line) {
        if (c == '"')
            quoted = !quoted;
        else if (c == ',' && !quoted)
            cells.push_back(std::exchange(cell, {}));
        else
            cell += c;
    }
    cells.push_back(cell);
    return cells;
}

// Two phantoms and a file that is not an image.
struct Inputs {
    ScratchDir dir{"cli"};
    fs::path model, good1, good2, bad;
    Inputs() {
        auto set = boneage::write_phantom_set(dir.path(), 2, 21);
        good1 = dir / (set[0].label.id + ".png");
        good2 = dir / (set[1].label.id + ".png");
        bad = dir / "broken.png";
        std::ofstream(bad) << "not an image";
        model = tiny_model(dir / "tiny.bin");
    }
};

}  // namespace

TEST(Cli, HelpListsTheSubcommands) {
    std::string out;
    EXPECT_EQ(run_command(kCli + " --help", &out), 0);
    for (const char* name : {"predict", "evaluate", "synth", "preprocess"})
        EXPECT_NE(out.find(name), std::string::npos) << name << " missing from:\n" << out;
}

TEST(Cli, EveryCommandThatCropsTakesTheCropDetectorAndRefusesAnother) {
    for (const char* command : {"preprocess", "prepare", "predict", "evaluate", "serve"}) {
        std::string out;
        EXPECT_EQ(run_command(kCli + " " + command + " --help", &out), 0) << command;
        EXPECT_NE(out.find("--crop"), std::string::npos) << command << " has no --crop:\n" << out;
        EXPECT_NE(out.find("mediapipe"), std::string::npos) << command;
        EXPECT_EQ(run_command(kCli + " " + command + " --crop yolo x.png", &out), 2)
            << command << ": " << out;
        EXPECT_NE(out.find("yolo"), std::string::npos) << out;
    }
}

TEST(Cli, UsageErrorsExitTwo) {
    ScratchDir dir("cli-usage");
    fs::path model = tiny_model(dir / "m.bin");
    std::string out;
    EXPECT_EQ(run_command(kCli, &out), 2) << out;
    EXPECT_EQ(run_command(kCli + " no-such-command", &out), 2) << out;
    EXPECT_EQ(run_command(kCli + " predict --model " + shell_quote(model), &out), 2)
        << out;  // no input
    EXPECT_EQ(
        run_command(kCli + " predict --format xml --model " + shell_quote(model) + " x.png", &out),
        2);
    EXPECT_EQ(
        run_command(kCli + " predict --sex other --model " + shell_quote(model) + " x.png", &out),
        2);
    EXPECT_EQ(run_command(kCli + " evaluate --model " + shell_quote(model), &out), 2) << out;
    EXPECT_EQ(run_command(kCli + " evaluate --model " + shell_quote(model) + " --images " +
                              shell_quote(dir.path()) + " --labels " + shell_quote(model) +
                              " --split val:7",
                          &out),
              2)
        << out;
    EXPECT_EQ(run_command("BONEAGE_MODEL=/nonexistent/model.bin " + kCli + " predict x.png", &out),
              2);
    EXPECT_NE(out.find("no model given and no bundled model found; pass --model"),
              std::string::npos)
        << out;
}

TEST(Cli, PredictCsvKeepsGoingPastABadInputAndExitsOne) {
    Inputs in;
    std::string out;
    int rc = run_stdout("predict --format csv --model " + shell_quote(in.model) + " " +
                            shell_quote(in.good1) + " " + shell_quote(in.bad) + " " +
                            shell_quote(in.good2),
                        &out, in.dir.path());
    EXPECT_EQ(rc, 1) << out;
    std::istringstream lines(out);
    std::string header;
    std::getline(lines, header);
    EXPECT_EQ(header.rfind("path,bone_age_months,status,", 0), 0u) << header;
    std::vector<std::vector<std::string>> rows;
    for (std::string line; std::getline(lines, line);) rows.push_back(split_line(line));
    ASSERT_EQ(rows.size(), 3u) << out;
    EXPECT_EQ(rows[0][0], in.good1.string());
    EXPECT_EQ(rows[0][2], "ok");
    EXPECT_GT(std::stod(rows[0][1]), 0.0);
    EXPECT_EQ(rows[1][2], "error");
    EXPECT_FALSE(rows[1][3].empty());  // the message
    EXPECT_EQ(rows[2][2], "ok");
}

TEST(Cli, PredictJsonIsOneArrayAndAllGoodExitsZero) {
    Inputs in;
    std::string out;
    int rc = run_stdout("predict --format json --sex female --chronological-age 96 --model " +
                            shell_quote(in.model) + " " + shell_quote(in.good1) + " " +
                            shell_quote(in.good2),
                        &out, in.dir.path());
    EXPECT_EQ(rc, 0) << out;
    nlohmann::json j = nlohmann::json::parse(out);
    ASSERT_TRUE(j.is_array());
    ASSERT_EQ(j.size(), 2u);
    for (const auto& r : j) {
        EXPECT_EQ(r["status"], "ok");
        EXPECT_TRUE(r["bone_age_months"].is_number());
        EXPECT_EQ(r["chronological_age_months"], 96.0);
        EXPECT_EQ(r["box"].size(), 4u);
    }
    EXPECT_EQ(run_stdout("predict --model " + shell_quote(in.model) + " " + shell_quote(in.good1),
                         &out, in.dir.path()),
              0);
    EXPECT_NE(out.find("bone age"), std::string::npos) << out;
}

TEST(Cli, PredictTakesSexAsMOrFAsLabelsFilesWriteIt) {
    Inputs in;
    std::string out;
    for (const char* sex : {"M", "f", "male", "Female"}) {
        SCOPED_TRACE(sex);
        ASSERT_EQ(run_stdout("predict --format json --sex " + std::string(sex) + " --model " +
                                 shell_quote(in.model) + " " + shell_quote(in.good1),
                             &out, in.dir.path()),
                  0)
            << out;
        nlohmann::json j = nlohmann::json::parse(out);
        ASSERT_EQ(j.size(), 1u);
        EXPECT_EQ(j[0]["male"], sex[0] == 'M' || sex[0] == 'm') << j.dump();
    }
    EXPECT_EQ(run_command(kCli + " predict --sex 1 --model " + shell_quote(in.model) + " " +
                              shell_quote(in.good1),
                          &out),
              2)
        << out;
    EXPECT_NE(out.find("M, F, male or female"), std::string::npos) << out;
}

TEST(Cli, PredictSaysOncePerRunThatSexIsMissing) {
    Inputs in;
    fs::path model = tiny_model_using_sex(in.dir / "sex.bin");
    std::string out;
    ASSERT_EQ(run_command(kCli + " predict --chronological-age 96 --model " + shell_quote(model) +
                              " " + shell_quote(in.good1) + " " + shell_quote(in.good2),
                          &out),
              0)
        << out;
    EXPECT_EQ(count_of(out, ": bone age "), 2u) << out;
    EXPECT_EQ(count_of(out, "sex not given"), 1u) << out;
    EXPECT_NE(out.find("2 of 2 inputs"), std::string::npos) << out;
    ASSERT_EQ(
        run_command(kCli + " predict --sex F --chronological-age 96 --model " + shell_quote(model) +
                        " " + shell_quote(in.good1) + " " + shell_quote(in.good2),
                    &out),
        0)
        << out;
    EXPECT_EQ(count_of(out, "sex not given"), 0u) << out;
}

TEST(Cli, PredictManifestGivesEachInputItsOwnSexAndAge) {
    Inputs in;
    fs::path model = tiny_model_using_sex(in.dir / "sex.bin");
    fs::create_directories(in.dir / "lists");
    fs::path manifest = in.dir / "lists" / "batch.csv";
    // Paths are relative to the manifest's folder, not to where the command runs.
    std::ofstream(manifest) << "path,sex,chronological_age\n"
                            << "../" << in.good1.filename().string() << ",M,96\n"
                            << "../" << in.good2.filename().string() << ",,\n"
                            << in.good1.string() << ",f,150.5\n";
    std::string out;
    ASSERT_EQ(run_stdout("predict --format json --model " + shell_quote(model) + " --manifest " +
                             shell_quote(manifest),
                         &out, in.dir.path()),
              0)
        << out;
    nlohmann::json j = nlohmann::json::parse(out);
    ASSERT_EQ(j.size(), 3u) << out;
    EXPECT_EQ(j[0]["path"], in.good1.string());
    EXPECT_EQ(j[0]["male"], true);
    EXPECT_EQ(j[0]["chronological_age_months"], 96.0);
    EXPECT_FALSE(j[0]["sex_averaged"].get<bool>());
    EXPECT_TRUE(j[0]["z_score"].is_number()) << j[0].dump();
    EXPECT_EQ(j[1]["path"], in.good2.string());
    EXPECT_TRUE(j[1]["male"].is_null());
    EXPECT_TRUE(j[1]["chronological_age_months"].is_null());
    EXPECT_TRUE(j[1]["sex_averaged"].get<bool>());
    EXPECT_EQ(j[2]["male"], false);
    EXPECT_EQ(j[2]["chronological_age_months"], 150.5);
    // The same image read as a boy and as a girl: the model's sex input reached it.
    EXPECT_NE(j[0]["raw_months"].get<double>(), j[2]["raw_months"].get<double>());
}

TEST(Cli, PredictManifestRefusesABadRowNamingFileLineAndReason) {
    ScratchDir dir("cli-manifest-bad");
    fs::path model = tiny_model(dir / "m.bin");
    struct Case { const char* text; const char* words; };
    Case cases[] = {
        {"path,sex,chronological_age\na.png,M,96\nb.png,X,96\n", "line 3: sex 'X'"},
        {"path,sex,chronological_age\na.png,1,96\n", "line 2: sex '1'"},
        {"path,sex,chronological_age\na.png,M,abc\n", "line 2: chronological age 'abc'"},
        {"path,sex,chronological_age\na.png,M,-4\n", "line 2: chronological age -4"},
        {"path,sex,chronological_age\na.png,M\n", "line 2: 2 fields"},
        {"path,sex,chronological_age\n,M,96\n", "line 2: empty path"},
        {"path,sex,age\na.png,M,96\n", "line 1: unknown column 'age'"},
        {"sex,chronological_age\nM,96\n", "line 1: no 'path' column"},
        {"file,sex\na.png,M\n", "line 1: unknown column 'file'"},
        {"path,sex,chronological_age\n", "no inputs"},
    };
    fs::path manifest = dir / "manifest.csv";
    for (const Case& c : cases) {
        SCOPED_TRACE(c.text);
        std::ofstream(manifest) << c.text;
        std::string out;
        EXPECT_EQ(run_command(kCli + " predict --model " + shell_quote(model) + " --manifest " +
                                  shell_quote(manifest),
                              &out),
                  2)
            << out;
        EXPECT_NE(out.find(manifest.string()), std::string::npos) << out;
        EXPECT_NE(out.find(c.words), std::string::npos) << out;
    }
}

TEST(Cli, PredictManifestExcludesInputsAndPerRunPatientOptions) {
    ScratchDir dir("cli-manifest-mix");
    fs::path model = tiny_model(dir / "m.bin");
    fs::path manifest = dir / "manifest.csv";
    std::ofstream(manifest) << "path,sex,chronological_age\na.png,M,96\n";
    const std::string base =
        kCli + " predict --model " + shell_quote(model) + " --manifest " + shell_quote(manifest);
    for (const char* extra : {" x.png", " --sex M", " --chronological-age 96",
                              " --birth-date 2015-01-01 --study-date 2024-01-01"}) {
        SCOPED_TRACE(extra);
        std::string out;
        EXPECT_EQ(run_command(base + extra, &out), 2) << out;
        EXPECT_NE(out.find("--manifest"), std::string::npos) << out;
    }
    std::string help;
    EXPECT_EQ(run_command(kCli + " predict --help", &help), 0);
    EXPECT_NE(help.find("--manifest"), std::string::npos) << help;
}

TEST(Cli, EvaluateJsonHasTheContractFields) {
    Inputs in;
    std::string out;
    int rc = run_stdout("evaluate --format json --model " + shell_quote(in.model) + " --images " +
                            shell_quote(in.dir.path()) + " --labels " +
                            shell_quote(in.dir / "labels.csv"),
                        &out, in.dir.path());
    EXPECT_EQ(rc, 0) << out;
    nlohmann::json j = nlohmann::json::parse(out);
    ASSERT_TRUE(j.is_object()) << out;
    EXPECT_EQ(j["n"], 2);
    for (const char* key : {"mae", "rmse", "msle"}) EXPECT_TRUE(j[key].is_number()) << key;
    EXPECT_TRUE(j["failed"].is_array());
    EXPECT_TRUE(j["failed"].empty());
}

TEST(Cli, EvaluateReportComparesSeveralModels) {
    Inputs in;
    fs::path second = tiny_model(in.dir / "other.bin", 2);
    fs::path report = in.dir / "report";
    std::string out;
    int rc = run_stdout("evaluate --format json --model " + shell_quote(in.model) + " --model " +
                            shell_quote(second) + " --images " + shell_quote(in.dir.path()) +
                            " --labels " + shell_quote(in.dir / "labels.csv") + " --report " +
                            shell_quote(report),
                        &out, in.dir.path());
    const std::string err = read_text(in.dir / "stderr.txt");
    if (rc != 0 && err.find("gnuplot is not installed") != std::string::npos)
        GTEST_SKIP() << "gnuplot is not installed";
    EXPECT_EQ(rc, 0) << out << err;
    nlohmann::json j = nlohmann::json::parse(out);
    ASSERT_TRUE(j.is_array());
    EXPECT_EQ(j.size(), 2u);
    EXPECT_TRUE(fs::exists(report / "report.md"));
    EXPECT_TRUE(fs::exists(report / "predictions.csv"));
    EXPECT_TRUE(fs::exists(report / "metrics.png"));
    EXPECT_TRUE(fs::exists(report / "samples.png"));
}

// OMP_PROC_BIND binds the main thread to one core; the default thread count must still be
// every core the process may use, as read before the binding.
TEST(Cli, BenchCountsEveryCoreWhenOpenMpBindsTheMainThread) {
    cpu_set_t set;
    ASSERT_EQ(sched_getaffinity(0, sizeof set, &set), 0);
    const int cores = CPU_COUNT(&set);
    if (cores < 2) GTEST_SKIP() << "one core: binding cannot narrow the count";
    std::string out;
    ASSERT_EQ(run_command("{ OMP_PROC_BIND=true " + kCli +
                              " bench --tests infer --arch shallow --precision fp32 --batch 1"
                              " --reps 1 --warmup 0 --input-size 64 --format json 2>/dev/null; }",
                          &out),
              0)
        << out;
    const auto rows = nlohmann::json::parse(out);
    ASSERT_EQ(rows.size(), 1u) << out;
    EXPECT_EQ(rows[0].at("threads").get<int>(), cores) << out;
}

// A preprocessing output given to predict is the network's input itself: it gets the bone
// age of the radiograph it came from, not that of a second crop and equalisation.
TEST(Cli, SynthPreprocessPredictEndToEnd) {
    ScratchDir dir("cli-e2e");
    fs::path model = tiny_model(dir / "m.bin");  // preprocessing to 64 px
    std::string out;
    ASSERT_EQ(run_command(kCli + " synth --out " + shell_quote(dir / "set") + " --count 3 --seed 5",
                          &out),
              0)
        << out;
    std::vector<std::string> inputs;
    for (const auto& e : fs::directory_iterator(dir / "set"))
        if (e.path().extension() == ".png") inputs.push_back(shell_quote(e.path()));
    ASSERT_EQ(inputs.size(), 3u);
    std::string joined;
    for (const auto& s : inputs) joined += " " + s;
    ASSERT_EQ(
        run_command(kCli + " preprocess --size 64" + joined + " --out " + shell_quote(dir / "pre"),
                    &out),
        0)
        << out;
    std::string preprocessed;
    for (const auto& e : fs::directory_iterator(dir / "pre"))
        if (e.path().extension() == ".png") preprocessed += " " + shell_quote(e.path());
    // The hand gate refuses 64 px images; the tiny model is what is under test here.
    EXPECT_EQ(run_stdout("predict --format json --accept-all --precision fp32 --model " +
                             shell_quote(model) + joined + preprocessed,
                         &out, dir.path()),
              0)
        << out;
    nlohmann::json j = nlohmann::json::parse(out);
    ASSERT_EQ(j.size(), 6u);
    std::map<std::string, nlohmann::json> original;
    for (const auto& r : j) {
        EXPECT_EQ(r["status"], "ok") << r.dump();
        const fs::path path = r["path"].get<std::string>();
        if (path.parent_path() == dir / "set") original[path.stem().string()] = r;
    }
    ASSERT_EQ(original.size(), 3u);
    for (const auto& r : j) {
        const fs::path path = r["path"].get<std::string>();
        if (path.parent_path() != dir / "pre") continue;
        SCOPED_TRACE(path.string());
        const nlohmann::json& from = original.at(path.stem().string());
        EXPECT_NEAR(r["bone_age_months"].get<double>(), from["bone_age_months"].get<double>(), 1e-3);
        EXPECT_EQ(r["method"], "preprocessed") << r.dump();
        EXPECT_NE(r["warnings"].dump().find("already"), std::string::npos) << r.dump();
    }
}

namespace {

// What a command wrote to stderr alone, and its exit status.
int run_stderr(const std::string& args, std::string* err) {
    return run_command("{ " + kCli + " " + args + " 2>&1 >/dev/null; }", err);
}

// A model file of the format's header, `metadata` and `weights` as given: what a damaged or
// hand-made file can hold.
fs::path write_model_file(const fs::path& file, const nlohmann::json& metadata,
                          const std::string& weights) {
    const std::string text = metadata.dump();
    std::string bytes("BONEAGE-MODEL\0\0\0", 16);
    const std::uint32_t version = boneage::kModelFormatVersion;
    bytes.append(reinterpret_cast<const char*>(&version), 4);
    const std::uint64_t length = text.size();  // little-endian host, as the file
    bytes.append(reinterpret_cast<const char*>(&length), 8);
    std::ofstream(file, std::ios::binary) << bytes << text << weights;
    return file;
}

// One line, "boneage: FILE: reason", with `reason_part` in the reason: no backtrace, no
// exception text of a library.
void expect_one_line_naming(const std::string& err, const fs::path& file,
                            const std::string& reason_part) {
    EXPECT_EQ(err.rfind("boneage: " + file.string() + ": ", 0), 0u) << err;
    EXPECT_EQ(std::count(err.begin(), err.end(), '\n'), 1) << err;
    EXPECT_NE(err.find(reason_part), std::string::npos) << err;
    for (const char* leak : {"frame #", "Exception raised", "what()", "[enforce fail"})
        EXPECT_EQ(err.find(leak), std::string::npos) << err;
}

}  // namespace

TEST(Cli, HelpListsEveryExitStatus) {
    for (const char* command : {"--help", "predict --help", "evaluate --help", "preprocess --help"}) {
        std::string out;
        ASSERT_EQ(run_command(kCli + " " + command, &out), 0) << out;
        const auto at = out.find("Exit status:");
        ASSERT_NE(at, std::string::npos) << command << ":\n" << out;
        EXPECT_EQ(out.find("Exit status:", at + 1), std::string::npos) << command << ": twice";
        for (const char* code : {"\n  0  ", "\n  1  ", "\n  2  ", "\n  3  "})
            EXPECT_NE(out.find(code, at), std::string::npos) << command << ": " << code;
    }
}

TEST(Cli, AnUnreadableModelIsFatalExitsThreeAndSaysWhyInOneLine) {
    Inputs in;
    nlohmann::json meta = nlohmann::json::parse(R"({
        "config": {"arch": "shallow", "head": "flatten", "use_sex": false, "input_size": 200000,
                   "label_offset": 120.0, "label_scale": 40.0},
        "preprocess": {"output_size": 64, "clahe_clip_limit": 2.0, "clahe_tile_grid": 8,
                       "crop_margin": 0.04, "crop_hand": true, "detect_size": 512}})");
    const fs::path huge = write_model_file(in.dir / "huge.bin", meta, std::string(100, 'x'));
    std::string err;
    EXPECT_EQ(run_stderr(
                  "predict --accept-all --model " + shell_quote(huge) + " " + shell_quote(in.good1),
                  &err),
              3);
    expect_one_line_naming(err, huge, "config.input_size");

    meta["config"]["input_size"] = 64;
    const fs::path junk = write_model_file(in.dir / "junk.bin", meta, std::string(100, 'x'));
    EXPECT_EQ(run_stderr(
                  "predict --accept-all --model " + shell_quote(junk) + " " + shell_quote(in.good1),
                  &err),
              3);
    expect_one_line_naming(err, junk, "the weights do not load");

    const fs::path text = in.dir / "labels.csv";  // not a model at all
    EXPECT_EQ(run_stderr("evaluate --model " + shell_quote(text) + " --images " +
                             shell_quote(in.dir.path()) + " --labels " + shell_quote(text),
                         &err),
              3);
    expect_one_line_naming(err, text, "not a boneage model file");
}

TEST(Cli, AnUnwritableOutputIsFatalAndExitsThree) {
    Inputs in;
    const fs::path out = in.bad / "ensemble.bin";  // below a file: cannot be created
    std::string err;
    EXPECT_EQ(run_stderr("ensemble " + shell_quote(in.model) + " --out " + shell_quote(out), &err),
              3);
    expect_one_line_naming(err, out, "cannot");
}

TEST(Cli, TheBundledModelAndHandGateStillLoad) {
    if (boneage::find_bundled_file("default.bin").empty() ||
        boneage::find_bundled_file("hand_gate.bin").empty())
        GTEST_SKIP() << "no models/default.bin or models/hand_gate.bin";
    Inputs in;
    std::string out;
    EXPECT_EQ(run_command("env -u BONEAGE_MODEL -u BONEAGE_GATE " + kCli +
                              " predict --format json " + shell_quote(in.good1) + " 2>&1",
                          &out),
              0)
        << out;
    EXPECT_NE(out.find("\"bone_age_months\""), std::string::npos) << out;
}

// ---- where an answer came from --------------------------------------------------------------

namespace {

// The SHA-256 of a file as sha256sum prints it, 64 hex digits.
std::string sha256_of(const fs::path& file) {
    std::string out;
    EXPECT_EQ(run_command("sha256sum " + shell_quote(file), &out), 0) << out;
    return out.substr(0, 64);
}

// A predict JSON result names the model by file, hash and version, the build, the precision
// and the crop, whatever its status.
void expect_provenance(const nlohmann::json& r, const fs::path& model) {
    ASSERT_TRUE(r.contains("provenance")) << r.dump();
    const nlohmann::json& p = r["provenance"];
    EXPECT_EQ(p["model_file"], model.filename().string()) << p.dump();
    EXPECT_EQ(p["model_sha256"], sha256_of(model)) << p.dump();
    ASSERT_TRUE(p["model_version"].is_string()) << p.dump();
    EXPECT_EQ(p["model_version"].get<std::string>().rfind("shallow-", 0), 0u) << p.dump();
    EXPECT_TRUE(p["preprocess_version"].is_number_integer()) << p.dump();
    ASSERT_TRUE(p["build_commit"].is_string()) << p.dump();
    EXPECT_FALSE(p["build_commit"].get<std::string>().empty());
    EXPECT_TRUE(p["precision"] == "fp32" || p["precision"] == "bf16") << p.dump();
    EXPECT_EQ(p["crop_method"], "threshold") << p.dump();
}

// The column `name` of a CSV header line, or -1.
int column_of(const std::string& header, const std::string& name) {
    const std::vector<std::string> cells = split_line(header);
    for (std::size_t i = 0; i < cells.size(); ++i)
        if (cells[i] == name) return static_cast<int>(i);
    return -1;
}

// Rewrites a model file's metadata JSON through `change` (the layout of model_file.cpp:
// 16-byte magic, u32 version, u64 metadata length, metadata, weights).
void edit_model_metadata(const fs::path& file,
                         const std::function<void(nlohmann::json&)>& change) {
    std::ifstream in(file, std::ios::binary);
    std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    in.close();
    std::uint64_t length = 0;
    std::memcpy(&length, bytes.data() + 20, 8);  // little-endian host, as the file
    nlohmann::json meta = nlohmann::json::parse(bytes.substr(28, length));
    change(meta);
    const std::string text = meta.dump();
    const std::uint64_t new_length = text.size();
    std::string out = bytes.substr(0, 20);
    out.append(reinterpret_cast<const char*>(&new_length), 8);
    out += text + bytes.substr(28 + length);
    std::ofstream(file, std::ios::binary | std::ios::trunc) << out;
}

}  // namespace

TEST(Cli, PredictJsonAndCsvNameTheModelBuildPrecisionAndCropOfEveryInput) {
    Inputs in;
    std::string out;
    EXPECT_EQ(run_stdout("predict --format json --model " + shell_quote(in.model) + " " +
                             shell_quote(in.good1) + " " + shell_quote(in.bad),
                         &out, in.dir.path()),
              1)
        << out;
    nlohmann::json j = nlohmann::json::parse(out);
    ASSERT_EQ(j.size(), 2u);
    EXPECT_EQ(j[1]["status"], "error");
    for (const auto& r : j) expect_provenance(r, in.model);

    EXPECT_EQ(run_stdout("predict --format csv --model " + shell_quote(in.model) + " " +
                             shell_quote(in.good1),
                         &out, in.dir.path()),
              0)
        << out;
    std::istringstream lines(out);
    std::string header, row;
    std::getline(lines, header);
    std::getline(lines, row);
    // The contract's columns first and in their old order; the new ones after them.
    EXPECT_EQ(header.rfind("path,bone_age_months,status,message,raw_months,male,sex_averaged,", 0),
              0u)
        << header;
    const std::vector<std::string> cells = split_line(row);
    for (const char* name : {"model_file", "model_sha256", "model_version", "preprocess_version",
                             "build_commit", "precision", "crop_method", "sex_ignored"}) {
        SCOPED_TRACE(name);
        const int at = column_of(header, name);
        ASSERT_GT(at, column_of(header, "hand_score")) << header;
        ASSERT_LT(at, static_cast<int>(cells.size())) << row;
        EXPECT_FALSE(cells[static_cast<std::size_t>(at)].empty()) << row;
    }
    EXPECT_EQ(cells[static_cast<std::size_t>(column_of(header, "model_sha256"))],
              sha256_of(in.model));
    EXPECT_EQ(cells[static_cast<std::size_t>(column_of(header, "model_file"))], "tiny.bin");
}

TEST(Cli, PredictTextSaysOncePerRunWhereTheAnswersCameFromAndThatItIsForResearch) {
    Inputs in;
    std::string out;
    ASSERT_EQ(run_stdout("predict --model " + shell_quote(in.model) + " " + shell_quote(in.good1) +
                             " " + shell_quote(in.good2),
                         &out, in.dir.path()),
              0)
        << out;
    EXPECT_EQ(count_of(out, ": bone age "), 2u) << out;
    EXPECT_EQ(count_of(out, "research use, not a medical device"), 1u) << out;
    EXPECT_EQ(count_of(out, sha256_of(in.model)), 1u) << out;
    EXPECT_NE(out.find("tiny.bin"), std::string::npos) << out;
}

TEST(Cli, PredictSaysWhenAGivenSexIsNotUsedByTheModel) {
    Inputs in;  // its model does not take sex
    std::string out;
    ASSERT_EQ(run_stdout("predict --format json --sex F --chronological-age 96 --model " +
                             shell_quote(in.model) + " " + shell_quote(in.good1),
                         &out, in.dir.path()),
              0)
        << out;
    nlohmann::json r = nlohmann::json::parse(out).at(0);
    EXPECT_EQ(r["male"], false);
    EXPECT_EQ(r["sex_ignored"], true) << r.dump();
    bool said = false;
    for (const auto& w : r["warnings"])
        said |= w.get<std::string>().find("not use") != std::string::npos;
    EXPECT_TRUE(said) << r["warnings"].dump();
    // Still the girl's reference SD: the sex reached the Z-score.
    EXPECT_TRUE(r["z_score"].is_number()) << r.dump();

    ASSERT_EQ(run_stdout("predict --format json --model " + shell_quote(in.model) + " " +
                             shell_quote(in.good1),
                         &out, in.dir.path()),
              0);
    EXPECT_EQ(nlohmann::json::parse(out).at(0)["sex_ignored"], false);
    const fs::path with_sex = tiny_model_using_sex(in.dir / "sex.bin");
    ASSERT_EQ(run_stdout("predict --format json --sex F --model " + shell_quote(with_sex) + " " +
                             shell_quote(in.good1),
                         &out, in.dir.path()),
              0);
    EXPECT_EQ(nlohmann::json::parse(out).at(0)["sex_ignored"], false);

    // The terminal hears it once per run, not under every input.
    ASSERT_EQ(run_command(kCli + " predict --sex F --model " + shell_quote(in.model) + " " +
                              shell_quote(in.good1) + " " + shell_quote(in.good2),
                          &out),
              0)
        << out;
    EXPECT_EQ(count_of(out, "does not use"), 1u) << out;
}

TEST(Cli, PredictWarnsOnceWhenTheModelsPreprocessingIsOfAnotherVersion) {
    Inputs in;
    const fs::path other = in.dir / "other-preprocessing.bin";
    fs::copy_file(in.model, other);
    edit_model_metadata(other, [](nlohmann::json& m) { m["preprocess_version"] = 99; });
    for (const char* command : {"predict", "evaluate"}) {
        SCOPED_TRACE(command);
        const std::string args = std::string(command) == "predict"
                                     ? "predict --model " + shell_quote(other) + " " +
                                           shell_quote(in.good1) + " " + shell_quote(in.good2)
                                     : "evaluate --model " + shell_quote(other) + " --images " +
                                           shell_quote(in.dir.path()) + " --labels " +
                                           shell_quote(in.dir / "labels.csv");
        std::string out;
        ASSERT_EQ(run_stdout(args, &out, in.dir.path()), 0) << out;
        const std::string err = read_text(in.dir / "stderr.txt");
        EXPECT_EQ(count_of(err, "preprocessing version 99"), 1u) << err;
        EXPECT_NE(err.find(other.string()), std::string::npos) << err;
        // The same model of this build's version loads without a word about it.
        ASSERT_EQ(run_stdout(
                      std::string(command) == "predict"
                          ? "predict --model " + shell_quote(in.model) + " " + shell_quote(in.good1)
                          : "evaluate --model " + shell_quote(in.model) + " --images " +
                                shell_quote(in.dir.path()) + " --labels " +
                                shell_quote(in.dir / "labels.csv"),
                      &out, in.dir.path()),
                  0);
        EXPECT_EQ(read_text(in.dir / "stderr.txt").find("preprocessing version"),
                  std::string::npos);
    }
}

// An installed boneage finds its bundled model beside itself or under its prefix before the
// source tree it was built from: a broken model planted there must be the one it reads.
TEST(Cli, BundledModelIsLookedUpBesideTheExecutableAndUnderItsPrefixFirst) {
    Inputs in;
    const fs::path prefix = in.dir / "prefix";
    fs::create_directories(prefix / "bin");
    const fs::path exe = prefix / "bin" / "boneage";
    fs::copy_file(kCli, exe);
    fs::permissions(exe, fs::perms::owner_exec, fs::perm_options::add);
    for (const fs::path& folder :
         {prefix / "bin" / "models", prefix / "share" / "boneage" / "models"}) {
        SCOPED_TRACE(folder.string());
        fs::create_directories(folder);
        std::ofstream(folder / "default.bin") << "not a model";
        std::string out;
        EXPECT_NE(run_command("env -u BONEAGE_MODEL " + shell_quote(exe) +
                                  " predict --accept-all " + shell_quote(in.good1),
                              &out),
                  0)
            << out;
        EXPECT_NE(out.find((folder / "default.bin").string()), std::string::npos) << out;
        EXPECT_NE(out.find("not a boneage model file"), std::string::npos) << out;
        fs::remove(folder / "default.bin");
    }
}
