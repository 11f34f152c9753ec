// Bone age against chronological age (the Greulich-Pyle SD table, Z-scores, dates), and the
// outputs a hospital system takes: FHIR Observations and DICOM structured reports, through the
// library and through `boneage predict`.
#include <boneage/bone_age_reference.hpp>
#include <boneage/calendar.hpp>
#include <boneage/dicom_sr.hpp>
#include <boneage/error.hpp>
#include <boneage/fhir.hpp>
#include <boneage/image.hpp>
#include <boneage/model.hpp>
#include <boneage/synth.hpp>

#include "model_support.hpp"
#include "support.hpp"

#include <dcmtk/config/osconfig.h>
#include <dcmtk/dcmdata/dcdeftag.h>
#include <dcmtk/dcmdata/dcfilefo.h>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <fstream>
#include <set>
#include <sstream>

namespace fs = std::filesystem;
using boneage::test::read_text;
using boneage::test::shell_quote;
using namespace boneage;
using boneage::test::run_command;
using boneage::test::ScratchDir;
using nlohmann::json;

namespace {

// ---- a hand-written check of FHIR R4 Observation's required elements -------------------
// resourceType; status 1..1 from its value set; code 1..1 with a coding or text; value[x] or
// dataAbsentReason, never both (obs-6); a valueQuantity with a number, a system and a code;
// each component with a code and a value or a dataAbsentReason.

void check_quantity(const json& q, const std::string& where, std::vector<std::string>& out) {
    if (!q.is_object()) return out.push_back(where + " is not an object");
    if (!q.contains("value") || !q["value"].is_number()) out.push_back(where + ".value missing");
    if (!q.contains("system") || !q["system"].is_string()) out.push_back(where + ".system missing");
    if (!q.contains("code") || !q["code"].is_string()) out.push_back(where + ".code missing");
}

void check_code(const json& parent, const std::string& where, std::vector<std::string>& out) {
    if (!parent.contains("code")) return out.push_back(where + "code missing");
    const json& c = parent["code"];
    bool coded = c.contains("coding") && c["coding"].is_array() && !c["coding"].empty();
    bool text =
        c.contains("text") && c["text"].is_string() && !c["text"].get<std::string>().empty();
    if (!coded && !text) out.push_back(where + "code has neither coding nor text");
    if (coded)
        for (const json& coding : c["coding"])
            if (!coding.contains("system") || !coding.contains("code"))
                out.push_back(where + "code.coding lacks system or code");
}

bool has_value(const json& j) {
    for (const auto& [key, value] : j.items())
        if (key.rfind("value", 0) == 0) return true;
    return false;
}

std::vector<std::string> observation_problems(const json& obs) {
    static const std::set<std::string> statuses = {"registered",       "preliminary", "final",
                                                   "amended",          "corrected",   "cancelled",
                                                   "entered-in-error", "unknown"};
    std::vector<std::string> out;
    if (obs.value("resourceType", "") != "Observation") out.push_back("resourceType");
    if (!obs.contains("status") || !obs["status"].is_string() ||
        !statuses.count(obs["status"].get<std::string>()))
        out.push_back("status missing or not a status code");
    check_code(obs, "", out);
    const bool value = has_value(obs), absent = obs.contains("dataAbsentReason");
    if (value == absent) out.push_back("needs exactly one of value[x] and dataAbsentReason");
    if (obs.contains("valueQuantity")) check_quantity(obs["valueQuantity"], "valueQuantity", out);
    for (const json& c : obs.value("component", json::array())) {
        check_code(c, "component.", out);
        if (has_value(c) == c.contains("dataAbsentReason"))
            out.push_back("component needs exactly one of value[x] and dataAbsentReason");
        if (c.contains("valueQuantity"))
            check_quantity(c["valueQuantity"], "component.valueQuantity", out);
    }
    return out;
}

std::string joined(const std::vector<std::string>& v) {
    std::string s;
    for (const auto& x : v) s += x + "; ";
    return s;
}

// ---- fixtures ---------------------------------------------------------------------------

const std::string kCli = BONEAGE_CLI;

DicomIdentity girl_identity() {
    DicomIdentity id;
    id.patient_id = "P-0042";
    id.patient_name = "Doe^Jane";
    id.patient_sex = "F";
    id.patient_birth_date = "20150301";
    id.study_date = "20240301";
    id.accession_number = "ACC7";
    id.study_instance_uid = "1.2.826.0.1.3680043.10.1234.1";
    id.series_instance_uid = "1.2.826.0.1.3680043.10.1234.2";
    id.sop_instance_uid = "1.2.826.0.1.3680043.10.1234.3";
    return id;
}

// A hand phantom written as PNG and as DICOM with `id`.
struct HandFiles {
    fs::path png, dcm;
    HandFiles(const fs::path& dir, const DicomIdentity& id) {
        Phantom p = make_phantom({"hand", 110.0, false}, 7);
        png = dir / "hand.png";
        dcm = dir / "hand.dcm";
        write_image(png, p.image);
        write_dicom(dcm, p.image, id);
    }
};

// An ok prediction as the predictor gives one, with a chronological age and a sex.
Prediction ok_prediction() {
    Prediction p;
    p.path = "hand.dcm";
    p.bone_age_months = 120.3;
    p.raw_months = 120.3;
    p.male = true;
    p.chronological_age_months = 108.0;
    AgeAssessment a = assess_bone_age(p.bone_age_months, p.chronological_age_months, p.male);
    p.z_score = a.z_score;
    p.reference_sd_months = a.reference_sd_months;
    p.interpretation = a.interpretation;
    p.source.format = "dicom";
    p.source.dicom = girl_identity();
    p.source.dicom.sop_class_uid = "1.2.840.10008.5.1.4.1.1.7";
    return p;
}

int run_cli(const std::string& args, std::string* out, const fs::path& scratch) {
    return run_command(
        "{ " + kCli + " " + args + " 2>" + shell_quote(scratch / "stderr.txt") + "; }", out);
}

}  // namespace

