// The bone age result as a DICOM Comprehensive SR with DCMTK's dcmsr. Concept names: LOINC
// where it has a code (37362-1 bone age, 30525-0 age), DICOM's 111001/111003 for the
// algorithm; the Z-score, reference SD and interpretation have no standard code and use the
// private coding scheme 99BONEAGE (the "99" prefix the standard reserves for private schemes).
#include <boneage/dicom_sr.hpp>
#include <boneage/durable_file.hpp>
#include <boneage/error.hpp>

#include <dcmtk/config/osconfig.h>
#include <dcmtk/dcmdata/dcfilefo.h>
#include <dcmtk/dcmsr/dsrdoc.h>

#include <fmt/format.h>

namespace boneage {

namespace {

const DSRCodedEntryValue kMonths("mo", "UCUM", "months");
const DSRCodedEntryValue kNoUnits("1", "UCUM", "no units");

// Adds content items one after another below a root container, naming the file on failure.
class ReportTree {
public:
    ReportTree(DSRDocumentTree& tree, const std::filesystem::path& file)
        : tree_(tree), file_(file) {}

    void root(const DSRCodedEntryValue& title) {
        if (tree_.addContentItem(DSRTypes::RT_isRoot, DSRTypes::VT_Container) == 0)
            fail("no root container");
        check(tree_.getCurrentContentItem().setConceptName(title), "the document title");
    }
    void text(const DSRCodedEntryValue& concept, const std::string& value) {
        add(DSRTypes::VT_Text, concept);
        check(tree_.getCurrentContentItem().setStringValue(value.c_str()), "a text item");
    }
    void number(const DSRCodedEntryValue& concept, double value, const DSRCodedEntryValue& unit) {
        add(DSRTypes::VT_Num, concept);
        const std::string digits = fmt::format("{:.2f}", value);  // DS: 16 characters at most
        check(tree_.getCurrentContentItem().setNumericValue(
                  DSRNumericMeasurementValue(digits.c_str(), unit)),
              "a numeric item");
    }
    // The image the current item was inferred from, as its child.
    void inferred_from_image(const std::string& sop_class, const std::string& sop_instance) {
        if (tree_.addContentItem(DSRTypes::RT_inferredFrom, DSRTypes::VT_Image,
                                 DSRTypes::AM_belowCurrent) == 0)
            fail("no image reference item");
        check(tree_.getCurrentContentItem().setImageReference(
                  DSRImageReferenceValue(sop_class.c_str(), sop_instance.c_str())),
              "the image reference");
        tree_.goUp();
    }
    void check(const OFCondition& status, const char* what) const {
        if (status.bad()) fail(fmt::format("{}: {}", what, status.text()));
    }

private:
    void add(DSRTypes::E_ValueType type, const DSRCodedEntryValue& concept) {
        const bool first = !has_children_;
        has_children_ = true;
        OFCondition status = first ? tree_.addChildContentItem(DSRTypes::RT_contains, type, concept)
                                   : tree_.addContentItem(DSRTypes::RT_contains, type, concept);
        check(status, "a content item");
    }
    [[noreturn]] void fail(const std::string& what) const {
        throw Error(ErrorKind::Internal, file_,
                    "the structured report could not be built: " + what);
    }

