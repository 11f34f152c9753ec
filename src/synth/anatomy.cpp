#include "synth/anatomy.hpp"

#include <algorithm>
#include <cmath>

namespace boneage::synth {

namespace {

enum class EpiphysisEnd { None, Proximal, Distal };

// A tubular bone (radius, ulna, metacarpal, phalanx) in its slot between two joints.
struct Tubular {
    cv::Point2d from, to;      // proximal and distal joint (or cut end) of the slot
    double width = 0.0;        // nominal width, hand units
    BoneProfile profile;       // half widths as fractions of `width`
    EpiphysisEnd end = EpiphysisEnd::None;
    EpiphysisSchedule schedule;
    double zone = 0.0;         // epiphysis + growth plate, as a share of the bony length
    double epiphysis_power = 3.0;  // 2: round head, 3+: flat wafer
    bool cut_proximal = false;     // the forearm bones leave the picture: no joint there
    double cartilage_length = 0.0; // length the joint cartilage scales with (0: the slot's)
};

struct RayTable {
    cv::Point2d base;               // metacarpal base
    double angle;                   // metacarpal direction
    int bones;                      // 3 for the thumb (no middle phalanx), else 4
    std::array<double, 4> length;   // metacarpal, proximal, (middle), distal phalanx
    std::array<double, 4> width;
};

// Adult proportions of a left hand, thumb first.
const std::array<RayTable, 5> kRays{{
    {{0.100, -0.122}, 0.62, 3, {0.205, 0.145, 0.105, 0}, {0.062, 0.056, 0.047, 0}},
    {{0.055, -0.150}, 0.16, 4, {0.330, 0.200, 0.115, 0.085}, {0.052, 0.052, 0.045, 0.038}},
    {{0.012, -0.156}, 0.00, 4, {0.320, 0.225, 0.140, 0.090}, {0.054, 0.054, 0.047, 0.039}},
    {{-0.027, -0.150}, -0.15, 4, {0.295, 0.210, 0.130, 0.088}, {0.049, 0.049, 0.043, 0.036}},
    {{-0.064, -0.140}, -0.30, 4, {0.260, 0.165, 0.100, 0.080}, {0.045, 0.043, 0.037, 0.032}},
}};

struct CarpalTable {
    cv::Point2d centre;
    double rx, ry, angle;  // adult half axes and tilt
    double onset;          // boys' months when the ossification centre appears
    double power;
};

// The eight carpal bones, in the order they ossify.
const std::array<CarpalTable, 8> kCarpals{{
    {{0.010, -0.108}, 0.025, 0.040, 0.00, 2, 2.4},     // capitate
    {{-0.038, -0.113}, 0.024, 0.034, 0.15, 3, 2.4},    // hamate
    {{-0.040, -0.055}, 0.022, 0.019, 0.30, 30, 2.3},   // triquetrum
    {{0.010, -0.043}, 0.024, 0.021, 0.00, 48, 2.3},    // lunate
    {{0.086, -0.102}, 0.024, 0.021, 0.50, 66, 2.5},    // trapezium
    {{0.050, -0.122}, 0.018, 0.020, 0.20, 70, 2.5},    // trapezoid
    {{0.058, -0.052}, 0.037, 0.018, -0.90, 74, 2.2},   // scaphoid
    {{-0.053, -0.045}, 0.012, 0.011, 0.00, 114, 2.0},  // pisiform
}};

// Boys' months: appearance, start and end of fusion.
const EpiphysisSchedule kRadius{12, 186, 216};
const EpiphysisSchedule kUlna{80, 180, 210};
const EpiphysisSchedule kMetacarpal{20, 160, 192};
const EpiphysisSchedule kThumbMetacarpal{26, 160, 192};
const EpiphysisSchedule kProximalPhalanx{16, 160, 192};
const EpiphysisSchedule kMiddlePhalanx{26, 160, 192};
const EpiphysisSchedule kDistalPhalanx{22, 154, 186};
const double kSesamoidOnset = 150.0;

cv::Point2d unit(cv::Point2d v) { return v / std::hypot(v.x, v.y); }

// Cortex bright, marrow cavity darker: an outer outline plus a negative inner one.
void add_shell(HandModel& hand, Outline outer, Outline inner, double density, double marrow) {
    hand.bones.push_back({std::move(outer), density});
    hand.bones.push_back({std::move(inner), -marrow * density});
}

BoneProfile scaled(const BoneProfile& p, double width, double inset = 0.0) {
    return {std::max(1e-4, p.proximal * width - inset), std::max(1e-4, p.waist * width - inset),
            std::max(1e-4, p.distal * width - inset), p.roundness};
}

void add_tubular(HandModel& hand, const Tubular& t, const Maturity& m) {
    cv::Point2d u = unit(t.to - t.from);
    double length = std::hypot(t.to.x - t.from.x, t.to.y - t.from.y);
    double cartilage = (t.cartilage_length > 0 ? t.cartilage_length : length) *
                       (1.0 - m.ossified) / 2.0;
    cv::Point2d a = t.cut_proximal ? t.from : t.from + u * cartilage;
    cv::Point2d b = t.to - u * cartilage;
    double bony = std::hypot(b.x - a.x, b.y - a.y);
    double zone = t.zone * bony;

    EpiphysisState e;
    if (t.end != EpiphysisEnd::None) e = epiphysis_at(m.months, t.schedule);
    bool fused = e.present && e.gap <= 0.0;
    cv::Point2d s0 = a, s1 = b;
    if (!fused && t.end == EpiphysisEnd::Proximal) s0 = a + u * zone;
    if (!fused && t.end == EpiphysisEnd::Distal) s1 = b - u * zone;

    BoneProfile outer = scaled(t.profile, t.width);
    double cortex = 0.14 * t.width;
    BoneProfile inner = scaled(t.profile, t.width, cortex);
    add_shell(hand, long_outline(s0, s1, outer),
              long_outline(s0 + u * (1.5 * cortex), s1 - u * (1.5 * cortex), inner), m.density,
              0.55);

    if (!e.present) return;
    bool proximal = t.end == EpiphysisEnd::Proximal;
    double end_half = proximal ? outer.proximal : outer.distal;
    double angle = std::atan2(u.y, u.x);
    if (fused) {
        // The closed plate leaves a thin bright line for a while.
        if (e.scar > 0.0) {
            cv::Point2d c = proximal ? a + u * zone : b - u * zone;
            hand.bones.push_back(
                {blob_outline(c, 0.07 * zone + 1e-4, 0.85 * end_half, angle, 3.0),
                 0.35 * e.scar * m.density});
        }
        return;
    }
    double half_height = std::max(1e-4, e.height * zone / 2.0);
    double half_width = std::max(1e-4, e.width * end_half);
    cv::Point2d c = proximal ? a + u * half_height : b - u * half_height;
    add_shell(hand, blob_outline(c, half_height, half_width, angle, t.epiphysis_power),
              blob_outline(c, 0.55 * half_height, 0.75 * half_width, angle, t.epiphysis_power),
              0.92 * m.density, 0.35);
}

void add_carpals(HandModel& hand, const Maturity& m, const HandShape& shape) {
    for (const CarpalTable& c : kCarpals) {
        double size = carpal_size(m.months, c.onset) * shape.bone_width;
        if (size <= 0.0) continue;
        // A fresh centre is a round nodule; it takes its adult shape as it grows.
        double round = std::sqrt(c.rx * c.ry);
        double shaped = std::min(1.0, size);
        double rx = size * (round + (c.rx - round) * shaped);
        double ry = size * (round + (c.ry - round) * shaped);
        double power = 2.0 + (c.power - 2.0) * shaped;
        double rim = 0.22 * std::min(rx, ry);
        add_shell(hand, blob_outline(c.centre, rx, ry, c.angle, power),
                  blob_outline(c.centre, rx - rim, ry - rim, c.angle, power), 0.95 * m.density,
                  0.3);
    }
}

void add_forearm(HandModel& hand, const Maturity& m, const HandShape& shape, double bone_width,
                 double margin) {
    double end = shape.forearm;
    Tubular radius;
    radius.from = {0.040, end - 0.03};
    radius.to = {0.040, -0.008};
    radius.width = 0.11 * bone_width;
    radius.profile = {0.32, 0.32, 0.5, 0.35};
    radius.end = EpiphysisEnd::Distal;
    radius.schedule = kRadius;
    radius.zone = 0.055 / (end - 0.02);
    radius.cut_proximal = true;
    radius.cartilage_length = 0.2;
    add_tubular(hand, radius, m);

    Tubular ulna = radius;
    ulna.from = {-0.052, end - 0.03};
    ulna.to = {-0.052, 0.012};
    ulna.width = 0.056 * bone_width;
    ulna.profile = {0.4, 0.38, 0.5, 0.5};
    ulna.schedule = kUlna;
    ulna.zone = 0.045 / (end - 0.04);
    ulna.epiphysis_power = 2.4;
    add_tubular(hand, ulna, m);

    hand.tissue.push_back(
        {long_outline({0.006, end}, {0.006, -0.05},
                      {0.112 + margin, 0.1 + margin, 0.098 + margin, 0.25}),
         0.88});
}

// The sesamoid bone beside the thumb's metacarpal head ossifies at the start of puberty.
void add_sesamoid(HandModel& hand, const std::vector<cv::Point2d>& thumb, const Maturity& m,
                  double bone_width) {
    double size = carpal_size(m.months, kSesamoidOnset);
    if (size <= 0.0) return;
    cv::Point2d u = unit(thumb[1] - thumb[0]);
    cv::Point2d towards_fingers(u.y, -u.x);
    cv::Point2d c = thumb[1] - u * 0.012 + towards_fingers * (0.02 * bone_width);
    double r = 0.011 * size;
    add_shell(hand, blob_outline(c, r, 0.85 * r, 0.0), blob_outline(c, 0.7 * r, 0.6 * r, 0.0),
              0.9 * m.density, 0.3);
}

// Metacarpal and phalanges of one ray; returns the joints from the metacarpal base to the
// fingertip so the soft tissue can follow them.
std::vector<cv::Point2d> add_ray(HandModel& hand, int index, const Maturity& m,
                                 const HandShape& shape, double bone_width) {
    const RayTable& r = kRays[index];
    bool thumb = index == 0;
    double mc_angle = thumb ? r.angle + 0.25 * (shape.spread - 1.5)
                            : r.angle * (1.0 + 0.2 * (shape.spread - 1.0));
    double finger_angle = (thumb ? mc_angle - 0.12 : r.angle * shape.spread) + shape.finger_bend[index];

    std::vector<cv::Point2d> joints{r.base};
    for (int k = 0; k < r.bones; ++k) {
        double angle = k == 0 ? mc_angle : finger_angle;
        joints.push_back(joints.back() + ray_direction(angle) * (r.length[k] * shape.finger_length[index]));
    }
    for (int k = 0; k < r.bones; ++k) {
        Tubular t;
        t.from = joints[k];
        t.to = joints[k + 1];
        t.width = r.width[k] * bone_width;
        bool distal_phalanx = k == r.bones - 1;
        if (k == 0 && thumb) {
            t.profile = {0.5, 0.36, 0.5, 0.5};
            t.end = EpiphysisEnd::Proximal;
            t.schedule = kThumbMetacarpal;
            t.zone = 0.16;
        } else if (k == 0) {
            t.profile = {0.42, 0.33, 0.44, 0.5};
            t.end = EpiphysisEnd::Distal;
            t.schedule = kMetacarpal;
            t.zone = 0.2;
            t.epiphysis_power = 2.2;
        } else if (distal_phalanx) {
            t.profile = {0.52, 0.30, 0.42, 0.8};
            t.end = EpiphysisEnd::Proximal;
            t.schedule = kDistalPhalanx;
            t.zone = 0.22;
        } else {
            t.profile = k == 1 ? BoneProfile{0.56, 0.36, 0.46, 0.45} : BoneProfile{0.54, 0.36, 0.44, 0.45};
            t.end = EpiphysisEnd::Proximal;
            t.schedule = k == 1 ? kProximalPhalanx : kMiddlePhalanx;
            t.zone = 0.17;
        }
        add_tubular(hand, t, m);
    }
    if (thumb) add_sesamoid(hand, joints, m, bone_width);
    return joints;
}

}  // namespace

HandModel build_hand(const Maturity& m, const HandShape& shape) {
    HandModel hand;
    double bone_width = m.bone_width * shape.bone_width;
    double margin = 0.012 * m.tissue_ratio * shape.tissue;

    std::array<std::vector<cv::Point2d>, 5> joints;
    for (int i = 0; i < 5; ++i) joints[i] = add_ray(hand, i, m, shape, bone_width);
    add_carpals(hand, m, shape);

    // Soft tissue, thinnest first: a later outline covers an earlier one.
    std::vector<cv::Point2d> palm{{-0.095 - margin, -0.09}, {-0.088 - margin, 0.0},
                                  {0.100 + margin, 0.0}, {0.108 + margin, -0.07},
                                  {-0.118 - margin, -0.22}};
    for (int i = 0; i < 5; ++i) {
        const auto& j = joints[i];
        cv::Point2d u = unit(j.back() - j[1]);
        double half = 0.5 * m.tissue_ratio * shape.tissue * kRays[i].width[1] * bone_width;
        cv::Point2d tip = j.back() + u * (0.022 + 0.3 * half);
        cv::Point2d root = i == 0 ? (j[0] + j[1]) / 2 : j[1] - u * 0.03;
        hand.tissue.push_back({long_outline(root, tip, {half, 0.93 * half, 0.8 * half, 0.9}),
                               i == 0 ? 0.6 : 0.55});
        if (i == 0) continue;
        cv::Point2d n(-u.y, u.x);
        palm.push_back(j[1] + n * half);
        palm.push_back(j[1] - n * half);
    }
    // The web between thumb and index finger, then the palm and the thenar eminence.
    cv::Point2d index_mid = joints[1][0] + (joints[1][1] - joints[1][0]) * 0.55;
    hand.tissue.push_back({hull_outline({joints[0][0], joints[0][1], index_mid,
                                         joints[0][1] + (index_mid - joints[0][1]) * 0.2 +
                                             cv::Point2d(0, -0.03)}),
                           0.62});
    hand.tissue.push_back({hull_outline(palm), 0.8});
    double thenar = 0.055 + margin;
    hand.tissue.push_back({long_outline({0.055, -0.03}, joints[0][1],
                                        {thenar, 0.95 * thenar, 0.6 * thenar, 0.8}),
                           0.85});
    add_forearm(hand, m, shape, bone_width, margin);
    return hand;
}

}  // namespace boneage::synth
