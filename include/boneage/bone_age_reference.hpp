// Bone age against chronological age: the spread of bone age in the Greulich-Pyle atlas'
// reference children (the Brush Foundation study), by sex, and the Z-score it gives.
//
//   double sd = boneage::reference_sd_months(108.0, /*male=*/true);      // 9.00
//   double z = boneage::z_score(120.3, 108.0, true);                     // +1.37
//   std::string word = boneage::interpret_z_score(z);                     // "normal"
//   boneage::AgeAssessment a = boneage::assess_bone_age(120.3, 108.0, true);
#pragma once

#include <optional>
#include <string>
#include <vector>

namespace boneage {

// One row of the reference table: chronological age and the SD of bone age at that age.
struct ReferencePoint {
    double age_months;
    double sd_months;
};

// The table by sex, ordered by age: boys 3 months to 17 years (24 rows), girls 3 months to
// 16 years (23 rows). Source in src/clinical/bone_age_reference.cpp and docs/CLINICAL.md.
const std::vector<ReferencePoint>& reference_sd_table(bool male);

// The SD of bone age, months, at `chronological_age_months`: linear between the table's
// ages, the first or last row's SD before or beyond its ends.
double reference_sd_months(double chronological_age_months, bool male);

// (bone age - chronological age) / reference SD.
double z_score(double bone_age_months, double chronological_age_months, bool male);

// Beyond these a bone age is called delayed or advanced (two SD, the usual clinical cut).
constexpr double kDelayedBelowZ = -2.0;
constexpr double kAdvancedAboveZ = 2.0;

// "delayed" below kDelayedBelowZ, "advanced" above kAdvancedAboveZ, else "normal".
std::string interpret_z_score(double z);

// What a result says about one patient. Without a chronological age or a sex there is no
// Z-score; `note` then says why (empty when no chronological age was given: nothing to say).
struct AgeAssessment {
    std::optional<double> z_score;
    std::optional<double> reference_sd_months;
    std::string interpretation;  // interpret_z_score, empty without a Z-score
    std::string note;            // why there is no Z-score, or what limits the one given
};

AgeAssessment assess_bone_age(double bone_age_months,
                              std::optional<double> chronological_age_months,
                              std::optional<bool> male);

}  // namespace boneage
