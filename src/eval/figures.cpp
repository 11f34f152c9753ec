#include "eval/figures.hpp"

#include "eval/gnuplot.hpp"

#include <boneage/durable_file.hpp>
#include <boneage/error.hpp>

#include <fmt/format.h>

#include <cmath>
#include <fstream>
#include <sstream>

namespace boneage::figures {

namespace {

const char* kPalette[] = {"#4477aa", "#ee6677", "#228833", "#ccbb44", "#66ccee", "#aa3377"};

void write_file(const std::filesystem::path& file, const std::string& text) {
    write_file_atomically(file, text);
}

// The terminal line and common settings every figure opens with.
std::string preamble(const std::filesystem::path& png, int width, int height) {
    return fmt::format(
        "set terminal {} size {},{} font 'Sans,11' noenhanced\n"
        "set output {}\n"
        "set encoding utf8\n"
        "set grid ytics lc rgb '#dddddd'\n"
        "set border 3\nset tics nomirror\n",
        gnuplot::png_terminal(), width, height, gnuplot::quote(png));
}

// A label fit for a gnuplot data file: double-quoted, no inner quotes.
std::string data_label(std::string text) {
    for (char& c : text)
        if (c == '"') c = '\'';
    return "\"" + text + "\"";
}

std::string number(double v) { return std::isfinite(v) ? fmt::format("{:.6g}", v) : "NaN"; }

double field(const nlohmann::json& row, const char* key) {
    auto it = row.find(key);
    return it != row.end() && it->is_number() ? it->get<double>() : NAN;
}

}  // namespace

void metrics_chart(const std::vector<Evaluation>& evals, const std::vector<std::string>& labels,
                   const std::filesystem::path& work, const std::filesystem::path& png) {
    std::ostringstream data;
    data << "# model mae rmse msle\n";
    for (std::size_t i = 0; i < evals.size(); ++i)
        data << data_label(labels[i]) << ' ' << number(evals[i].metrics.mae) << ' '
             << number(evals[i].metrics.rmse) << ' ' << number(evals[i].metrics.msle) << '\n';
    std::filesystem::path dat = work / "metrics.dat", gp = work / "metrics.gp";
    write_file(dat, data.str());

    const int width = std::max(900, 240 * int(evals.size()) * 3);
    std::string script = preamble(png, width, 440);
    script += fmt::format(
        "set multiplot layout 1,3 title 'Metrics on the evaluation set (n = {})'\n"
        "set style data histograms\nset style histogram clustered gap 1\n"
        "set style fill solid 0.85 border -1\nset boxwidth 0.8\nunset key\n"
        "set yrange [0:*]\nset offsets 0,0,graph 0.12,0\nset xtics rotate by -20\n",
        evals.empty() ? 0 : evals.front().metrics.n);
    const char* titles[] = {"MAE (months)", "RMSE (months)", "loss: MSLE"};
    const char* formats[] = {"%.2f", "%.2f", "%.4f"};
    for (int m = 0; m < 3; ++m) {
        int column = m + 2;
        script += fmt::format("set title '{}'\n", titles[m]);
        script += fmt::format(
            "plot {0} using {1}:xtic(1) lc rgb '{2}', '' using 0:{1}:(sprintf('{3}', ${1})) "
            "with labels offset 0,0.8 notitle\n",
            gnuplot::quote(dat), column, kPalette[m], formats[m]);
    }
    script += "unset multiplot\n";
    write_file(gp, script);
    gnuplot::run(gp, png);
}

bool training_curves(const Evaluation& eval, const std::string& label,
                     const std::filesystem::path& work, const std::filesystem::path& png) {
    if (!eval.history.is_array() || eval.history.empty()) return false;
    std::ostringstream data;
    data << "# epoch train_loss val_loss train_mae val_mae val_rmse\n";
    int epoch = 0;
    for (const nlohmann::json& row : eval.history) {
        ++epoch;
        double e = field(row, "epoch");
        data << number(std::isfinite(e) ? e : epoch) << ' ' << number(field(row, "train_loss"))
             << ' ' << number(field(row, "val_loss")) << ' ' << number(field(row, "train_mae"))
             << ' ' << number(field(row, "val_mae")) << ' ' << number(field(row, "val_rmse"))
             << '\n';
    }
    std::filesystem::path dat = work / ("training_" + label + ".dat");
    std::filesystem::path gp = work / ("training_" + label + ".gp");
    write_file(dat, data.str());
    std::string script = preamble(png, 1100, 480);
    std::string d = gnuplot::quote(dat);
    // The epoch whose weights the model file kept, when train recorded it.
    double best = field(eval.validation, "epoch");
    if (std::isfinite(best))
        script += fmt::format(
            "set arrow 1 from {0}, graph 0 to {0}, graph 1 nohead dt 3 lw 1.5 lc rgb '#888888'\n"
            "set label 1 'kept' at {0}, graph 0.04 offset 0.5,0 tc rgb '#666666'\n",
            best);
    script += fmt::format(
        "set multiplot layout 1,2 title {}\n"
        "set xlabel 'epoch'\nset key below maxrows 1 samplen 2\nset style data linespoints\n"
        "set title {}\nset logscale y\n"
        "plot {} using 1:2 title 'training' lw 2 pt 7 ps 0.6 lc rgb '{}', "
        "'' using 1:3 title 'validation' lw 2 pt 7 ps 0.6 lc rgb '{}'\n"
        "unset logscale y\nset title 'MAE and RMSE (months)'\nset yrange [0:*]\n"
        "plot {} using 1:4 title 'training MAE' lw 2 pt 7 ps 0.6 lc rgb '{}', "
        "'' using 1:5 title 'validation MAE' lw 2 pt 7 ps 0.6 lc rgb '{}', "
        "'' using 1:6 title 'validation RMSE' lw 1 dt 2 pt 6 ps 0.6 lc rgb '{}'\n"
        "unset multiplot\n",
        gnuplot::quote_text("Training curves: " + eval.model + " (" + eval.arch + ")"),
        gnuplot::quote_text(eval.training_loss == "mae" ? "loss (absolute error / label scale)"
                                                        : "loss (MSLE)"),
        d, kPalette[0], kPalette[1], d, kPalette[0], kPalette[1], kPalette[2]);
    write_file(gp, script);
    gnuplot::run(gp, png);
    return true;
}

void scatter(const Evaluation& eval, const std::string& label, const std::filesystem::path& work,
             const std::filesystem::path& png) {
    std::ostringstream data;
    data << "# true predicted male\n";
    double top = 24;
    for (const ItemResult& r : eval.items) {
        data << number(r.true_months) << ' ' << number(r.predicted_months) << ' '
             << (r.male ? 1 : 0) << '\n';
        top = std::max({top, r.true_months, std::isfinite(r.predicted_months) ? r.predicted_months : 0});
    }
    top = std::ceil(top / 24.0) * 24.0;
    std::filesystem::path dat = work / ("scatter_" + label + ".dat");
    std::filesystem::path gp = work / ("scatter_" + label + ".gp");
    write_file(dat, data.str());
    std::string script = preamble(png, 680, 640);
    std::string d = gnuplot::quote(dat);
    script += fmt::format(
        "set title {}\nset size ratio -1\n"
        "set xlabel 'true bone age (months)'\nset ylabel 'predicted bone age (months)'\n"
        "set xrange [0:{}]\nset yrange [0:{}]\nset xtics 24\nset ytics 24\nset grid xtics ytics\n"
        "set key top left\n"
        "plot x title 'identity' lw 1.5 dt 2 lc rgb '#555555', "
        "{} using 1:($3 == 1 ? $2 : NaN) title 'male' pt 7 ps 0.6 lc rgb '{}', "
        "'' using 1:($3 == 0 ? $2 : NaN) title 'female' pt 7 ps 0.6 lc rgb '{}'\n",
        gnuplot::quote_text(fmt::format("{}: MAE {:.2f}, RMSE {:.2f} months (n = {})", eval.model,
                                        eval.metrics.mae, eval.metrics.rmse, eval.metrics.n)),
        top, top, d, kPalette[0], kPalette[1]);
    write_file(gp, script);
    gnuplot::run(gp, png);
}

void age_band_chart(const std::vector<Evaluation>& evals, const std::vector<std::string>& labels,
                    const std::filesystem::path& work, const std::filesystem::path& png) {
    const auto& bands = default_age_bands();
    std::vector<std::vector<std::pair<AgeBand, Metrics>>> per_model;
    for (const Evaluation& e : evals) per_model.push_back(metrics_by_age_band(e.items, bands));
    std::ostringstream data;
    data << "band";
    for (const std::string& l : labels) data << ' ' << data_label(l);
    data << '\n';
    for (const AgeBand& band : bands) {
        std::size_t n = 0;
        std::ostringstream cells;
        for (const auto& model : per_model) {
            double mae = NAN;
            for (const auto& [b, m] : model)
                if (b.label == band.label) {
                    mae = m.mae;
                    n = std::max(n, m.n);
                }
            cells << ' ' << number(mae);
        }
        data << data_label(fmt::format("{}\\n(n = {})", band.label, n)) << cells.str() << '\n';
    }
    std::filesystem::path dat = work / "age_bands.dat", gp = work / "age_bands.gp";
    write_file(dat, data.str());
    std::string script = preamble(png, 1000, 460);
    script += fmt::format(
        "set title 'MAE by age band (true age)'\nset ylabel 'MAE (months)'\nset yrange [0:*]\n"
        "set offsets 0,0,graph 0.1,0\nset bmargin 4\n"
        "set style data histograms\nset style histogram clustered gap 1\n"
        "set style fill solid 0.85 border -1\nset key top left\n"
        "set key autotitle columnheader\n"
        "plot for [i=2:{}] {} using i:xtic(1) lc rgb word('{}', (i-2)%6+1)\n",
        int(evals.size()) + 1, gnuplot::quote(dat),
        fmt::format("{} {} {} {} {} {}", kPalette[0], kPalette[1], kPalette[2], kPalette[3],
                    kPalette[4], kPalette[5]));
    write_file(gp, script);
    gnuplot::run(gp, png);
}

}  // namespace boneage::figures