// ---- the reference table -------------------------------------------------------------

TEST(ReferenceTable, HasOneRowPerPublishedAgeForEachSex) {
    const auto& boys = reference_sd_table(true);
    const auto& girls = reference_sd_table(false);
    ASSERT_EQ(boys.size(), 24u);   // 3 months to 17 years
    ASSERT_EQ(girls.size(), 23u);  // 3 months to 16 years
    EXPECT_EQ(boys.front().age_months, 3.0);
    EXPECT_EQ(boys.back().age_months, 204.0);
    EXPECT_EQ(girls.back().age_months, 192.0);
    for (std::size_t i = 1; i < boys.size(); ++i)
        EXPECT_LT(boys[i - 1].age_months, boys[i].age_months);
}

TEST(ReferenceTable, GivesThePublishedSdAtEachKnot) {
    EXPECT_DOUBLE_EQ(reference_sd_months(3, true), 0.69);
    EXPECT_DOUBLE_EQ(reference_sd_months(18, true), 3.52);
    EXPECT_DOUBLE_EQ(reference_sd_months(72, true), 9.17);
    EXPECT_DOUBLE_EQ(reference_sd_months(108, true), 9.00);
    EXPECT_DOUBLE_EQ(reference_sd_months(204, true), 13.05);
    EXPECT_DOUBLE_EQ(reference_sd_months(3, false), 0.72);
    EXPECT_DOUBLE_EQ(reference_sd_months(60, false), 11.65);
    EXPECT_DOUBLE_EQ(reference_sd_months(156, false), 10.67);
    EXPECT_DOUBLE_EQ(reference_sd_months(192, false), 7.31);
}

TEST(ReferenceTable, InterpolatesLinearlyBetweenKnots) {
    EXPECT_DOUBLE_EQ(reference_sd_months(15, true), 0.5 * (1.97 + 3.52));
    EXPECT_DOUBLE_EQ(reference_sd_months(75, true), 9.17 + 0.25 * (8.91 - 9.17));
    EXPECT_DOUBLE_EQ(reference_sd_months(66, false), 0.5 * (11.65 + 10.23));
    EXPECT_DOUBLE_EQ(reference_sd_months(189, false), 9.23 + 0.75 * (7.31 - 9.23));
}

TEST(ReferenceTable, HoldsTheEndValuesBeyondTheTable) {
    EXPECT_DOUBLE_EQ(reference_sd_months(0, true), 0.69);
    EXPECT_DOUBLE_EQ(reference_sd_months(-5, false), 0.72);
    EXPECT_DOUBLE_EQ(reference_sd_months(228, true), 13.05);
    EXPECT_DOUBLE_EQ(reference_sd_months(204, false), 7.31);  // girls end at 16 years
}

