// Predictions as HL7 FHIR R4 Observations, the form an electronic health record takes.
//
//   boneage::ReportSource src{"default.bin", "resnet50", "boneage 0.1.0 (9c7eb98)"};
//   nlohmann::ordered_json obs = boneage::fhir_observation(prediction, src);
//   nlohmann::ordered_json out = boneage::fhir_document(predictions, src);  // Bundle when several
//
// An ok result: status "preliminary" (a machine estimate no reader has verified yet), code
// LOINC 37362-1, valueQuantity in UCUM months, components for the chronological age, the
// Z-score and the reference SD, interpretation L/N/H. A rejected or failed input: status
// "cancelled", no value, dataAbsentReason ("not-applicable" or "error") and the reason in a
// note. Every Observation's last note says where the result came from (Prediction::provenance)
// and that it is for research use, not a medical device. docs/CLINICAL.md lists every element.
#pragma once

#include <boneage/predict.hpp>
#include <boneage/report_source.hpp>
#include <nlohmann/json.hpp>
#include <vector>

namespace boneage {

// One Observation resource for one result.
nlohmann::ordered_json fhir_observation(const Prediction& prediction, const ReportSource& source);

// One input: its Observation alone, ready to POST to a server's Observation endpoint. Several:
// a Bundle of type "collection" holding one Observation per input, in input order.
nlohmann::ordered_json fhir_document(const std::vector<Prediction>& predictions,
                                     const ReportSource& source);

}  // namespace boneage
