// The Greulich-Pyle reference SDs and the Z-score of a bone age.
//
// Source: W. W. Greulich and S. I. Pyle, "Radiographic Atlas of Skeletal Development of the
// Hand and Wrist", 2nd ed., Stanford University Press, 1959: the standard deviations of
// skeletal age in the Brush Foundation study children, by sex and chronological age, in
// months. The same 47 values, at the same ages, appear in a public reimplementation of the
// atlas' growth chart ("Brush Foundation Study"); the printed atlas itself was not at hand to
// check them against (docs/CLINICAL.md).
#include <boneage/bone_age_reference.hpp>

#include <fmt/format.h>

#include <algorithm>
#include <iterator>

namespace boneage {

namespace {

// Chronological ages of the table's rows, months: 3, 6, 9, 12, 18 months, then every half
// year from 2 to 5 years, then every year to 17 (boys) or 16 (girls).
constexpr double kAges[] = {3,  6,  9,  12,  18,  24,  30,  36,  42,  48,  54,  60,
                            72, 84, 96, 108, 120, 132, 144, 156, 168, 180, 192, 204};

// SD of skeletal age in months, one per age above: 24 for boys (to 17 years).
constexpr double kBoysSd[] = {0.69, 1.13,  1.43,  1.97,  3.52,  3.92,  4.52,  5.08,
                              5.40, 6.66,  8.36,  8.79,  9.17,  8.91,  9.10,  9.00,
                              9.79, 10.09, 10.38, 10.44, 10.72, 11.32, 12.86, 13.05};

// 23 for girls (to 16 years).
constexpr double kGirlsSd[] = {0.72,  1.16,  1.36,  1.77,  3.49,  4.64, 5.37,  5.97,
                               7.48,  8.98,  10.73, 11.65, 10.23, 9.64, 10.23, 10.74,
                               11.73, 11.94, 10.24, 10.67, 11.30, 9.23, 7.31};

static_assert(std::size(kBoysSd) == std::size(kAges), "one boys' SD per age");
static_assert(std::size(kGirlsSd) == std::size(kAges) - 1, "girls' table ends at 16 years");

template <std::size_t N>
std::vector<ReferencePoint> rows(const double (&sd)[N]) {
    std::vector<ReferencePoint> out;
    for (std::size_t i = 0; i < N; ++i) out.push_back({kAges[i], sd[i]});
    return out;
}

std::string years(double months) { return fmt::format("{:g}", months / 12.0); }

}  // namespace

const std::vector<ReferencePoint>& reference_sd_table(bool male) {
    static const std::vector<ReferencePoint> boys = rows(kBoysSd);
    static const std::vector<ReferencePoint> girls = rows(kGirlsSd);
    return male ? boys : girls;
}

double reference_sd_months(double age, bool male) {
    const std::vector<ReferencePoint>& t = reference_sd_table(male);
    if (age <= t.front().age_months) return t.front().sd_months;
    if (age >= t.back().age_months) return t.back().sd_months;
    auto hi = std::upper_bound(t.begin(), t.end(), age,
                               [](double a, const ReferencePoint& p) { return a < p.age_months; });
    auto lo = hi - 1;
    double f = (age - lo->age_months) / (hi->age_months - lo->age_months);
    return lo->sd_months + f * (hi->sd_months - lo->sd_months);
}

double z_score(double bone_age, double chronological_age, bool male) {
    return (bone_age - chronological_age) / reference_sd_months(chronological_age, male);
}

std::string interpret_z_score(double z) {
    if (z < kDelayedBelowZ) return "delayed";
    if (z > kAdvancedAboveZ) return "advanced";
    return "normal";
}

AgeAssessment assess_bone_age(double bone_age, std::optional<double> chronological_age,
                              std::optional<bool> male) {
    AgeAssessment a;
    if (!chronological_age) return a;
    // The girls' and boys' spreads differ by up to 4 months at the same age: no neutral SD.
    if (!male) {
        a.note = "sex not given: the reference SD differs by sex";
        return a;
    }
    a.reference_sd_months = reference_sd_months(*chronological_age, *male);
    a.z_score = (bone_age - *chronological_age) / *a.reference_sd_months;
    a.interpretation = interpret_z_score(*a.z_score);
    const std::vector<ReferencePoint>& t = reference_sd_table(*male);
    if (*chronological_age < t.front().age_months || *chronological_age > t.back().age_months)
        a.note = fmt::format(
            "chronological age {:.1f} months lies outside the reference table ({} to {} "
            "years); the SD at its nearest end is used",
            *chronological_age, years(t.front().age_months), years(t.back().age_months));
    return a;
}

}  // namespace boneage