TEST(ZScore, IsTheDifferenceOverTheSd) {
    EXPECT_DOUBLE_EQ(z_score(120, 108, true), 12.0 / 9.0);
    EXPECT_DOUBLE_EQ(z_score(60, 72, false), -12.0 / 10.23);
}

TEST(ZScore, InterpretationChangesOnlyBeyondTwoSd) {
    EXPECT_EQ(interpret_z_score(-2.01), "delayed");
    EXPECT_EQ(interpret_z_score(-2.0), "normal");
    EXPECT_EQ(interpret_z_score(0.0), "normal");
    EXPECT_EQ(interpret_z_score(2.0), "normal");
    EXPECT_EQ(interpret_z_score(2.01), "advanced");
    // 20 months behind a 9-year-old boy (SD 9.00) is Z -2.22.
    EXPECT_EQ(assess_bone_age(88, 108, true).interpretation, "delayed");
    EXPECT_EQ(assess_bone_age(126, 108, true).interpretation, "normal");  // Z +2.00 exactly
    EXPECT_EQ(assess_bone_age(127, 108, true).interpretation, "advanced");
}

TEST(ZScore, NeedsASexAndSaysSo) {
    AgeAssessment a = assess_bone_age(120, 108, std::nullopt);
    EXPECT_FALSE(a.z_score);
    EXPECT_FALSE(a.reference_sd_months);
    EXPECT_EQ(a.interpretation, "");
    EXPECT_EQ(a.note, "sex not given: the reference SD differs by sex");
    AgeAssessment none = assess_bone_age(120, std::nullopt, true);
    EXPECT_FALSE(none.z_score);
    EXPECT_EQ(none.note, "");
    AgeAssessment old = assess_bone_age(220, 216, true);  // 18 years: past the boys' table
    ASSERT_TRUE(old.z_score);
    EXPECT_DOUBLE_EQ(*old.reference_sd_months, 13.05);
    EXPECT_NE(old.note.find("outside the reference table (0.25 to 17 years)"), std::string::npos)
        << old.note;
}

// ---- dates ----------------------------------------------------------------------------

TEST(Calendar, ParsesIsoAndDicomDates) {
    std::optional<Date> iso = try_parse_date("2015-03-01");
    std::optional<Date> da = try_parse_date("20150301");
    ASSERT_TRUE(iso && da);
    EXPECT_EQ(iso->year, 2015);
    EXPECT_EQ(iso->month, 3);
    EXPECT_EQ(iso->day, 1);
    EXPECT_EQ(to_string(*da), "2015-03-01");
    EXPECT_TRUE(try_parse_date("2020-02-29"));
}

TEST(Calendar, RefusesMalformedAndImpossibleDates) {
    for (const char* bad :
         {"", "2015-3-1", "2015/03/01", "15-03-01", "2015-13-01", "2015-00-10", "2023-02-29",
          "2015-04-31", "2015-03-01T00", "abcd-ef-gh", "1799-12-31"})
        EXPECT_FALSE(try_parse_date(bad)) << bad;
    try {
        parse_date("2015/03/01", "--birth-date");
        FAIL() << "no error";
    } catch (const UsageError& e) {
        EXPECT_NE(std::string(e.what()).find("--birth-date '2015/03/01'"), std::string::npos)
            << e.what();
    }
}

TEST(Calendar, AgeInMonthsIsDaysOverTheMeanMonth) {
    Date birth = parse_date("2015-03-01");
    EXPECT_EQ(days_between(birth, parse_date("2024-03-01")), 3288);  // 9 years, 3 leap days
    EXPECT_DOUBLE_EQ(age_in_months(birth, parse_date("2024-03-01")), 3288 / 30.4375);
    EXPECT_EQ(days_between(parse_date("2020-02-28"), parse_date("2020-03-01")), 2);
    EXPECT_DOUBLE_EQ(age_in_months(birth, birth), 0.0);
    EXPECT_THROW(age_in_months(parse_date("2024-03-01"), birth), UsageError);
}

// ---- FHIR -----------------------------------------------------------------------------

