// A bone age result as a DICOM Structured Report (Comprehensive SR) in the input's study, so
// that a PACS files it beside the radiograph it was read from.
//
//   boneage::Prediction p = predictor.predict_files({"hand.dcm"}).front();
//   boneage::write_bone_age_sr("hand.sr.dcm", p, {"default.bin", "resnet50", "boneage 0.1.0"});
//
// The report keeps the input's patient, StudyInstanceUID and accession number, starts a new
// series, lists the input image as current requested procedure evidence and holds: the bone
// age (NUM, UCUM "mo") inferred from the image (IMAGE), the chronological age, the Z-score,
// the reference SD and the interpretation when known, the model's name and version (TEXT), and
// the rest of Prediction::provenance (model file SHA-256, preprocessing version, crop method,
// precision, build commit) with a comment that it is for research use, not a medical device.
#pragma once

#include <boneage/predict.hpp>
#include <boneage/report_source.hpp>
#include <filesystem>

namespace boneage {

// Throws boneage::Error (Usage) naming the input when `prediction` is not ok or its input was
// not a DICOM image with study, series and SOP instance UIDs; (Internal) when DCMTK refuses
// the document; (NotFound) when `file` cannot be written.
void write_bone_age_sr(const std::filesystem::path& file, const Prediction& prediction,
                       const ReportSource& source);

}  // namespace boneage
