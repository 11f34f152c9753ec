// scripts/cross-validate and scripts/bundle-from-folds end to end on phantoms laid out as the
// development data: two folds of a tiny recipe, every id predicted once by the model that
// never saw it, then the view count chosen on the folds asked for and one file averaging the
// members asked for, which records that count.
#include <gtest/gtest.h>

#include <boneage/model.hpp>

#include <fstream>
#include <regex>
#include <set>
#include <string>

#include "support.hpp"

namespace fs = std::filesystem;
using boneage::test::read_text;
using boneage::test::run_command;
using boneage::test::ScratchDir;
using boneage::test::shell_quote;

namespace {

const fs::path kSource = BONEAGE_SOURCE_DIR;
const std::string kCli = BONEAGE_CLI;

// The ids of a predictions.csv (first column), header skipped.
std::multiset<std::string> ids_of(const fs::path& csv) {
    std::ifstream in(csv);
    std::string line;
    std::getline(in, line);
    std::multiset<std::string> ids;
    while (std::getline(in, line))
        if (!line.empty()) ids.insert(line.substr(0, line.find(',')));
    return ids;
}

class CrossValidate : public ::testing::Test {
protected:
    void SetUp() override {
        const fs::path images = data() / "images";
        ASSERT_EQ(
            run_command(kCli + " synth --out " + shell_quote(images) + " --count 40 --seed 3"), 0);
        fs::rename(images / "labels.csv", data() / "labels.csv");
    }
    fs::path data() const { return dir_ / "data"; }
    fs::path out() const { return dir_ / "cv"; }
    // Runs a script of the project with the phantoms as the development data.
    int script(const std::string& env_and_name, const std::string& args, std::string* output) {
        return run_command("RSNA_DEV=" + shell_quote(data()) + " BONEAGE_BIN=" + shell_quote(kCli) +
                               " " + env_and_name + " " + args,
                           output);
    }

    ScratchDir dir_{"cross-validate"};
};

TEST_F(CrossValidate, PredictsEveryIdOnceThenBundlesTheMembersAskedForWithTheChosenViews) {
    std::string log;
    ASSERT_EQ(
        script(shell_quote(kSource / "scripts" / "cross-validate"),
               shell_quote(out()) + " 2 train: --arch shallow --input-size 64 --batch 8 --epochs 1"
                                    " --seed 1 --monitor train_loss --min-delta 0 --patience 1000",
               &log),
        0)
        << log;
    const std::multiset<std::string> oof = ids_of(out() / "oof-predictions.csv");
    EXPECT_EQ(oof.size(), 40u) << log;
    EXPECT_EQ(std::set<std::string>(oof.begin(), oof.end()).size(), oof.size())
        << "an id predicted twice";
    for (int k : {0, 1}) {
        const fs::path fold = out() / ("fold-" + std::to_string(k));
        ASSERT_TRUE(fs::is_regular_file(fold / "train.model")) << log;
        // Fold k's model predicted fold k only, and the folds together are every id.
        for (const std::string& id : ids_of(fold / "report" / "predictions.csv"))
            EXPECT_EQ(oof.count(id), 1u) << id;
    }

    const fs::path bundled = dir_ / "bundled.bin";
    ASSERT_EQ(script("FOLDS=0 VIEWS='1 3' MEMBERS='0 1' " +
                         shell_quote(kSource / "scripts" / "bundle-from-folds"),
                     shell_quote(out()) + " " + shell_quote(bundled), &log),
              0)
        << log;
    // The views were chosen on fold 0 alone: fold 1 was evaluated with one view only (by
    // cross-validate), and the table says which folds chose.
    EXPECT_TRUE(fs::is_regular_file(out() / "views-3" / "fold-0" / "predictions.csv")) << log;
    EXPECT_FALSE(fs::exists(out() / "views-3" / "fold-1")) << log;
    EXPECT_NE(read_text(out() / "views.md").find("folds 0 ("), std::string::npos)
        << read_text(out() / "views.md");
    std::smatch chose;
    ASSERT_TRUE(std::regex_search(log, chose, std::regex("chose ([0-9]+) test-time view"))) << log;

    const boneage::LoadedModel m = boneage::load_model(bundled);
    EXPECT_EQ(m.meta.config.arch, "ensemble");
    EXPECT_EQ(m.meta.config.members.size(), 2u);
    EXPECT_EQ(m.meta.weights_dtype, "int8");
    EXPECT_EQ(m.meta.views, std::stoi(chose[1])) << log;
}

TEST_F(CrossValidate, BundlingRefusesAMemberWhoseFoldIsNotTrainedYet) {
    std::string log;
    ASSERT_EQ(
        script("FOLDS=0 " + shell_quote(kSource / "scripts" / "cross-validate"),
               shell_quote(out()) + " 2 train: --arch shallow --input-size 64 --batch 8 --epochs 1"
                                    " --seed 1",
               &log),
        0)
        << log;
    const fs::path bundled = dir_ / "bundled.bin";
    EXPECT_EQ(script("FOLDS=0 VIEWS=1 MEMBERS='0 1' " +
                         shell_quote(kSource / "scripts" / "bundle-from-folds"),
                     shell_quote(out()) + " " + shell_quote(bundled), &log),
              1)
        << log;
    EXPECT_NE(log.find("fold-1/train.model is missing"), std::string::npos) << log;
    EXPECT_FALSE(fs::exists(bundled));
}

}  // namespace