TEST(Fhir, OkResultIsAPreliminaryObservationInMonths) {
    ReportSource src{"tiny.bin", "shallow", "boneage test"};
    json obs = fhir_observation(ok_prediction(), src);
    EXPECT_TRUE(observation_problems(obs).empty()) << joined(observation_problems(obs));
    EXPECT_EQ(obs["status"], "preliminary");
    EXPECT_EQ(obs["code"]["coding"][0]["system"], "http://loinc.org");
    EXPECT_EQ(obs["code"]["coding"][0]["code"], "37362-1");
    EXPECT_EQ(obs["valueQuantity"]["value"], 120.3);
    EXPECT_EQ(obs["valueQuantity"]["system"], "http://unitsofmeasure.org");
    EXPECT_EQ(obs["valueQuantity"]["code"], "mo");
    EXPECT_EQ(obs["interpretation"][0]["coding"][0]["code"], "N");
    EXPECT_EQ(obs["interpretation"][0]["text"], "normal");
    EXPECT_EQ(obs["subject"]["identifier"]["value"], "P-0042");
    EXPECT_EQ(obs["effectiveDateTime"], "2024-03-01");
    EXPECT_EQ(obs["derivedFrom"][0]["identifier"]["value"],
              "urn:oid:1.2.826.0.1.3680043.10.1234.1");
    EXPECT_NE(obs["device"]["display"].get<std::string>().find("tiny.bin"), std::string::npos);
    ASSERT_EQ(obs["component"].size(), 4u);  // age, difference, Z-score, SD
    EXPECT_EQ(obs["component"][0]["code"]["coding"][0]["code"], "30525-0");
    EXPECT_EQ(obs["component"][0]["valueQuantity"]["value"], 108.0);
    EXPECT_EQ(obs["component"][1]["valueQuantity"]["value"], 12.3);
    EXPECT_EQ(obs["component"][2]["valueQuantity"]["value"], 1.37);  // 12.3 / 9.00
    EXPECT_EQ(obs["component"][3]["valueQuantity"]["value"], 9.0);
}

TEST(Fhir, FailedAndRejectedInputsCarryADataAbsentReason) {
    ReportSource src{"tiny.bin", "shallow", "boneage test"};
    Prediction error;
    error.status = "error";
    error.message = "x.png: truncated";
    Prediction rejected;
    rejected.status = "rejected";
    rejected.message = "not a hand radiograph";
    json e = fhir_observation(error, src), r = fhir_observation(rejected, src);
    for (const json& obs : {e, r}) {
        EXPECT_TRUE(observation_problems(obs).empty()) << joined(observation_problems(obs));
        EXPECT_FALSE(obs.contains("valueQuantity"));
        EXPECT_EQ(obs["status"], "cancelled");
    }
    EXPECT_EQ(e["dataAbsentReason"]["coding"][0]["code"], "error");
    EXPECT_EQ(e["note"][0]["text"], "x.png: truncated");
    EXPECT_EQ(r["dataAbsentReason"]["coding"][0]["code"], "not-applicable");
    EXPECT_EQ(r["note"][0]["text"], "not a hand radiograph");
}

TEST(Fhir, TheCheckerRefusesAnObservationMissingARequiredElement) {
    json good = fhir_observation(ok_prediction(), {"tiny.bin", "", ""});
    ASSERT_TRUE(observation_problems(good).empty());
    for (const char* key : {"status", "code", "valueQuantity", "resourceType"}) {
        json bad = good;
        bad.erase(key);
        EXPECT_FALSE(observation_problems(bad).empty()) << key;
    }
    json both = good;
    both["dataAbsentReason"] = {{"text", "x"}};
    EXPECT_FALSE(observation_problems(both).empty());
    json no_unit_system = good;
    no_unit_system["valueQuantity"].erase("system");
    EXPECT_FALSE(observation_problems(no_unit_system).empty());
    json bad_status = good;
    bad_status["status"] = "done";
    EXPECT_FALSE(observation_problems(bad_status).empty());
}

TEST(Fhir, SeveralInputsMakeACollectionBundle) {
    ReportSource src{"tiny.bin", "", ""};
    Prediction error;
    error.status = "error";
    error.message = "unreadable";
    json one = fhir_document({ok_prediction()}, src);
    EXPECT_EQ(one["resourceType"], "Observation");
    json two = fhir_document({ok_prediction(), error}, src);
    EXPECT_EQ(two["resourceType"], "Bundle");
    EXPECT_EQ(two["type"], "collection");
    ASSERT_EQ(two["entry"].size(), 2u);
    EXPECT_EQ(two["entry"][1]["resource"]["dataAbsentReason"]["coding"][0]["code"], "error");
}

