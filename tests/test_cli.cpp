// Smoke tests of the boneage binary: help, exit codes, the predict and evaluate contracts, and
// synth -> preprocess -> predict end to end on a tiny untrained model.
#include <gtest/gtest.h>
#include <sched.h>

#include <boneage/model.hpp>
#include <boneage/synth.hpp>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <utility>

#include "model_support.hpp"
#include "support.hpp"

namespace fs = std::filesystem;
using boneage::test::run_command;
using boneage::test::ScratchDir;

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

std::string q(const fs::path& p) { return "'" + p.string() + "'"; }

// Runs the CLI with stderr kept apart, so stdout can be parsed.
int run_stdout(const std::string& args, std::string* out, const fs::path& scratch) {
    fs::path err = scratch / "stderr.txt";
    int rc = run_command("{ " + kCli + " " + args + " 2>" + q(err) + "; }", out);
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

TEST(Cli, UsageErrorsExitTwo) {
    ScratchDir dir("cli-usage");
    fs::path model = tiny_model(dir / "m.bin");
    std::string out;
    EXPECT_EQ(run_command(kCli, &out), 2) << out;
    EXPECT_EQ(run_command(kCli + " no-such-command", &out), 2) << out;
    EXPECT_EQ(run_command(kCli + " predict --model " + q(model), &out), 2) << out;  // no input
    EXPECT_EQ(run_command(kCli + " predict --format xml --model " + q(model) + " x.png", &out), 2);
    EXPECT_EQ(run_command(kCli + " predict --sex other --model " + q(model) + " x.png", &out), 2);
    EXPECT_EQ(run_command(kCli + " evaluate --model " + q(model), &out), 2) << out;
    EXPECT_EQ(run_command(kCli + " evaluate --model " + q(model) + " --images " + q(dir.path()) +
                              " --labels " + q(model) + " --split val:7",
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
    int rc = run_stdout("predict --format csv --model " + q(in.model) + " " + q(in.good1) + " " +
                            q(in.bad) + " " + q(in.good2),
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
                            q(in.model) + " " + q(in.good1) + " " + q(in.good2),
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
    EXPECT_EQ(run_stdout("predict --model " + q(in.model) + " " + q(in.good1), &out, in.dir.path()),
              0);
    EXPECT_NE(out.find("bone age"), std::string::npos) << out;
}

TEST(Cli, EvaluateJsonHasTheContractFields) {
    Inputs in;
    std::string out;
    int rc = run_stdout("evaluate --format json --model " + q(in.model) + " --images " +
                            q(in.dir.path()) + " --labels " + q(in.dir / "labels.csv"),
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
    int rc = run_stdout("evaluate --format json --model " + q(in.model) + " --model " + q(second) +
                            " --images " + q(in.dir.path()) + " --labels " +
                            q(in.dir / "labels.csv") + " --report " + q(report),
                        &out, in.dir.path());
    std::ifstream err_in(in.dir / "stderr.txt");
    std::string err((std::istreambuf_iterator<char>(err_in)), {});
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

TEST(Cli, SynthPreprocessPredictEndToEnd) {
    ScratchDir dir("cli-e2e");
    fs::path model = tiny_model(dir / "m.bin");
    std::string out;
    ASSERT_EQ(run_command(kCli + " synth --out " + q(dir / "set") + " --count 3 --seed 5", &out), 0)
        << out;
    std::vector<std::string> inputs;
    for (const auto& e : fs::directory_iterator(dir / "set"))
        if (e.path().extension() == ".png") inputs.push_back(q(e.path()));
    ASSERT_EQ(inputs.size(), 3u);
    std::string joined;
    for (const auto& s : inputs) joined += " " + s;
    ASSERT_EQ(run_command(kCli + " preprocess" + joined + " --out " + q(dir / "pre"), &out), 0)
        << out;
    std::string preprocessed;
    for (const auto& e : fs::directory_iterator(dir / "pre"))
        if (e.path().extension() == ".png") preprocessed += " " + q(e.path());
    EXPECT_EQ(run_stdout("predict --format json --model " + q(model) + joined + preprocessed, &out,
                         dir.path()),
              0)
        << out;
    nlohmann::json j = nlohmann::json::parse(out);
    ASSERT_EQ(j.size(), 6u);
    for (const auto& r : j) EXPECT_EQ(r["status"], "ok") << r.dump();
}
