#include "synth/maturity.hpp"

#include <algorithm>
#include <array>
#include <cmath>
#include <utility>

namespace boneage::synth {

namespace {
double clamp01(double v) { return std::clamp(v, 0.0, 1.0); }

double smoothstep(double lo, double hi, double x) {
    double t = clamp01((x - lo) / (hi - lo));
    return t * t * (3.0 - 2.0 * t);
}

// Hand length over the adult's, by maturity: fast in infancy, a pubertal spurt, then a plateau.
double growth_fraction(double m) {
    static const std::array<std::pair<double, double>, 9> knots{{{0, 0.0},
                                                                 {12, 0.16},
                                                                 {24, 0.28},
                                                                 {60, 0.48},
                                                                 {120, 0.70},
                                                                 {156, 0.84},
                                                                 {192, 0.96},
                                                                 {216, 0.995},
                                                                 {240, 1.0}}};
    if (m <= knots.front().first) return knots.front().second;
    for (std::size_t i = 1; i < knots.size(); ++i)
        if (m <= knots[i].first) {
            auto [x0, y0] = knots[i - 1];
            auto [x1, y1] = knots[i];
            return y0 + (y1 - y0) * (m - x0) / (x1 - x0);
        }
    return 1.0;
}
}  // namespace

double maturity_months(double age_months, bool male) {
    return std::clamp(age_months * (male ? 1.0 : 1.12), 0.0, 240.0);
}

Maturity maturity_at(double age_months, bool male) {
    Maturity s;
    s.months = maturity_months(age_months, male);
    double g = growth_fraction(s.months);
    // Women's hands end about 7% shorter; the difference opens with puberty.
    double sex_size = male ? 1.0 : 1.0 - 0.07 * smoothstep(130.0, 200.0, s.months);
    // From about 0.35 of the frame at birth to 0.55 in adults (before the scale nuisance).
    s.size = (0.35 + 0.20 * g) / 0.55 * sex_size;
    s.ossified = 0.62 + 0.33 * clamp01(s.months / 170.0);
    s.density = 0.55 + 0.45 * smoothstep(0.0, 190.0, s.months);
    s.bone_width = 0.68 + 0.32 * g;
    s.tissue_ratio = 2.5 - 0.7 * g;
    return s;
}

EpiphysisState epiphysis_at(double m, const EpiphysisSchedule& e) {
    EpiphysisState s;
    if (m < e.onset) return s;
    s.present = true;
    double stage = clamp01((m - e.onset) / 110.0);
    // A small round nodule that widens until it caps the whole shaft end.
    s.width = 0.30 + 0.68 * std::pow(stage, 0.8) + 0.06 * smoothstep(e.fusion_start - 30.0,
                                                                        e.fusion_start, m);
    double before_fusion = 0.22 + 0.43 * stage;
    double closing = smoothstep(e.fusion_start, e.fusion_end, m);
    s.height = before_fusion + (1.0 - before_fusion) * closing;
    s.gap = std::max(0.0, 1.0 - s.height);
    if (m >= e.fusion_end) {
        s.height = 1.0;
        s.gap = 0.0;
        s.scar = 1.0 - smoothstep(e.fusion_end, e.fusion_end + 30.0, m);
    }
    return s;
}

double carpal_size(double m, double onset) {
    if (m < onset) return 0.0;
    double t = clamp01((m - onset) / 96.0);
    return 0.22 + 0.78 * std::pow(t, 0.7);
}

}  // namespace boneage::synth