// ---- DICOM SR -------------------------------------------------------------------------

TEST(DicomSr, RoundTripsTheBoneAgeAndTheStudy) {
    ScratchDir dir("clinical-sr");
    HandFiles files(dir.path(), girl_identity());
    Prediction p = ok_prediction();
    p.bone_age_months = 123.45;
    p.source = read_radiograph(files.dcm).info;
    ASSERT_EQ(p.source.dicom.study_instance_uid, girl_identity().study_instance_uid);
    ASSERT_FALSE(p.source.dicom.sop_class_uid.empty());
    const fs::path sr = dir / "hand.sr.dcm";
    write_bone_age_sr(sr, p, {"tiny.bin", "shallow", "boneage test"});

    // The study and the referenced image, read back with DCMTK.
    DcmFileFormat back;
    ASSERT_TRUE(back.loadFile(sr.c_str()).good());
    OFString study, sop_class, modality, patient;
    back.getDataset()->findAndGetOFString(DCM_StudyInstanceUID, study);
    back.getDataset()->findAndGetOFString(DCM_SOPClassUID, sop_class);
    back.getDataset()->findAndGetOFString(DCM_Modality, modality);
    back.getDataset()->findAndGetOFString(DCM_PatientID, patient);
    EXPECT_EQ(std::string(study.c_str()), girl_identity().study_instance_uid);
    EXPECT_EQ(std::string(sop_class.c_str()), "1.2.840.10008.5.1.4.1.1.88.33");  // Comprehensive SR
    EXPECT_EQ(std::string(modality.c_str()), "SR");
    EXPECT_EQ(std::string(patient.c_str()), "P-0042");

    if (run_command("command -v dsrdump") != 0)
        GTEST_SKIP() << "dsrdump (Debian package dcmtk) is not installed; content not checked";
    std::string dump;
    ASSERT_EQ(run_command("dsrdump +Pu " + shell_quote(sr), &dump), 0) << dump;
    EXPECT_NE(dump.find("\"123.45\" (mo"), std::string::npos) << dump;
    EXPECT_NE(dump.find("\"108.00\" (mo"), std::string::npos) << dump;
    EXPECT_NE(dump.find("tiny.bin"), std::string::npos) << dump;
    EXPECT_NE(dump.find(girl_identity().sop_instance_uid), std::string::npos) << dump;
}

TEST(DicomSr, RefusesAnInputThatIsNotDicom) {
    ScratchDir dir("clinical-sr-png");
    Prediction p = ok_prediction();
    p.source = ImageInfo{};
    p.source.format = "png";
    EXPECT_THROW(write_bone_age_sr(dir / "x.sr.dcm", p, {"tiny.bin", "", ""}), Error);
    Prediction failed = ok_prediction();
    failed.status = "error";
    EXPECT_THROW(write_bone_age_sr(dir / "y.sr.dcm", failed, {"tiny.bin", "", ""}), Error);
}

// ---- the command line -----------------------------------------------------------------

struct CliInputs {
    ScratchDir dir{"clinical-cli"};
    fs::path model = test::write_tiny_model(dir / "tiny.bin");  // a shallow net ignoring sex
    HandFiles hand{dir.path(), girl_identity()};
};

TEST(ClinicalCli, BirthAndStudyDatesGiveTheChronologicalAgeAndZScore) {
    CliInputs in;
    std::string out;
    ASSERT_EQ(run_cli("predict --format json --sex male --birth-date 2015-03-01 --study-date "
                      "2024-03-01 --model " +
                          shell_quote(in.model) + " " + shell_quote(in.hand.png),
                      &out, in.dir.path()),
              0)
        << out << read_text(in.dir / "stderr.txt");
    json r = json::parse(out).at(0);
    const double age = 3288 / 30.4375;
    EXPECT_DOUBLE_EQ(r["chronological_age_months"].get<double>(), age);
    EXPECT_EQ(r["male"], true);
    const double bone = r["bone_age_months"].get<double>();
    EXPECT_DOUBLE_EQ(r["reference_sd_months"].get<double>(), reference_sd_months(age, true));
    EXPECT_DOUBLE_EQ(r["z_score"].get<double>(), (bone - age) / reference_sd_months(age, true));
    EXPECT_DOUBLE_EQ(r["difference_months"].get<double>(), bone - age);
    EXPECT_EQ(r["interpretation"], interpret_z_score(r["z_score"].get<double>()));
    EXPECT_TRUE(r["z_score_note"].is_null());
}