    DSRDocumentTree& tree_;
    const std::filesystem::path& file_;
    bool has_children_ = false;
};

void require_dicom_source(const Prediction& p) {
    const DicomIdentity& d = p.source.dicom;
    if (!p.ok()) throw Error(ErrorKind::Usage, p.path, "no bone age to report (" + p.status + ")");
    if (p.source.format != "dicom" || d.study_instance_uid.empty() ||
        d.series_instance_uid.empty() || d.sop_instance_uid.empty() || d.sop_class_uid.empty())
        throw Error(ErrorKind::Usage, p.path,
                    "a structured report needs a DICOM input with study, series and SOP UIDs");
}

// Patient and study as the input has them; a new series in the input's study.
void set_header(DSRDocument& doc, const Prediction& p, const ReportSource& source,
                const ReportTree& tree) {
    const DicomIdentity& d = p.source.dicom;
    tree.check(doc.setPatientName(d.patient_name.c_str()), "PatientName");
    tree.check(doc.setPatientID(d.patient_id.c_str()), "PatientID");
    tree.check(doc.setPatientBirthDate(d.patient_birth_date.c_str()), "PatientBirthDate");
    tree.check(doc.setPatientSex(d.patient_sex.c_str()), "PatientSex");
    tree.check(doc.setAccessionNumber(d.accession_number.c_str()), "AccessionNumber");
    tree.check(doc.createNewSeriesInStudy(d.study_instance_uid.c_str()), "StudyInstanceUID");
    if (!d.study_date.empty()) tree.check(doc.setStudyDate(d.study_date.c_str()), "StudyDate");
    tree.check(doc.setSeriesDescription("Bone age"), "SeriesDescription");
    tree.check(doc.setManufacturer("boneage"), "Manufacturer");
    if (!source.software.empty())
        tree.check(doc.setSoftwareVersions(source.software.c_str()), "SoftwareVersions");
    tree.check(doc.getCurrentRequestedProcedureEvidence().addItem(
                   d.study_instance_uid.c_str(), d.series_instance_uid.c_str(),
                   d.sop_class_uid.c_str(), d.sop_instance_uid.c_str()),
               "the referenced image");
}

// Beside the algorithm's name and version, what else decides the number: the model file's
// digest, the preprocessing, the precision and the build; and what the report is for.
void add_provenance(ReportTree& tree, const Provenance& v) {
    auto text = [&](const char* code, const char* meaning, const std::string& value) {
        if (!value.empty()) tree.text(DSRCodedEntryValue(code, "99BONEAGE", meaning), value);
    };
    text("MODELSHA256", "Model file SHA-256", v.model_sha256);
    text("PREPVERSION", "Preprocessing version",
         v.preprocess_version > 0 ? std::to_string(v.preprocess_version) : std::string());
    text("CROP", "Crop method", v.crop_method);
    text("PRECISION", "Numeric precision", v.precision);
    text("BUILD", "Build commit", v.build_commit);
    tree.text(DSRCodedEntryValue("121106", "DCM", "Comment"),
              "Research use, not a medical device");
}

void add_content(ReportTree& tree, const Prediction& p, const ReportSource& source) {
    tree.root(DSRCodedEntryValue("18748-4", "LN", "Diagnostic imaging report"));
    tree.text(DSRCodedEntryValue("111001", "DCM", "Algorithm Name"), source.model_name);
    if (!source.model_version.empty() || !source.software.empty())
        tree.text(DSRCodedEntryValue("111003", "DCM", "Algorithm Version"),
                  source.model_version.empty() ? source.software
                                               : source.model_version + "; " + source.software);
    add_provenance(tree, p.provenance);
    tree.number(DSRCodedEntryValue("37362-1", "LN", "XR Bone age"), p.bone_age_months, kMonths);
    tree.inferred_from_image(p.source.dicom.sop_class_uid, p.source.dicom.sop_instance_uid);
    if (p.chronological_age_months)
        tree.number(DSRCodedEntryValue("30525-0", "LN", "Age"), *p.chronological_age_months,
                    kMonths);
    if (p.z_score)
        tree.number(DSRCodedEntryValue("ZSCORE", "99BONEAGE", "Bone age Z-score"), *p.z_score,
                    kNoUnits);
    if (p.reference_sd_months)
        tree.number(DSRCodedEntryValue("REFSD", "99BONEAGE", "Reference SD of bone age"),
                    *p.reference_sd_months, kMonths);
    if (!p.interpretation.empty())
        tree.text(DSRCodedEntryValue("INTERP", "99BONEAGE", "Bone age interpretation"),
                  p.interpretation);
    if (!p.z_score_note.empty())
        tree.text(DSRCodedEntryValue("121106", "DCM", "Comment"), p.z_score_note);
}

}  // namespace

void write_bone_age_sr(const std::filesystem::path& file, const Prediction& p,
                       const ReportSource& source) {
    require_dicom_source(p);
    DSRDocument doc(DSRTypes::DT_ComprehensiveSR);
    ReportTree tree(doc.getTree(), file);
    set_header(doc, p, source, tree);
    add_content(tree, p, source);
    tree.check(doc.completeDocument(), "completing the document");

    DcmFileFormat out;
    tree.check(doc.write(*out.getDataset()), "writing the dataset");
    TempFileGuard tmp(temp_beside(file));
    const OFCondition saved = out.saveFile(tmp.path().c_str(), EXS_LittleEndianExplicit);
    if (saved.bad())
        throw Error(ErrorKind::CannotWrite, file,
                    std::string("could not be written: ") + saved.text());
    tmp.commit(file);
}

}  // namespace boneage
