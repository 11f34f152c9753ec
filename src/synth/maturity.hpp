// How a hand matures: the schedules that turn age and sex into sizes, ossification centres
// and growth plates. Girls mature about 12% faster, so everything runs on a maturity clock
// in boys' months.
#pragma once

namespace boneage::synth {

// Skeletal maturity in boys' months: age for boys, age x 1.12 for girls, within [0, 240].
double maturity_months(double age_months, bool male);

// The state of the whole hand at one maturity.
struct Maturity {
    double months = 0.0;        // maturity clock (boys' months)
    double size = 0.0;          // hand length as a fraction of the adult's, 0.64 .. 1
    double ossified = 0.0;      // share of each bone's slot that is bone, not cartilage
    double density = 0.0;       // brightness of bone relative to an adult's
    double bone_width = 0.0;    // shaft widths relative to an adult's, in hand units
    double tissue_ratio = 0.0;  // finger soft-tissue width over its bone width
};

Maturity maturity_at(double age_months, bool male);

// When an epiphysis (secondary ossification centre) appears and when its growth plate closes,
// in boys' months.
struct EpiphysisSchedule {
    double onset = 0.0;
    double fusion_start = 0.0;  // the growth plate starts to narrow
    double fusion_end = 0.0;    // the plate is closed
};

// An epiphysis at one maturity, relative to its zone at the end of the shaft (the space that
// epiphysis and growth plate share, `zone` long).
struct EpiphysisState {
    bool present = false;
    double width = 0.0;   // width over the width of the shaft end
    double height = 0.0;  // along the bone, as a fraction of the zone
    double gap = 0.0;     // dark growth plate between shaft and epiphysis, fraction of the zone
    double scar = 0.0;    // faint bright line left where the plate closed, 0..1
};

EpiphysisState epiphysis_at(double months, const EpiphysisSchedule& schedule);

// A carpal bone's size as a fraction of its adult size: 0 before it appears (at `onset`),
// then growing to 1 over about eight years.
double carpal_size(double months, double onset);

}  // namespace boneage::synth