TEST(ClinicalCli, BadDatesAreUsageErrors) {
    CliInputs in;
    const std::string tail = " --model " + shell_quote(in.model) + " " + shell_quote(in.hand.png);
    std::string out;
    for (const char* args : {"--birth-date 2015-3-1 --study-date 2024-03-01",
                             "--birth-date 2015-03-01 --study-date 2023-02-29",
                             "--birth-date 2024-03-01 --study-date 2015-03-01",
                             "--birth-date 2015-03-01 --chronological-age 100"}) {
        EXPECT_EQ(run_cli("predict " + std::string(args) + tail, &out, in.dir.path()), 2) << args;
    }
    EXPECT_NE(read_text(in.dir / "stderr.txt").find("not both"), std::string::npos);
}

TEST(ClinicalCli, DicomSuppliesSexAndDatesAndTheCommandLineOverridesThem) {
    CliInputs in;
    std::string out;
    ASSERT_EQ(run_cli("predict --format json --model " + shell_quote(in.model) + " " +
                          shell_quote(in.hand.dcm),
                      &out, in.dir.path()),
              0)
        << out;
    json fromDicom = json::parse(out).at(0);
    const double age = 3288 / 30.4375;  // 2015-03-01 to 2024-03-01
    EXPECT_EQ(fromDicom["male"], false);
    EXPECT_DOUBLE_EQ(fromDicom["chronological_age_months"].get<double>(), age);
    EXPECT_DOUBLE_EQ(fromDicom["reference_sd_months"].get<double>(),
                     reference_sd_months(age, false));

    ASSERT_EQ(run_cli("predict --format json --sex male --study-date 2025-03-01 --model " +
                          shell_quote(in.model) + " " + shell_quote(in.hand.dcm),
                      &out, in.dir.path()),
              0)
        << out;
    json overridden = json::parse(out).at(0);
    const double later = 3653 / 30.4375;  // 2015-03-01 to 2025-03-01, the DICOM's birth date
    EXPECT_EQ(overridden["male"], true);
    EXPECT_DOUBLE_EQ(overridden["chronological_age_months"].get<double>(), later);
    EXPECT_DOUBLE_EQ(overridden["reference_sd_months"].get<double>(),
                     reference_sd_months(later, true));
}

TEST(ClinicalCli, TextAndCsvCarryTheComparison) {
    CliInputs in;
    std::string out;
    ASSERT_EQ(run_cli("predict --sex male --chronological-age 108 --model " +
                          shell_quote(in.model) + " " + shell_quote(in.hand.png),
                      &out, in.dir.path()),
              0);
    EXPECT_NE(out.find(", male, chronological age 108.0 months: "), std::string::npos) << out;
    EXPECT_NE(out.find("(SD 9.00)"), std::string::npos) << out;
    ASSERT_EQ(run_cli("predict --format csv --chronological-age 108 --model " +
                          shell_quote(in.model) + " " + shell_quote(in.hand.png),
                      &out, in.dir.path()),
              0);
    std::istringstream lines(out);
    std::string header, row;
    std::getline(lines, header);
    std::getline(lines, row);
    EXPECT_EQ(header.rfind("path,bone_age_months,status,", 0), 0u) << header;
    EXPECT_NE(header.find(",difference_months,reference_sd_months,interpretation,z_score_note"),
              std::string::npos)
        << header;
    // No sex: no SD nor interpretation, and the note says why.
    EXPECT_NE(row.find(",,,sex not given: the reference SD differs by sex"), std::string::npos)
        << row;
}

