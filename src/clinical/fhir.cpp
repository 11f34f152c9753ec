// FHIR R4 Observations of bone age. Codes: LOINC 37362-1 "XR Bone age" for the result and
// 30525-0 "Age" for the chronological age; months in UCUM ("mo"); interpretation from HL7 v3
// ObservationInterpretation. LOINC has no code for a bone age Z-score or the atlas' SD, so
// those components carry a text-only code.
#include <boneage/fhir.hpp>

#include <boneage/calendar.hpp>

#include <cmath>
#include <string>
#include <vector>

namespace boneage {

namespace {

using json = nlohmann::ordered_json;  // keys in the order FHIR lists them: resourceType first

const char* const kUcum = "http://unitsofmeasure.org";
const char* const kLoinc = "http://loinc.org";

// Two decimals: finer than any reading of a radiograph, short enough to read.
double rounded(double v) { return std::round(v * 100.0) / 100.0; }

json coding(const char* system, const std::string& code, const std::string& display) {
    return {{"system", system}, {"code", code}, {"display", display}};
}

json months(double value) {
    return {{"value", rounded(value)}, {"unit", "mo"}, {"system", kUcum}, {"code", "mo"}};
}

json component(json code, json value_quantity) {
    return {{"code", std::move(code)}, {"valueQuantity", std::move(value_quantity)}};
}

json text_code(const std::string& text) { return {{"text", text}}; }

json components(const Prediction& p) {
    json out = json::array();
    if (p.chronological_age_months)
        out.push_back(component(
            {{"coding", {coding(kLoinc, "30525-0", "Age")}}, {"text", "Chronological age"}},
            months(*p.chronological_age_months)));
    if (std::optional<double> d = p.difference_months())
        out.push_back(component(text_code("Bone age minus chronological age"), months(*d)));
    if (p.z_score)
        out.push_back(component(
            text_code("Bone age Z-score (Greulich-Pyle, Brush Foundation SD)"),
            {{"value", rounded(*p.z_score)}, {"unit", "SD"}, {"system", kUcum}, {"code", "1"}}));
    if (p.reference_sd_months)
        out.push_back(component(text_code("Reference SD of bone age for age and sex"),
                                months(*p.reference_sd_months)));
    return out;
}

// delayed, normal, advanced as HL7's Low, Normal, High, with the word itself as the text.
json interpretation(const std::string& word) {
    static const char* const system =
        "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation";
    json c = word == "delayed"    ? coding(system, "L", "Low")
             : word == "advanced" ? coding(system, "H", "High")
                                  : coding(system, "N", "Normal");
    return json::array({{{"coding", {c}}, {"text", word}}});
}

json absent_reason(const Prediction& p) {
    static const char* const system = "http://terminology.hl7.org/CodeSystem/data-absent-reason";
    json c = p.status == "rejected" ? coding(system, "not-applicable", "Not Applicable")
                                    : coding(system, "error", "Error");
    return {{"coding", {c}}, {"text", p.message}};
}

// Where the result came from and what it is for, in the words a reader of the record sees;
// the parts the prediction does not know (one made in memory) are left out.
std::string provenance_note(const Provenance& v) {
    std::vector<std::string> parts;
    if (!v.model_file.empty() || !v.model_version.empty()) {
        std::string model = "model " + (v.model_file.empty() ? v.model_version : v.model_file);
        if (!v.model_file.empty() && !v.model_version.empty())
            model += ", version " + v.model_version;
        if (!v.model_sha256.empty()) model += ", SHA-256 " + v.model_sha256;
        parts.push_back(model);
    }
    if (v.preprocess_version > 0)
        parts.push_back("preprocessing version " + std::to_string(v.preprocess_version) +
                        (v.crop_method.empty() ? "" : ", crop " + v.crop_method));
    if (!v.precision.empty()) parts.push_back(v.precision);
    if (!v.build_commit.empty()) parts.push_back("build " + v.build_commit);
    parts.push_back("research use, not a medical device");
    std::string out;
    for (const std::string& part : parts) out += (out.empty() ? "" : "; ") + part;
    return out;
}

json notes(const Prediction& p) {
    json out = json::array();
    if (!p.ok() && !p.message.empty()) out.push_back({{"text", p.message}});
    if (!p.z_score_note.empty()) out.push_back({{"text", p.z_score_note}});
    for (const std::string& w : p.warnings) out.push_back({{"text", w}});
    out.push_back({{"text", provenance_note(p.provenance)}});
    return out;
}

// Patient and date from the DICOM header, where the input had one.
void add_patient(json& obs, const DicomIdentity& d) {
    if (!d.patient_id.empty()) {
        obs["subject"] = {{"identifier", {{"value", d.patient_id}}}};
        if (!d.patient_name.empty()) obs["subject"]["display"] = d.patient_name;
    }
    if (std::optional<Date> date = try_parse_date(d.study_date))
        obs["effectiveDateTime"] = to_string(*date);
}

// The imaging study the result was read from, by its DICOM UID.
void add_source_study(json& obs, const DicomIdentity& d) {
    if (d.study_instance_uid.empty()) return;
    obs["derivedFrom"] = json::array(
        {{{"type", "ImagingStudy"},
          {"identifier",
           {{"system", "urn:dicom:uid"}, {"value", "urn:oid:" + d.study_instance_uid}}}}});
}

std::string model_text(const ReportSource& s) {
    std::string out = "model " + s.model_name;
    if (!s.model_version.empty()) out += " (" + s.model_version + ")";
    return out;
}

}  // namespace

json fhir_observation(const Prediction& p, const ReportSource& source) {
    json obs = {{"resourceType", "Observation"}};
    // Unverified machine output is "preliminary"; "final" needs a reader's sign-off.
    obs["status"] = p.ok() ? "preliminary" : "cancelled";
    obs["category"] =
        json::array({{{"coding",
                       {coding("http://terminology.hl7.org/CodeSystem/observation-category",
                               "imaging", "Imaging")}}}});
    obs["code"] = {{"coding", {coding(kLoinc, "37362-1", "XR Bone age")}}, {"text", "Bone age"}};
    add_patient(obs, p.source.dicom);
    if (p.ok())
        obs["valueQuantity"] = months(p.bone_age_months);
    else
        obs["dataAbsentReason"] = absent_reason(p);
    if (p.ok() && !p.interpretation.empty())
        obs["interpretation"] = interpretation(p.interpretation);
    json n = notes(p);
    if (!n.empty()) obs["note"] = std::move(n);
    obs["method"] = {{"text", "Automated estimate from the hand radiograph by a neural network, " +
                                  model_text(source)}};
    obs["device"] = {{"display", source.software + ", " + model_text(source)}};
    add_source_study(obs, p.source.dicom);
    json parts = p.ok() ? components(p) : json::array();
    if (!parts.empty()) obs["component"] = std::move(parts);
    return obs;
}

json fhir_document(const std::vector<Prediction>& predictions, const ReportSource& source) {
    if (predictions.size() == 1) return fhir_observation(predictions.front(), source);
    json entries = json::array();
    for (const Prediction& p : predictions)
        entries.push_back({{"resource", fhir_observation(p, source)}});
    return {{"resourceType", "Bundle"}, {"type", "collection"}, {"entry", std::move(entries)}};
}

}  // namespace boneage
