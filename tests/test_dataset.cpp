// Labels, the validation split, prepare_dataset and the prepared cache.
#include "support.hpp"

#include "cache_support.hpp"
#include "data/cache_format.hpp"

#include <boneage/build_info.hpp>
#include <boneage/dataset.hpp>
#include <boneage/error.hpp>
#include <boneage/image.hpp>
#include <boneage/preprocess.hpp>
#include <boneage/synth.hpp>

#include <gtest/gtest.h>
#include <opencv2/core.hpp>

#include <cstring>
#include <fstream>
#include <iterator>
#include <memory>

namespace boneage {
namespace {

namespace fs = std::filesystem;
using test::ScratchDir;

void write_text(const fs::path& file, const std::string& text) {
    std::ofstream out(file, std::ios::binary);
    out << text;
}

std::string read_bytes(const fs::path& file) {
    std::ifstream in(file, std::ios::binary);
    return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

ErrorKind kind_of(const std::function<void()>& fn) {
    try {
        fn();
    } catch (const Error& e) {
        return e.kind();
    }
    ADD_FAILURE() << "no boneage::Error thrown";
    return ErrorKind::Internal;
}

// ---- labels ----

TEST(Labels, ReadsColumnsInAnyOrderByHeaderName) {
    ScratchDir dir("labels-order");
    write_text(dir / "test.csv", "id,male,boneage\n4360,True,168.93\n4361,False,6\n");
    Labels labels = read_labels(dir / "test.csv");
    ASSERT_EQ(labels.rows.size(), 2u);
    EXPECT_TRUE(labels.rejected.empty());
    EXPECT_EQ(labels.rows[0].id, "4360");
    EXPECT_DOUBLE_EQ(labels.rows[0].age_months, 168.93);
    EXPECT_TRUE(labels.rows[0].male);
    EXPECT_EQ(labels.rows[0].line, 2);
    EXPECT_EQ(labels.rows[1].id, "4361");
    EXPECT_DOUBLE_EQ(labels.rows[1].age_months, 6.0);
    EXPECT_FALSE(labels.rows[1].male);
    EXPECT_EQ(labels.rows[1].line, 3);
}

TEST(Labels, AcceptsCaseIdAndSexHeaders) {
    ScratchDir dir("labels-variants");
    write_text(dir / "test.csv", "Case ID,Sex,Bone Age\n1,M,10\n2,F,20\n");
    Labels labels = read_labels(dir / "test.csv");
    ASSERT_EQ(labels.rows.size(), 2u);
    EXPECT_TRUE(labels.rows[0].male);
    EXPECT_FALSE(labels.rows[1].male);
    EXPECT_DOUBLE_EQ(labels.rows[1].age_months, 20.0);
}

TEST(Labels, ToleratesCrlfByteOrderMarkAndBlankLines) {
    ScratchDir dir("labels-crlf");
    write_text(dir / "l.csv", "\xEF\xBB\xBFid,boneage,male\r\n1377,180,false\r\n1378,12,1\r\n\r\n");
    Labels labels = read_labels(dir / "l.csv");
    ASSERT_EQ(labels.rows.size(), 2u);
    EXPECT_TRUE(labels.rejected.empty());
    EXPECT_EQ(labels.rows[0].id, "1377");
    EXPECT_FALSE(labels.rows[0].male);
    EXPECT_EQ(labels.rows[1].id, "1378");
    EXPECT_TRUE(labels.rows[1].male);
}

TEST(Labels, RejectsBadRowsWithLineAndReason) {
    ScratchDir dir("labels-bad");
    write_text(dir / "l.csv",
               "id,boneage,male\n"
               "1,100,True\n"      // line 2: good
               "2,abc,True\n"      // 3: not a number
               "3,301,False\n"     // 4: out of range
               "4,-1,False\n"      // 5: out of range
               "1,50,False\n"      // 6: duplicate of line 2
               "5,60\n"            // 7: missing field
               "6,70,maybe\n"      // 8: bad sex
               "7,0,0\n");         // 9: good, age 0 is allowed
    Labels labels = read_labels(dir / "l.csv");
    ASSERT_EQ(labels.rows.size(), 2u);
    EXPECT_EQ(labels.rows[0].id, "1");
    EXPECT_EQ(labels.rows[1].id, "7");
    ASSERT_EQ(labels.rejected.size(), 6u);
    struct Expected { int line; const char* id; const char* words; };
    Expected expected[] = {{3, "2", "not a number"}, {4, "3", "outside"},
                           {5, "4", "outside"},      {6, "1", "duplicate"},
                           {7, "5", "missing field"}, {8, "6", "male"}};
    for (std::size_t i = 0; i < 6; ++i) {
        SCOPED_TRACE(i);
        EXPECT_EQ(labels.rejected[i].line, expected[i].line);
        EXPECT_EQ(labels.rejected[i].id, expected[i].id);
        EXPECT_NE(labels.rejected[i].reason.find(expected[i].words), std::string::npos)
            << labels.rejected[i].reason;
    }
    EXPECT_NE(labels.rejected[3].reason.find("line 2"), std::string::npos);
}

TEST(Labels, StrictModeThrowsBadDataNamingTheLine) {
    ScratchDir dir("labels-strict");
    write_text(dir / "l.csv", "id,boneage,male\n1,100,True\n2,400,True\n");
    try {
        read_labels(dir / "l.csv", true);
        FAIL() << "strict read accepted an age of 400 months";
    } catch (const Error& e) {
        EXPECT_EQ(e.kind(), ErrorKind::BadData);
        EXPECT_EQ(e.file(), dir / "l.csv");
        EXPECT_EQ(e.reason().rfind("line 3: ", 0), 0u) << e.reason();
    }
}

TEST(Labels, MissingColumnOrFileIsAnError) {
    ScratchDir dir("labels-columns");
    write_text(dir / "l.csv", "id,age_in_years,male\n1,10,True\n");
    EXPECT_EQ(kind_of([&] { read_labels(dir / "l.csv"); }), ErrorKind::BadData);
    write_text(dir / "empty.csv", "");
    EXPECT_EQ(kind_of([&] { read_labels(dir / "empty.csv"); }), ErrorKind::BadData);
    EXPECT_EQ(kind_of([&] { read_labels(dir / "absent.csv"); }), ErrorKind::NotFound);
}

// Runs `fn`, expecting a boneage::Error of kind BadData about `file`; returns its reason.
std::string bad_data_reason(const fs::path& file, const std::function<void()>& fn) {
    try {
        fn();
    } catch (const Error& e) {
        EXPECT_EQ(e.kind(), ErrorKind::BadData) << e.what();
        EXPECT_EQ(e.file(), file) << e.what();
        return e.reason();
    }
    ADD_FAILURE() << "no boneage::Error thrown for " << file;
    return {};
}

TEST(Labels, TakesBoneAgeNotChronologicalAgeWhenBothAreThere) {
    ScratchDir dir("labels-age");
    write_text(dir / "l.csv", "id,age,boneage,male\n1,150,132,True\n2,60,80,False\n");
    Labels labels = read_labels(dir / "l.csv");
    ASSERT_EQ(labels.rows.size(), 2u);
    EXPECT_DOUBLE_EQ(labels.rows[0].age_months, 132.0);
    EXPECT_DOUBLE_EQ(labels.rows[1].age_months, 80.0);
}

TEST(Labels, RefusesAnAgeColumnAsTheBoneAge) {
    ScratchDir dir("labels-age-only");
    write_text(dir / "l.csv", "id,age,male\n1,150,True\n");
    std::string reason = bad_data_reason(dir / "l.csv", [&] { read_labels(dir / "l.csv"); });
    EXPECT_NE(reason.find("no bone age column"), std::string::npos) << reason;
    EXPECT_NE(reason.find("'age'"), std::string::npos) << reason;  // says why it was not taken
    EXPECT_NE(reason.find("boneage"), std::string::npos) << reason;
}

TEST(Labels, RefusesAHeaderWhereTwoColumnsCouldBeTheSameField) {
    ScratchDir dir("labels-ambiguous");
    struct Case { const char* header; const char* first; const char* second; };
    Case cases[] = {
        {"id,boneage,Ground truth bone age (Months),male", "boneage",
         "Ground truth bone age (Months)"},
        {"id,Bone Age,bone_age,male", "Bone Age", "bone_age"},
        {"id,boneage,male,Sex", "male", "Sex"},
        {"id,Case ID,boneage,male", "id", "Case ID"},
    };
    for (const Case& c : cases) {
        SCOPED_TRACE(c.header);
        write_text(dir / "l.csv", std::string(c.header) + "\n1,100,True,M\n");
        std::string reason = bad_data_reason(dir / "l.csv", [&] { read_labels(dir / "l.csv"); });
        EXPECT_EQ(reason.rfind("line 1: ", 0), 0u) << reason;
        EXPECT_NE(reason.find(std::string("'") + c.first + "'"), std::string::npos) << reason;
        EXPECT_NE(reason.find(std::string("'") + c.second + "'"), std::string::npos) << reason;
    }
}

TEST(Labels, ReadsTheRsnaTestSetHeader) {
    ScratchDir dir("labels-rsna-test");
    write_text(dir / "l.csv",
               "Case ID,Sex,Ground truth bone age (Months)\n4360,M,168.93\n4361,F,6\n");
    Labels labels = read_labels(dir / "l.csv");
    ASSERT_EQ(labels.rows.size(), 2u);
    EXPECT_EQ(labels.rows[0].id, "4360");
    EXPECT_TRUE(labels.rows[0].male);
    EXPECT_DOUBLE_EQ(labels.rows[0].age_months, 168.93);
    EXPECT_FALSE(labels.rows[1].male);
}

// Datasets code sex as 1 for female as often as for male: a `sex` column says it in letters.
TEST(Labels, SexColumnTakesLettersOrWordsNeverNumbers) {
    ScratchDir dir("labels-sex");
    write_text(dir / "l.csv",
               "id,boneage,sex\n1,100,M\n2,100,f\n3,100,Female\n4,100,MALE\n5,100,1\n"
               "6,100,0\n7,100,True\n");
    Labels labels = read_labels(dir / "l.csv");
    ASSERT_EQ(labels.rows.size(), 4u);
    EXPECT_TRUE(labels.rows[0].male);
    EXPECT_FALSE(labels.rows[1].male);
    EXPECT_FALSE(labels.rows[2].male);
    EXPECT_TRUE(labels.rows[3].male);
    ASSERT_EQ(labels.rejected.size(), 3u);
    for (const RejectedRow& r : labels.rejected) {
        EXPECT_NE(r.reason.find("sex"), std::string::npos) << r.reason;
        EXPECT_NE(r.reason.find("M, F, male or female"), std::string::npos) << r.reason;
    }
    EXPECT_EQ(labels.rejected[0].id, "5");
}

TEST(Labels, MaleColumnIsTrueOrFalseNeverALetter) {
    ScratchDir dir("labels-male");
    // "F" in a column named male could be False as well as female.
    write_text(dir / "l.csv", "id,boneage,male\n1,100,True\n2,100,0\n3,100,F\n4,100,M\n");
    Labels labels = read_labels(dir / "l.csv");
    ASSERT_EQ(labels.rows.size(), 2u);
    EXPECT_TRUE(labels.rows[0].male);
    EXPECT_FALSE(labels.rows[1].male);
    ASSERT_EQ(labels.rejected.size(), 2u);
    EXPECT_NE(labels.rejected[0].reason.find("True, False, 1 or 0"), std::string::npos)
        << labels.rejected[0].reason;
}

TEST(Labels, ReadsTheRealRsnaLabelFilesWhole) {
    auto rsna = test::rsna_dev_dir();
    if (!rsna) GTEST_SKIP() << "../shared/data/rsna-dev is absent";
    for (const char* name : {"labels.csv", "thumbs100.csv"}) {
        SCOPED_TRACE(name);
        Labels labels = read_labels(*rsna / name);
        EXPECT_GT(labels.rows.size(), 999u);
        EXPECT_TRUE(labels.rejected.empty()) << labels.rejected.front().reason;
    }
}

TEST(Sex, TakesLettersAndWordsInAnyCaseNeverNumbers) {
    for (const char* male : {"M", "m", "male", "MALE", " Male "}) EXPECT_EQ(parse_sex(male), true) << male;
    for (const char* female : {"F", "f", "female", "Female"})
        EXPECT_EQ(parse_sex(female), false) << female;
    for (const char* other : {"", "1", "0", "true", "x", "mf"})
        EXPECT_FALSE(parse_sex(other).has_value()) << other;
}

// ---- manifests ----

TEST(Manifest, ReadsEachInputsSexAndAgeWithPathsFromItsFolder) {
    ScratchDir dir("manifest");
    fs::create_directories(dir / "lists");
    write_text(dir / "lists" / "m.csv",
               "chronological_age,Path,sex\n96,a.png,M\n,../b.png,\n12.5,/abs/c.png,female\n");
    std::vector<ManifestRow> rows = read_manifest(dir / "lists" / "m.csv");
    ASSERT_EQ(rows.size(), 3u);
    EXPECT_EQ(rows[0].path, dir / "lists" / "a.png");
    EXPECT_EQ(rows[0].male, true);
    EXPECT_EQ(rows[0].chronological_age_months, 96.0);
    EXPECT_EQ(rows[0].line, 2);
    EXPECT_EQ(rows[1].path, dir / "b.png");
    EXPECT_FALSE(rows[1].male.has_value());
    EXPECT_FALSE(rows[1].chronological_age_months.has_value());
    EXPECT_EQ(rows[2].path, fs::path("/abs/c.png"));
    EXPECT_EQ(rows[2].male, false);
    EXPECT_EQ(rows[2].chronological_age_months, 12.5);
}

TEST(Manifest, RefusesADoubledColumnAndABadRowNamingTheLine) {
    ScratchDir dir("manifest-bad");
    write_text(dir / "m.csv", "path,sex,Sex\na.png,M,M\n");
    std::string reason = bad_data_reason(dir / "m.csv", [&] { read_manifest(dir / "m.csv"); });
    EXPECT_NE(reason.find("'sex' and 'Sex'"), std::string::npos) << reason;
    write_text(dir / "m.csv", "path,sex\na.png,M\nb.png,2\n");
    reason = bad_data_reason(dir / "m.csv", [&] { read_manifest(dir / "m.csv"); });
    EXPECT_EQ(reason.rfind("line 3: sex '2'", 0), 0u) << reason;
    EXPECT_EQ(kind_of([&] { read_manifest(dir / "absent.csv"); }), ErrorKind::NotFound);
}

// ---- images and the split ----

TEST(FindImage, PrefersPngAndFindsOtherExtensions) {
    ScratchDir dir("find-image");
    write_text(dir / "1.jpg", "x");
    write_text(dir / "1.png", "x");
    write_text(dir / "2.dcm", "x");
    EXPECT_EQ(find_image(dir.path(), "1"), dir / "1.png");
    EXPECT_EQ(find_image(dir.path(), "2"), dir / "2.dcm");
    EXPECT_TRUE(find_image(dir.path(), "3").empty());
    EXPECT_TRUE(find_image(dir.path(), "").empty());
    EXPECT_TRUE(find_image(dir / "sub", "../1").empty());
}

TEST(ValidationSplit, IsDeterministicAndNearTheFraction) {
    int in_validation = 0;
    for (int id = 0; id < 10000; ++id) {
        std::string s = std::to_string(1000 + id);
        bool side = in_validation_split(s, 0.2);
        EXPECT_EQ(side, in_validation_split(s, 0.2));
        if (side) {
            ++in_validation;
            EXPECT_TRUE(in_validation_split(s, 0.5)) << "a larger fraction must keep " << s;
        }
        EXPECT_FALSE(in_validation_split(s, 0.0));
        EXPECT_TRUE(in_validation_split(s, 1.0));
    }
    EXPECT_NEAR(in_validation, 2000, 150);
}

TEST(ValidationSplit, DoesNotChangeBetweenBuilds) {
    // The split decides which patients a published model never saw; a different hash would
    // silently move them. These sides follow from FNV-1a of the id strings and
    // MurmurHash3's finaliser.
    std::string sides;
    for (const char* id : {"1377", "1378", "1379", "1380", "1381", "1382", "1383", "1384"})
        sides += in_validation_split(id, 0.5) ? 'v' : 't';
    EXPECT_EQ(sides, "ttvtvttv");
}

// ---- prepare and the cache ----

// Twelve phantoms and a labels file with four bad rows, written once for all the tests below.
class PrepareTest : public ::testing::Test {
protected:
    static void SetUpTestSuite() {
        dir_ = std::make_unique<ScratchDir>("prepare");
        SynthOptions synth;
        synth.width = 256;
        synth.height = 320;
        phantoms_ = write_phantom_set(images(), 12, 7, synth);
        std::string csv = read_bytes(images() / "labels.csv");
        if (!csv.empty() && csv.back() != '\n') csv += '\n';
        csv += "9999,100,True\n";                            // line 14: no image
        write_text(images() / "8888.png", "not a png at all");
        csv += "8888,100,False\n";                           // 15: unreadable image
        fs::copy_file(images() / (phantoms_[0].label.id + ".png"), images() / "7777.png");
        csv += "7777,412,True\n";                            // 16: age out of range
        csv += phantoms_[1].label.id + ",50,False\n";        // 17: duplicate id
        write_text(labels(), csv);
    }
    static void TearDownTestSuite() { dir_.reset(); }

    static fs::path images() { return dir_->path() / "images"; }
    static fs::path labels() { return dir_->path() / "labels-with-bad-rows.csv"; }

    PrepareOptions options(const fs::path& out) const {
        PrepareOptions o;
        o.images_dir = images();
        o.labels_csv = labels();
        o.out = out;
        o.threads = 2;
        return o;
    }

    static std::unique_ptr<ScratchDir> dir_;
    static std::vector<Phantom> phantoms_;
};

std::unique_ptr<ScratchDir> PrepareTest::dir_;
std::vector<Phantom> PrepareTest::phantoms_;

TEST_F(PrepareTest, CacheHoldsTheGoodRowsInOrderWithTheirPixels) {
    ScratchDir out("prepare-out");
    PrepareOptions o = options(out / "set.bin");
    std::size_t last_done = 0, calls = 0;
    o.progress = [&](std::size_t done, std::size_t total) {
        EXPECT_EQ(total, 13u);  // the rows with an image: 12 phantoms and the unreadable file
        EXPECT_GE(done, last_done);
        last_done = done;
        ++calls;
    };
    PrepareReport report = prepare_dataset(o);
    EXPECT_EQ(report.written, 12u);
    EXPECT_EQ(last_done, 13u);
    EXPECT_GE(calls, 13u);

    PreparedCache cache(out / "set.bin");
    ASSERT_EQ(cache.size(), 12u);
    EXPECT_EQ(cache.image_size(), 320);
    EXPECT_EQ(cache.settings().output_size, 320);
    for (std::size_t i = 0; i < 12; ++i) {
        SCOPED_TRACE(i);
        const PhantomLabel& label = phantoms_[i].label;
        EXPECT_EQ(cache.id(i), label.id);
        EXPECT_DOUBLE_EQ(cache.age_months(i), label.age_months);
        EXPECT_EQ(cache.male(i), label.male);
        cv::Mat expected = preprocess(read_radiograph(images() / (label.id + ".png"))).image;
        cv::Mat actual(320, 320, CV_8UC1, const_cast<std::uint8_t*>(cache.image(i)));
        EXPECT_EQ(cv::norm(expected, actual, cv::NORM_INF), 0.0);
        EXPECT_GT(cv::countNonZero(actual), 320 * 320 / 10) << "a blank image proves nothing";
    }
    // Distinct phantoms, so a shuffled or repeated row would show.
    EXPECT_NE(std::memcmp(cache.image(0), cache.image(1), 320 * 320), 0);
    EXPECT_EQ(reinterpret_cast<std::uintptr_t>(cache.image(0)) % 64, 0u);
    EXPECT_THROW(cache.image(12), Error);
    // Only the cache is left: the temporary file was renamed into place.
    EXPECT_EQ(std::distance(fs::directory_iterator(out.path()), fs::directory_iterator()), 1);
}

TEST_F(PrepareTest, ReportsEveryBadRowWithLineIdAndReason) {
    ScratchDir out("prepare-bad");
    PrepareReport report = prepare_dataset(options(out / "set.bin"));
    ASSERT_EQ(report.rejected.size(), 4u);
    struct Expected { int line; std::string id; const char* words; };
    Expected expected[] = {{14, "9999", "missing image"},
                           {15, "8888", "8888.png"},
                           {16, "7777", "outside"},
                           {17, phantoms_[1].label.id, "duplicate"}};
    for (std::size_t i = 0; i < 4; ++i) {
        SCOPED_TRACE(i);
        EXPECT_EQ(report.rejected[i].line, expected[i].line);
        EXPECT_EQ(report.rejected[i].id, expected[i].id);
        EXPECT_NE(report.rejected[i].reason.find(expected[i].words), std::string::npos)
            << report.rejected[i].reason;
    }
}

TEST_F(PrepareTest, StrictStopsAtTheFirstBadRowAndWritesNothing) {
    ScratchDir out("prepare-strict");
    PrepareOptions o = options(out / "set.bin");
    o.strict = true;
    EXPECT_THROW(prepare_dataset(o), Error);
    EXPECT_TRUE(fs::is_empty(out.path()));

    // With the bad label rows gone (and every image named), the unreadable image is the
    // first failure.
    std::string csv = read_bytes(images() / "labels.csv") + "7777,100,True\n8888,100,False\n";
    write_text(out / "unreadable.csv", csv);
    o.labels_csv = out / "unreadable.csv";
    o.out = out / "sub" / "set.bin";
    try {
        prepare_dataset(o);
        FAIL() << "strict prepare accepted an unreadable image";
    } catch (const Error& e) {
        EXPECT_NE(e.reason().find("line 15, id 8888"), std::string::npos) << e.what();
    }
    EXPECT_FALSE(fs::exists(out / "sub" / "set.bin"));
}

// Every kind of trouble a labels file and its folder can hold, each reported with the rest
// prepared, and each refused by strict.
TEST(Prepare, ReportsBadRowsDuplicatesMissingAndUnlabelledImagesAndPreparesTheRest) {
    ScratchDir dir("prepare-trouble");
    SynthOptions synth;
    synth.width = 256;
    synth.height = 320;
    const std::vector<Phantom> phantoms = write_phantom_set(dir / "images", 4, 9, synth);
    const std::string a = phantoms[0].label.id, b = phantoms[1].label.id,
                      c = phantoms[2].label.id, d = phantoms[3].label.id;
    write_text(dir / "images" / "notes.txt", "not an image, never reported");
    write_text(dir / "labels.csv", "id,boneage,male\n" +
                                       a + ",100,True\n" +     // line 2: good
                                       b + ",ten,False\n" +    // 3: age not a number
                                       c + ",90,False\n" +     // 4: good
                                       c + ",91,False\n" +     // 5: duplicate id
                                       "4242,120,True\n");     // 6: no image
    // d.png is in the folder with no row at all.

    PrepareOptions o;
    o.images_dir = dir / "images";
    o.labels_csv = dir / "labels.csv";
    o.out = dir / "set.bin";
    o.settings.output_size = 32;
    const PrepareReport report = prepare_dataset(o);
    EXPECT_EQ(report.written, 2u);
    ASSERT_EQ(report.rejected.size(), 3u);
    EXPECT_EQ(report.rejected[0].line, 3);
    EXPECT_EQ(report.rejected[1].line, 5);
    EXPECT_NE(report.rejected[1].reason.find("duplicate"), std::string::npos);
    EXPECT_EQ(report.rejected[2].line, 6);
    EXPECT_NE(report.rejected[2].reason.find("missing image"), std::string::npos);
    // b has a (bad) row, so only d is unlabelled.
    ASSERT_EQ(report.unlabelled.size(), 1u);
    EXPECT_EQ(report.unlabelled[0].filename(), d + ".png");
    PreparedCache cache(o.out);
    ASSERT_EQ(cache.size(), 2u);
    EXPECT_EQ(cache.id(0), a);
    EXPECT_EQ(cache.id(1), c);

    // Strict refuses each kind in turn, and writes nothing.
    o.strict = true;
    o.out = dir / "strict.bin";
    EXPECT_THROW(prepare_dataset(o), Error);  // line 3
    write_text(dir / "labels.csv",
               "id,boneage,male\n" + a + ",100,True\n" + c + ",90,False\n4242,120,True\n");
    EXPECT_THROW(prepare_dataset(o), Error);  // no image for 4242
    write_text(dir / "labels.csv", "id,boneage,male\n" + a + ",100,True\n" + c + ",90,False\n");
    try {
        prepare_dataset(o);
        FAIL() << "strict prepare accepted images no row names";
    } catch (const Error& e) {
        EXPECT_EQ(e.file().filename(), b + ".png");  // b and d, sorted: the first named
        EXPECT_NE(e.reason().find("2 such images"), std::string::npos) << e.what();
    }
    EXPECT_FALSE(fs::exists(o.out));
}

TEST_F(PrepareTest, SettingsTravelWithTheCache) {
    ScratchDir out("prepare-settings");
    PrepareOptions o = options(out / "small.bin");
    o.settings.output_size = 64;
    o.settings.clahe_clip_limit = 3.5;
    o.settings.crop_hand = false;
    prepare_dataset(o);
    PreparedCache cache(out / "small.bin");
    EXPECT_EQ(cache.image_size(), 64);
    EXPECT_EQ(cache.settings().output_size, 64);
    EXPECT_DOUBLE_EQ(cache.settings().clahe_clip_limit, 3.5);
    EXPECT_FALSE(cache.settings().crop_hand);
    cv::Mat expected = preprocess(read_radiograph(images() / (cache.id(3) + ".png")), o.settings).image;
    cv::Mat actual(64, 64, CV_8UC1, const_cast<std::uint8_t*>(cache.image(3)));
    EXPECT_EQ(cv::norm(expected, actual, cv::NORM_INF), 0.0);
}

TEST_F(PrepareTest, DamagedCacheIsBadData) {
    ScratchDir out("prepare-damaged");
    PrepareOptions o = options(out / "good.bin");
    o.settings.output_size = 32;
    prepare_dataset(o);
    std::string good = read_bytes(out / "good.bin");
    auto expect_bad = [&](const std::string& name, const std::string& bytes, const char* words) {
        SCOPED_TRACE(name);
        write_text(out / name, bytes);
        try {
            PreparedCache cache(out / name);
            ADD_FAILURE() << "a damaged cache was accepted";
        } catch (const Error& e) {
            EXPECT_EQ(e.kind(), ErrorKind::BadData);
            EXPECT_EQ(e.file(), out / name);
            EXPECT_NE(e.reason().find(words), std::string::npos) << e.reason();
        }
    };
    std::string magic = good;
    magic[0] = 'X';
    expect_bad("magic.bin", magic, "not a boneage cache");
    expect_bad("tiny.bin", good.substr(0, 10), "not a boneage cache");
    std::string version = good;
    version[16] = 2;
    expect_bad("version.bin", version, "cache version 2, this build reads 1");
    expect_bad("truncated.bin", good.substr(0, good.size() - 100), "truncated: expected");
    expect_bad("longer.bin", good + "x", "expected");
    std::string header = good;
    header[24] = '[';
    expect_bad("header.bin", header, "header");
    EXPECT_EQ(kind_of([&] { PreparedCache c(out / "absent.bin"); }), ErrorKind::NotFound);
    PreparedCache cache(out / "good.bin");  // the original still reads
    EXPECT_EQ(cache.size(), 12u);
}

// The preamble's version and header size are little-endian on any host: the bytes themselves,
// not a round trip through one machine's order, are what a reader elsewhere sees.
TEST(CacheFormat, PreambleNumbersAreLittleEndian) {
    const auto bytes = cache_format::put_u32(0x0A0B0C0Du);
    EXPECT_EQ(bytes[0], 0x0D);
    EXPECT_EQ(bytes[1], 0x0C);
    EXPECT_EQ(bytes[2], 0x0B);
    EXPECT_EQ(bytes[3], 0x0A);
    EXPECT_EQ(cache_format::get_u32(bytes.data()), 0x0A0B0C0Du);
    const std::uint8_t big[4] = {0x01, 0x00, 0x00, 0x80};
    EXPECT_EQ(cache_format::get_u32(big), 0x80000001u);
}

TEST_F(PrepareTest, WritesTheDocumentedPreambleBytes) {
    ScratchDir out("prepare-bytes");
    PrepareOptions o = options(out / "set.bin");
    o.settings.output_size = 32;
    prepare_dataset(o);
    const std::string bytes = read_bytes(out / "set.bin");
    ASSERT_GT(bytes.size(), cache_format::kPreambleBytes);
    const auto* p = reinterpret_cast<const std::uint8_t*>(bytes.data());
    EXPECT_EQ(std::string(bytes.data(), 13), "BONEAGE-CACHE");
    const std::uint8_t version[4] = {std::uint8_t(PreparedCache::kVersion), 0, 0, 0};
    EXPECT_EQ(std::memcmp(p + 16, version, 4), 0);
    const std::size_t header = p[20] | p[21] << 8 | p[22] << 16 | std::size_t(p[23]) << 24;
    EXPECT_EQ(bytes[24], '{');
    EXPECT_EQ(bytes.size(), cache_format::pixel_offset(header) + 12u * 32u * 32u);
}

TEST_F(PrepareTest, CacheRecordsThePreprocessVersionAndTheBuildThatWroteIt) {
    ScratchDir out("prepare-meaning");
    PrepareOptions o = options(out / "set.bin");
    o.settings.output_size = 32;
    prepare_dataset(o);
    const PreparedCache cache(out / "set.bin");
    EXPECT_EQ(cache.preprocess_version(), kPreprocessVersion);
    EXPECT_EQ(cache.build_commit(), std::string(build_commit()));
    nlohmann::json header;
    test::edit_cache_header(out / "set.bin", [&](nlohmann::json& h) { header = h; });
    EXPECT_EQ(header["preprocess_version"], kPreprocessVersion) << header.dump();
    EXPECT_EQ(header["build_commit"], build_commit()) << header.dump();
}

TEST_F(PrepareTest, ACacheFromBeforeTheVersionWasRecordedReadsAsVersionOne) {
    ScratchDir out("prepare-old");
    PrepareOptions o = options(out / "old.bin");
    o.settings.output_size = 32;
    prepare_dataset(o);
    test::edit_cache_header(out / "old.bin", [](nlohmann::json& h) {
        h.erase("preprocess_version");
        h.erase("build_commit");
    });
    const PreparedCache cache(out / "old.bin");
    EXPECT_EQ(cache.preprocess_version(), 1);
    EXPECT_EQ(cache.build_commit(), "unknown");
    EXPECT_EQ(cache.size(), 12u);

    test::edit_cache_header(out / "old.bin",
                            [](nlohmann::json& h) { h["preprocess_version"] = 0; });
    try {
        PreparedCache bad(out / "old.bin");
        ADD_FAILURE() << "version 0 accepted";
    } catch (const Error& e) {
        EXPECT_EQ(e.kind(), ErrorKind::BadData);
        EXPECT_NE(e.reason().find("preprocess_version 0"), std::string::npos) << e.reason();
    }
}

}  // namespace
}  // namespace boneage