TEST(ClinicalCli, FhirFormatGivesObservationsThatPassTheCheck) {
    CliInputs in;
    fs::path broken = in.dir / "broken.png";
    std::ofstream(broken) << "not an image";
    std::string out;
    EXPECT_EQ(run_cli("predict --format fhir --model " + shell_quote(in.model) + " " +
                          shell_quote(in.hand.dcm) + " " + shell_quote(broken),
                      &out, in.dir.path()),
              1);
    json bundle = json::parse(out);
    ASSERT_EQ(bundle["resourceType"], "Bundle");
    ASSERT_EQ(bundle["entry"].size(), 2u);
    for (const json& e : bundle["entry"])
        EXPECT_TRUE(observation_problems(e["resource"]).empty())
            << joined(observation_problems(e["resource"]));
    const json& ok = bundle["entry"][0]["resource"];
    EXPECT_EQ(ok["subject"]["identifier"]["value"], "P-0042");
    EXPECT_EQ(ok["valueQuantity"]["code"], "mo");
    EXPECT_NE(ok["device"]["display"].get<std::string>().find("tiny.bin"), std::string::npos);
    EXPECT_EQ(bundle["entry"][1]["resource"]["dataAbsentReason"]["coding"][0]["code"], "error");
}

TEST(ClinicalCli, DicomSrIsWrittenForDicomInputsOnly) {
    CliInputs in;
    fs::path reports = in.dir / "reports";
    std::string out;
    ASSERT_EQ(
        run_cli("predict --dicom-sr " + shell_quote(reports) + " --model " + shell_quote(in.model) +
                    " " + shell_quote(in.hand.dcm) + " " + shell_quote(in.hand.png),
                &out, in.dir.path()),
        0)
        << out << read_text(in.dir / "stderr.txt");
    EXPECT_TRUE(fs::exists(reports / "hand.sr.dcm"));
    EXPECT_EQ(std::distance(fs::directory_iterator(reports), fs::directory_iterator()), 1);
    EXPECT_NE(read_text(in.dir / "stderr.txt").find("is not DICOM; no structured report"),
              std::string::npos);
    DcmFileFormat back;
    ASSERT_TRUE(back.loadFile((reports / "hand.sr.dcm").c_str()).good());
    OFString study;
    back.getDataset()->findAndGetOFString(DCM_StudyInstanceUID, study);
    EXPECT_EQ(std::string(study.c_str()), girl_identity().study_instance_uid);
}

TEST(ClinicalCli, FhirAndDicomSrNameTheModelHashBuildPrecisionAndCrop) {
    CliInputs in;
    std::string sha;
    ASSERT_EQ(run_command("sha256sum " + shell_quote(in.model), &sha), 0);
    sha = sha.substr(0, 64);
    std::string out;
    ASSERT_EQ(run_cli("predict --format fhir --model " + shell_quote(in.model) + " " +
                          shell_quote(in.hand.dcm),
                      &out, in.dir.path()),
              0)
        << out;
    const json obs = json::parse(out);
    EXPECT_TRUE(observation_problems(obs).empty()) << joined(observation_problems(obs));
    std::string notes;
    for (const json& n : obs.value("note", json::array()))
        notes += n["text"].get<std::string>() + "\n";
    for (const std::string& part : {sha, std::string("tiny.bin"), std::string("shallow-"),
                                    std::string("crop threshold"),
                                    std::string("research use, not a medical device")})
        EXPECT_NE(notes.find(part), std::string::npos) << part << " not in:\n" << notes;
    EXPECT_TRUE(notes.find("fp32") != std::string::npos || notes.find("bf16") != std::string::npos)
        << notes;

    const fs::path reports = in.dir / "reports";
    ASSERT_EQ(run_cli("predict --dicom-sr " + shell_quote(reports) + " --model " +
                          shell_quote(in.model) + " " + shell_quote(in.hand.dcm),
                      &out, in.dir.path()),
              0)
        << out << read_text(in.dir / "stderr.txt");
    if (run_command("command -v dsrdump") != 0)
        GTEST_SKIP() << "dsrdump (Debian package dcmtk) is not installed; content not checked";
    std::string dump;
    ASSERT_EQ(run_command("dsrdump +Pu +Pl " + shell_quote(reports / "hand.sr.dcm"), &dump), 0)
        << dump;
    for (const std::string& part : {sha, std::string("Model file SHA-256"),
                                    std::string("shallow-"), std::string("Crop method"),
                                    std::string("Numeric precision"), std::string("Build commit")})
        EXPECT_NE(dump.find(part), std::string::npos) << part << " not in:\n" << dump;
}
