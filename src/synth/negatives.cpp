// The negatives of the hand gate. Each kind is drawn with OpenCV's primitives on a canvas of
// random size; radiograph-like kinds (blank films, other body parts) get the blur and grain
// of a film, so the gate cannot tell them from hands by texture alone.
#include <algorithm>
#include <boneage/error.hpp>
#include <boneage/negatives.hpp>
#include <boneage/splitmix.hpp>
#include <cmath>
#include <opencv2/imgproc.hpp>
#include <random>
#include <vector>

namespace boneage {

namespace {

using Rng = std::mt19937_64;

double uniform(Rng& rng, double lo, double hi) {
    return std::uniform_real_distribution<double>(lo, hi)(rng);
}

int between(Rng& rng, int lo, int hi) { return std::uniform_int_distribution<int>(lo, hi)(rng); }

bool chance(Rng& rng, double p) { return uniform(rng, 0.0, 1.0) < p; }

// OpenCV's fills draw from a generator seeded from ours, never from its global one, so that the
// same seed gives the same image on any thread.
void fill_normal(cv::Mat& m, Rng& rng, double mean, double sigma) {
    cv::RNG cv_rng(rng());
    cv_rng.fill(m, cv::RNG::NORMAL, mean, sigma);
}

void fill_uniform(cv::Mat& m, Rng& rng, double lo, double hi) {
    cv::RNG cv_rng(rng());
    cv_rng.fill(m, cv::RNG::UNIFORM, lo, hi);
}

cv::Size random_size(Rng& rng, int lo = 200, int hi = 900) {
    return {between(rng, lo, hi), between(rng, lo, hi)};
}

cv::Scalar random_colour(Rng& rng) {
    return cv::Scalar(between(rng, 0, 255), between(rng, 0, 255), between(rng, 0, 255));
}

// A film's blur and grain on a float canvas of grey levels, then 8 bits.
cv::Mat as_film(cv::Mat canvas, Rng& rng, double max_blur = 2.5, double max_grain = 6.0) {
    const double blur = uniform(rng, 0.0, max_blur) * std::min(canvas.cols, canvas.rows) / 400.0;
    if (blur > 0.3) cv::GaussianBlur(canvas, canvas, cv::Size(), blur);
    cv::Mat grain(canvas.size(), CV_32F);
    fill_normal(grain, rng, 0.0, uniform(rng, 0.0, max_grain));
    canvas += grain;
    cv::Mat out;
    canvas.convertTo(out, CV_8U);  // saturates at 0 and 255
    return out;
}

void put_random_text(cv::Mat& image, Rng& rng, cv::Point at, double scale, cv::Scalar colour,
                     int letters) {
    static const int fonts[] = {cv::FONT_HERSHEY_SIMPLEX, cv::FONT_HERSHEY_PLAIN,
                                cv::FONT_HERSHEY_DUPLEX, cv::FONT_HERSHEY_COMPLEX,
                                cv::FONT_HERSHEY_TRIPLEX};
    std::string text;
    for (int i = 0; i < letters; ++i)
        text += chance(rng, 0.18)
                    ? ' '
                    : static_cast<char>(between(rng, 0, 1) ? 'a' + between(rng, 0, 25)
                                                           : 'A' + between(rng, 0, 25));
    cv::putText(image, text, at, fonts[between(rng, 0, 4)], scale, colour,
                std::max(1, static_cast<int>(scale * uniform(rng, 0.8, 2.2))), cv::LINE_AA);
}

cv::Mat grey_or_colour(const cv::Mat& bgr, Rng& rng) {
    if (chance(rng, 0.5)) return bgr;
    cv::Mat grey;
    cv::cvtColor(bgr, grey, cv::COLOR_BGR2GRAY);
    return grey;
}

cv::Mat blank(Rng& rng) {
    const cv::Size size = random_size(rng);
    cv::Mat canvas(size, CV_32F, cv::Scalar(uniform(rng, 0, 255)));
    const int style = between(rng, 0, 2);
    if (style > 0) {
        const double slope = uniform(rng, -120, 120), angle = uniform(rng, 0, CV_2PI);
        const cv::Point2f c(size.width / 2.0f, size.height / 2.0f);
        const double radius = std::hypot(c.x, c.y);
        for (int y = 0; y < size.height; ++y)
            for (int x = 0; x < size.width; ++x) {
                const double dx = (x - c.x) / radius, dy = (y - c.y) / radius;
                canvas.at<float>(y, x) += static_cast<float>(
                    style == 1 ? slope * (dx * std::cos(angle) + dy * std::sin(angle))
                               : -std::abs(slope) * (dx * dx + dy * dy));
            }
    }
    // An exposure with nothing on it but the technologist's lead letter.
    if (chance(rng, 0.3)) {
        const double scale = uniform(rng, 1.0, 3.0) * size.width / 500.0;
        cv::putText(canvas, chance(rng, 0.5) ? "L" : "R",
                    cv::Point(between(rng, 0, size.width * 3 / 4),
                              between(rng, size.height / 5, size.height)),
                    cv::FONT_HERSHEY_SIMPLEX, scale, cv::Scalar(255), std::max(2, int(scale * 3)));
    }
    // A collimated border: the unexposed film edge.
    if (chance(rng, 0.25)) {
        const int b = between(rng, 4, std::min(size.width, size.height) / 6);
        cv::rectangle(canvas, cv::Rect(0, 0, size.width, size.height),
                      cv::Scalar(uniform(rng, 0, 40)), b);
    }
    return as_film(canvas, rng, 2.0, 4.0);
}

cv::Mat noise(Rng& rng) {
    const cv::Size size = random_size(rng);
    cv::Mat canvas(size, CV_32F);
    switch (between(rng, 0, 3)) {
        case 0: {
            const double mean = uniform(rng, 60, 200), sigma = uniform(rng, 10, 80);
            fill_normal(canvas, rng, mean, sigma);
            break;
        }
        case 1:
            fill_uniform(canvas, rng, 0.0, 255.0);
            break;
        case 2: {
            canvas.setTo(uniform(rng, 0, 255));
            const double density = uniform(rng, 0.05, 0.5);
            cv::Mat u(size, CV_32F);
            fill_uniform(u, rng, 0.0, 1.0);
            canvas.setTo(0.0, u < density / 2);
            canvas.setTo(255.0, u > 1.0 - density / 2);
            break;
        }
        default: {  // clouds: coarse noise blown up, stretched over the grey range
            const int cell = between(rng, 3, 60);
            cv::Mat coarse(std::max(2, size.height / cell), std::max(2, size.width / cell), CV_32F);
            fill_normal(coarse, rng, 0.0, 1.0);
            cv::resize(coarse, canvas, size, 0, 0, cv::INTER_CUBIC);
            cv::normalize(canvas, canvas, uniform(rng, 0, 80), uniform(rng, 150, 255),
                          cv::NORM_MINMAX);
        }
    }
    cv::Mat out;
    canvas.convertTo(out, CV_8U);
    return out;
}

void rounded_box(cv::Mat& image, cv::Rect r, int radius, const cv::Scalar& colour) {
    radius = std::max(1, std::min(radius, std::min(r.width, r.height) / 2));
    cv::rectangle(image, cv::Rect(r.x + radius, r.y, r.width - 2 * radius, r.height), colour,
                  cv::FILLED);
    cv::rectangle(image, cv::Rect(r.x, r.y + radius, r.width, r.height - 2 * radius), colour,
                  cv::FILLED);
    for (cv::Point c :
         {cv::Point(r.x + radius, r.y + radius), cv::Point(r.br().x - radius, r.y + radius),
          cv::Point(r.x + radius, r.br().y - radius),
          cv::Point(r.br().x - radius, r.br().y - radius)})
        cv::circle(image, c, radius, colour, cv::FILLED, cv::LINE_AA);
}

// A flat drawing on a dark or transparent (black) ground, as icons and clip art are: a few
// rounded panels in flat greys with small marks on them, no film grain.
cv::Mat flat_graphic(Rng& rng, cv::Size size) {
    cv::Mat art(size, CV_8UC3, cv::Scalar::all(chance(rng, 0.6) ? 0 : between(rng, 0, 60)));
    const int s = std::min(size.width, size.height);
    for (int i = between(rng, 1, 4); i > 0; --i) {
        const int w = between(rng, s / 4, s * 9 / 10), h = between(rng, s / 4, s * 9 / 10);
        const cv::Rect panel(between(rng, 0, size.width - w), between(rng, 0, size.height - h), w,
                             h);
        const int grey = between(rng, 60, 250);
        rounded_box(art, panel, between(rng, 0, s / 8), cv::Scalar::all(grey));
        for (int k = between(rng, 0, 12); k > 0; --k) {
            const cv::Point c(between(rng, panel.x, panel.br().x),
                              between(rng, panel.y, panel.br().y));
            const cv::Scalar mark =
                cv::Scalar::all(std::clamp(grey + between(rng, -120, 60), 0, 255));
            if (chance(rng, 0.5))
                cv::circle(art, c, between(rng, 2, std::max(3, s / 12)), mark, cv::FILLED,
                           cv::LINE_AA);
            else
                cv::line(art, c,
                         c + cv::Point(between(rng, -s / 3, s / 3), between(rng, -s / 3, s / 3)),
                         mark, between(rng, 1, std::max(2, s / 30)), cv::LINE_AA);
        }
    }
    if (chance(rng, 0.3)) cv::GaussianBlur(art, art, cv::Size(), uniform(rng, 0.5, 2.0));
    return art;
}

cv::Mat document(Rng& rng) {
    const cv::Size size = random_size(rng, 240, 1024);
    if (chance(rng, 0.3)) return grey_or_colour(flat_graphic(rng, size), rng);
    const bool dark = chance(rng, 0.25);
    const cv::Scalar paper = chance(rng, 0.3) ? random_colour(rng)
                             : dark           ? cv::Scalar::all(between(rng, 10, 70))
                                              : cv::Scalar::all(between(rng, 215, 255));
    cv::Mat page(size, CV_8UC3, paper);
    for (int i = between(rng, 0, 4); i > 0; --i) {
        const cv::Point c(between(rng, 0, size.width), between(rng, 0, size.height));
        const int r = between(rng, 10, std::min(size.width, size.height) / 3);
        if (chance(rng, 0.6))
            cv::circle(page, c, r, random_colour(rng), cv::FILLED, cv::LINE_AA);
        else
            cv::rectangle(page, cv::Rect(c.x - r, c.y - r / 2, 2 * r, r), random_colour(rng),
                          cv::FILLED);
    }
    const double scale = uniform(rng, 0.4, 1.6) * size.width / 600.0;
    const int line = std::max(8, static_cast<int>(32 * scale));
    const cv::Scalar ink =
        dark ? cv::Scalar::all(between(rng, 200, 255)) : cv::Scalar::all(between(rng, 0, 60));
    for (int y = between(rng, line, 3 * line); y < size.height - 4; y += line)
        if (chance(rng, 0.85))
            put_random_text(page, rng, {between(rng, 4, size.width / 8), y}, scale,
                            chance(rng, 0.15) ? random_colour(rng) : ink, between(rng, 8, 60));
    return grey_or_colour(page, rng);
}

cv::Mat chart(Rng& rng) {
    const cv::Size size = random_size(rng, 300, 1024);
    const bool dark = chance(rng, 0.2);
    cv::Mat plot(size, CV_8UC3,
                 cv::Scalar::all(dark ? between(rng, 0, 40) : between(rng, 225, 255)));
    const cv::Scalar ink = cv::Scalar::all(dark ? 230 : 20);
    const cv::Rect area(size.width / 8, size.height / 10, size.width * 3 / 4, size.height * 3 / 4);
    const int grid = between(rng, 10, 40);
    for (int x = area.x; x <= area.br().x; x += area.width / grid)
        cv::line(plot, {x, area.y}, {x, area.br().y}, cv::Scalar::all(dark ? 70 : 190), 1);
    for (int y = area.y; y <= area.br().y; y += area.height / grid)
        cv::line(plot, {area.x, y}, {area.br().x, y}, cv::Scalar::all(dark ? 70 : 190), 1);
    cv::line(plot, {area.x, area.y}, {area.x, area.br().y}, ink, 2);
    cv::line(plot, {area.x, area.br().y}, {area.br().x, area.br().y}, ink, 2);
    // Growth-chart-like centiles: rising, flattening curves one above the other.
    const int curves = between(rng, 2, 9);
    const double power = uniform(rng, 0.4, 1.2);
    const bool colour = chance(rng, 0.5);
    for (int k = 0; k < curves; ++k) {
        std::vector<cv::Point> points;
        const double lift = (k + 1.0) / (curves + 1.0);
        for (int x = 0; x <= 50; ++x) {
            const double t = x / 50.0;
            const double v =
                std::clamp(0.1 + 0.8 * lift * std::pow(t, power) + 0.1 * lift, 0.0, 1.0);
            points.emplace_back(area.x + static_cast<int>(t * area.width),
                                area.br().y - static_cast<int>(v * area.height));
        }
        cv::polylines(plot, points, false, colour ? random_colour(rng) : ink, between(rng, 1, 3),
                      cv::LINE_AA);
    }
    const double scale = 0.35 * size.width / 400.0;
    for (int x = area.x; x <= area.br().x; x += area.width / 6)
        cv::putText(plot, std::to_string(between(rng, 0, 20)), {x, area.br().y + 20},
                    cv::FONT_HERSHEY_SIMPLEX, scale, ink, 1, cv::LINE_AA);
    put_random_text(plot, rng, {area.x, std::max(12, area.y - 8)}, scale * 1.4, ink,
                    between(rng, 10, 30));
    return grey_or_colour(plot, rng);
}

// The extent of the tissue on a radiograph: the largest bright region above Otsu's threshold.
// Close-ups are sized against it, not against the frame, so that a small hand on a large film
// still yields parts of a hand and never the whole of it.
cv::Rect tissue_extent(const cv::Mat& smooth) {
    cv::Mat mask;
    cv::threshold(smooth, mask, 0, 255, cv::THRESH_BINARY | cv::THRESH_OTSU);
    cv::morphologyEx(mask, mask, cv::MORPH_OPEN,
                     cv::getStructuringElement(cv::MORPH_ELLIPSE, {5, 5}));
    cv::Mat labels, stats, centroids;
    const int n = cv::connectedComponentsWithStats(mask, labels, stats, centroids);
    int best = 0;
    for (int i = 1; i < n; ++i)
        if (best == 0 || stats.at<int>(i, cv::CC_STAT_AREA) > stats.at<int>(best, cv::CC_STAT_AREA))
            best = i;
    if (best == 0) return cv::Rect(0, 0, smooth.cols, smooth.rows);
    return cv::Rect(stats.at<int>(best, cv::CC_STAT_LEFT), stats.at<int>(best, cv::CC_STAT_TOP),
                    stats.at<int>(best, cv::CC_STAT_WIDTH),
                    stats.at<int>(best, cv::CC_STAT_HEIGHT));
}

cv::Mat partial_hand(Rng& rng, const cv::Mat& source) {
    if (source.empty() || source.type() != CV_8UC1 || std::min(source.cols, source.rows) < 64)
        throw UsageError(
            "a close-up of part of a hand needs an 8-bit grey radiograph of at least "
            "64 pixels a side to cut from");
    cv::Mat smooth;
    cv::blur(source, smooth, cv::Size(5, 5));
    const cv::Rect tissue = tissue_extent(smooth);
    const double area = uniform(rng, 0.03, 0.30) * tissue.area();
    const double aspect = std::exp(uniform(rng, std::log(0.5), std::log(2.0)));
    const int w = std::clamp(static_cast<int>(std::sqrt(area * aspect)), 24, source.cols);
    const int h = std::clamp(static_cast<int>(area / w), 24, source.rows);
    // Centre the window on tissue: a pixel inside its extent brighter than most of the film.
    std::vector<std::uint8_t> values(smooth.begin<std::uint8_t>(), smooth.end<std::uint8_t>());
    std::nth_element(values.begin(), values.begin() + values.size() * 3 / 4, values.end());
    const std::uint8_t bright = values[values.size() * 3 / 4];
    auto inside = [&] {
        return cv::Point(between(rng, tissue.x, tissue.br().x - 1),
                         between(rng, tissue.y, tissue.br().y - 1));
    };
    cv::Point centre = inside();
    for (int tries = 0; tries < 50 && smooth.at<std::uint8_t>(centre) < bright; ++tries)
        centre = inside();
    const int x = std::clamp(centre.x - w / 2, 0, source.cols - w);
    const int y = std::clamp(centre.y - h / 2, 0, source.rows - h);
    cv::Mat crop = source(cv::Rect(x, y, w, h));
    const double longer = between(rng, 256, 800);
    const double scale = longer / std::max(w, h);
    cv::Mat out;
    cv::resize(crop, out, cv::Size(), scale, scale, scale < 1 ? cv::INTER_AREA : cv::INTER_CUBIC);
    return out;
}

// A long bone in its soft tissue between two points: the tissue band, the cortex, the marrow.
void draw_long_bone(cv::Mat& canvas, cv::Point a, cv::Point b, int tissue, int bone, Rng& rng) {
    if (tissue > 0) cv::line(canvas, a, b, cv::Scalar(uniform(rng, 30, 70)), tissue, cv::LINE_AA);
    const int shaft = std::max(3, bone);
    cv::line(canvas, a, b, cv::Scalar(uniform(rng, 110, 170)), shaft, cv::LINE_AA);
    cv::line(canvas, a, b, cv::Scalar(uniform(rng, 70, 110)), std::max(1, shaft / 2), cv::LINE_AA);
}

cv::Mat other_body_part(Rng& rng) {
    const cv::Size size = random_size(rng, 300, 900);
    const double s = std::min(size.width, size.height);
    cv::Mat canvas(size, CV_32F, cv::Scalar(uniform(rng, 5, 50)));
    const cv::Point c(size.width / 2 + between(rng, -int(s / 8), int(s / 8)),
                      size.height / 2 + between(rng, -int(s / 8), int(s / 8)));
    switch (between(rng, 0, 3)) {
        case 0: {  // a forearm or a leg: one or two long bones across the frame
            const double angle = uniform(rng, -0.5, 0.5) + (chance(rng, 0.5) ? CV_PI / 2 : 0.0);
            const cv::Point d(static_cast<int>(std::cos(angle) * s),
                              static_cast<int>(std::sin(angle) * s));
            const int tissue = static_cast<int>(uniform(rng, 0.25, 0.45) * s);
            const int bones = between(rng, 1, 2);
            const cv::Point across(static_cast<int>(-std::sin(angle) * s * 0.08),
                                   static_cast<int>(std::cos(angle) * s * 0.08));
            cv::line(canvas, c - d, c + d, cv::Scalar(uniform(rng, 30, 70)), tissue, cv::LINE_AA);
            for (int k = 0; k < bones; ++k) {
                const cv::Point off = bones == 2 ? (k ? across : -across) : cv::Point();
                draw_long_bone(canvas, c - d + off, c + d + off, 0,
                               static_cast<int>(uniform(rng, 0.05, 0.1) * s), rng);
            }
            if (chance(rng, 0.5))  // a joint end in the frame
                cv::ellipse(canvas, c + d / 3, cv::Size(int(s * 0.12), int(s * 0.09)),
                            angle * 180 / CV_PI, 0, 360, cv::Scalar(uniform(rng, 120, 170)),
                            cv::FILLED, cv::LINE_AA);
            break;
        }
        case 1: {  // a chest: torso, dark lungs, ribs, spine
            cv::ellipse(canvas, c, cv::Size(int(s * 0.45), int(s * 0.48)), 0, 0, 360,
                        cv::Scalar(uniform(rng, 70, 110)), cv::FILLED, cv::LINE_AA);
            for (int side : {-1, 1}) {
                const cv::Point lung = c + cv::Point(side * int(s * 0.2), -int(s * 0.02));
                cv::ellipse(canvas, lung, cv::Size(int(s * 0.15), int(s * 0.33)), 0, 0, 360,
                            cv::Scalar(uniform(rng, 20, 50)), cv::FILLED, cv::LINE_AA);
                for (int r = 0; r < between(rng, 7, 11); ++r)
                    cv::ellipse(canvas, c + cv::Point(0, int(-s * 0.3 + r * s * 0.06)),
                                cv::Size(int(s * 0.33), int(s * 0.12)), 0, side < 0 ? 180 : 270,
                                side < 0 ? 270 : 360, cv::Scalar(uniform(rng, 120, 170)), 3,
                                cv::LINE_AA);
            }
            cv::line(canvas, c - cv::Point(0, int(s * 0.45)), c + cv::Point(0, int(s * 0.45)),
                     cv::Scalar(uniform(rng, 130, 180)), std::max(4, int(s * 0.05)), cv::LINE_AA);
            break;
        }
        case 2: {  // a skull: a thick bright vault, dark orbits, a jaw
            const cv::Size head(int(s * uniform(rng, 0.32, 0.42)),
                                int(s * uniform(rng, 0.36, 0.46)));
            cv::ellipse(canvas, c, head, 0, 0, 360, cv::Scalar(uniform(rng, 60, 90)), cv::FILLED,
                        cv::LINE_AA);
            cv::ellipse(canvas, c, head, 0, 0, 360, cv::Scalar(uniform(rng, 150, 200)),
                        std::max(4, int(s * 0.04)), cv::LINE_AA);
            for (int side : {-1, 1})
                cv::circle(canvas, c + cv::Point(side * head.width / 3, head.height / 6),
                           int(s * 0.06), cv::Scalar(uniform(rng, 30, 55)), cv::FILLED,
                           cv::LINE_AA);
            cv::ellipse(canvas, c + cv::Point(0, head.height / 2),
                        cv::Size(head.width * 2 / 3, head.height / 2), 0, 20, 160,
                        cv::Scalar(uniform(rng, 140, 190)), std::max(4, int(s * 0.035)),
                        cv::LINE_AA);
            break;
        }
        default: {  // a knee: two long bones meeting, wide ends, a kneecap
            const int bone = static_cast<int>(uniform(rng, 0.1, 0.16) * s);
            const cv::Point up(0, int(s * 0.6)), gap(0, int(s * 0.03));
            cv::line(canvas, c - up, c + up, cv::Scalar(uniform(rng, 40, 70)), int(s * 0.5),
                     cv::LINE_AA);
            draw_long_bone(canvas, c - up, c - gap, 0, bone, rng);
            draw_long_bone(canvas, c + gap, c + up, 0, bone, rng);
            cv::ellipse(canvas, c - gap * 2, cv::Size(int(bone * 1.6), bone / 2), 0, 0, 360,
                        cv::Scalar(uniform(rng, 120, 170)), cv::FILLED, cv::LINE_AA);
            cv::ellipse(canvas, c + gap * 2, cv::Size(int(bone * 1.5), bone / 2), 0, 0, 360,
                        cv::Scalar(uniform(rng, 120, 170)), cv::FILLED, cv::LINE_AA);
            cv::circle(canvas, c + cv::Point(int(bone * 0.9), -int(s * 0.05)), bone / 2,
                       cv::Scalar(uniform(rng, 120, 170)), cv::FILLED, cv::LINE_AA);
        }
    }
    // Rotated as films are; the corners filled with the background.
    const cv::Mat turn = cv::getRotationMatrix2D(cv::Point2f(c), uniform(rng, -30, 30), 1.0);
    cv::warpAffine(canvas, canvas, turn, size, cv::INTER_LINEAR, cv::BORDER_REPLICATE);
    return as_film(canvas, rng, 3.0, 6.0);
}

}  // namespace

std::string to_string(NegativeKind kind) {
    switch (kind) {
        case NegativeKind::Blank:
            return "blank";
        case NegativeKind::Noise:
            return "noise";
        case NegativeKind::Document:
            return "document";
        case NegativeKind::Chart:
            return "chart";
        case NegativeKind::PartialHand:
            return "partial-hand";
        case NegativeKind::OtherBodyPart:
            return "other-body-part";
    }
    return "unknown";
}

std::optional<NegativeKind> parse_negative_kind(const std::string& name) {
    for (NegativeKind k : kNegativeKinds)
        if (to_string(k) == name) return k;
    return std::nullopt;
}

cv::Mat make_negative(NegativeKind kind, std::uint64_t seed, const cv::Mat& source) {
    Rng rng(splitmix64(seed * 8 + static_cast<std::uint64_t>(kind)));
    switch (kind) {
        case NegativeKind::Blank:
            return blank(rng);
        case NegativeKind::Noise:
            return noise(rng);
        case NegativeKind::Document:
            return document(rng);
        case NegativeKind::Chart:
            return chart(rng);
        case NegativeKind::PartialHand:
            return partial_hand(rng, source);
        case NegativeKind::OtherBodyPart:
            return other_body_part(rng);
    }
    throw Error(ErrorKind::Internal, "unknown kind of negative");
}

}  // namespace boneage
