// The evaluation report: the paper's Table 1 for the models at hand, errors by age band, the
// figures, and every prediction as CSV.
#include <boneage/evaluate.hpp>

#include "eval/figures.hpp"

#include <boneage/durable_file.hpp>
#include <boneage/error.hpp>
#include <boneage/image.hpp>

#include <fmt/format.h>

#include <algorithm>
#include <fstream>
#include <set>
#include <sstream>

namespace boneage {

namespace {

// Model labels safe as file names and distinct from each other.
std::vector<std::string> unique_labels(const std::vector<Evaluation>& evals) {
    std::vector<std::string> out;
    std::set<std::string> seen;
    for (const Evaluation& e : evals) {
        std::string base = e.model.empty() ? e.arch : e.model;
        for (char& c : base)
            if (!std::isalnum(static_cast<unsigned char>(c)) && c != '-' && c != '_' && c != '.')
                c = '_';
        if (base.empty()) base = "model";
        std::string label = base;
        for (int k = 2; seen.count(label); ++k) label = base + "-" + std::to_string(k);
        seen.insert(label);
        out.push_back(label);
    }
    return out;
}

void write_text(const std::filesystem::path& file, const std::string& text) {
    write_file_atomically(file, text);
}

std::string predictions_csv(const std::vector<Evaluation>& evals,
                            const std::vector<std::string>& labels) {
    std::ostringstream out;
    out << "id,true,predicted,male,error,model\n";
    for (std::size_t m = 0; m < evals.size(); ++m)
        for (const ItemResult& r : evals[m].items)
            out << csv_field(r.id) << ',' << fmt::format("{:.2f},{:.3f}", r.true_months,
                                                         r.predicted_months)
                << ',' << (r.male ? "True" : "False") << ',' << fmt::format("{:.3f}", r.error())
                << ',' << csv_field(labels[m]) << '\n';
    return out.str();
}

std::string table_one(const std::vector<Evaluation>& evals) {
    std::ostringstream md;
    md << "| model | arch | head | sex input | ms/step (training) | MAE (months) | RMSE (months) | "
          "loss (MSLE) | model size | n |\n"
          "| --- | --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |\n";
    for (const Evaluation& e : evals)
        md << fmt::format("| {} | {} | {} | {} | {} | {:.2f} | {:.2f} | {:.4f} | {:.1f} MB | {} |\n",
                          e.model, e.arch, e.head, e.uses_sex ? "yes" : "no",
                          e.ms_per_step ? fmt::format("{:.0f}", *e.ms_per_step) : "n/a",
                          e.metrics.mae, e.metrics.rmse, e.metrics.msle,
                          double(e.model_bytes) / 1e6, e.metrics.n);
    return md.str();
}

std::string band_table(const std::vector<Evaluation>& evals) {
    std::ostringstream md;
    md << "| age band | n |";
    for (const Evaluation& e : evals) md << " MAE " << e.model << " |";
    md << "\n| --- | ---: |";
    for (std::size_t i = 0; i < evals.size(); ++i) md << " ---: |";
    md << '\n';
    std::vector<std::vector<std::pair<AgeBand, Metrics>>> per_model;
    for (const Evaluation& e : evals) per_model.push_back(metrics_by_age_band(e.items));
    for (const AgeBand& band : default_age_bands()) {
        std::size_t n = 0;
        std::string cells;
        for (const auto& model : per_model) {
            std::string cell = "-";
            for (const auto& [b, m] : model)
                if (b.label == band.label) {
                    cell = fmt::format("{:.2f}", m.mae);
                    n = std::max(n, m.n);
                }
            cells += " " + cell + " |";
        }
        md << "| " << band.label << " | " << n << " |" << cells << '\n';
    }
    return md.str();
}

// MAE and RMSE for girls and boys apart: a model can be good on average and biased for one.
std::string sex_table(const std::vector<Evaluation>& evals) {
    std::ostringstream md;
    md << "| sex | n |";
    for (const Evaluation& e : evals) md << " MAE " << e.model << " | RMSE " << e.model << " |";
    md << "\n| --- | ---: |";
    for (std::size_t i = 0; i < evals.size(); ++i) md << " ---: | ---: |";
    md << '\n';
    for (const bool male : {false, true}) {
        std::size_t n = 0;
        std::string cells;
        for (const Evaluation& e : evals) {
            std::vector<double> truth, predicted;
            for (const ItemResult& r : e.items)
                if (r.male == male) {
                    truth.push_back(r.true_months);
                    predicted.push_back(r.predicted_months);
                }
            n = std::max(n, truth.size());
            if (truth.empty()) {
                cells += " - | - |";
                continue;
            }
            const Metrics m = compute_metrics(truth, predicted);
            cells += fmt::format(" {:.2f} | {:.2f} |", m.mae, m.rmse);
        }
        md << "| " << (male ? "male" : "female") << " | " << n << " |" << cells << '\n';
    }
    return md.str();
}

std::string json_number(const nlohmann::json& j, const char* key, const char* format) {
    auto it = j.find(key);
    return it != j.end() && it->is_number() ? fmt::format(fmt::runtime(format), it->get<double>())
                                            : std::string("n/a");
}

// The validation metrics train stored in each model file, beside this evaluation's.
std::string recorded_validation(const std::vector<Evaluation>& evals) {
    std::ostringstream md;
    bool any = false;
    for (const Evaluation& e : evals) {
        if (!e.validation.is_object() || e.validation.empty()) continue;
        if (!any)
            md << "\n## Recorded at training\n\nThe validation metrics each model file carries "
                  "(its own validation split):\n\n"
                  "| model | n | MAE | RMSE | MSLE | best epoch |\n"
                  "| --- | ---: | ---: | ---: | ---: | ---: |\n";
        any = true;
        md << "| " << e.model << " | " << json_number(e.validation, "n", "{:.0f}") << " | "
           << json_number(e.validation, "mae", "{:.2f}") << " | "
           << json_number(e.validation, "rmse", "{:.2f}") << " | "
           << json_number(e.validation, "msle", "{:.4f}") << " | "
           << json_number(e.validation, "epoch", "{:.0f}") << " |\n";
    }
    return md.str();
}

// "3 test-time views per image (...)"; each model's own number when they differ, since a model
// runs with the number its file records unless --tta is given.
std::string views_sentence(const std::vector<Evaluation>& evals,
                           const std::vector<std::string>& labels) {
    const bool same = std::all_of(evals.begin(), evals.end(), [&](const Evaluation& e) {
        return e.views == evals.front().views;
    });
    const bool several = std::any_of(evals.begin(), evals.end(),
                                     [](const Evaluation& e) { return e.views > 1; });
    std::string text;
    if (same) {
        const int v = evals.front().views;
        text = fmt::format("{} test-time view{} per image", v, v == 1 ? "" : "s");
    } else {
        text = "test-time views per image";
        for (std::size_t i = 0; i < evals.size(); ++i)
            text += fmt::format("{} {} {}", i == 0 ? ":" : ",", labels[i], evals[i].views);
    }
    if (several) text += " (the mean over the image and fixed small rotations, zooms and shifts)";
    return text;
}

std::string failures(const std::vector<Evaluation>& evals) {
    if (evals.empty() || (evals.front().failed.empty() && evals.front().warnings.empty())) return {};
    std::ostringstream md;
    const Evaluation& e = evals.front();
    if (!e.warnings.empty()) {
        md << "\n## Warnings\n\n";
        for (const std::string& w : e.warnings) md << "- " << w << '\n';
    }
    if (!e.failed.empty()) {
        md << "\n## Items not evaluated (" << e.failed.size() << ")\n\n";
        constexpr std::size_t kShown = 30;
        for (std::size_t i = 0; i < e.failed.size() && i < kShown; ++i)
            md << "- `" << e.failed[i].id << "`: " << e.failed[i].error << '\n';
        if (e.failed.size() > kShown) md << "- ... and " << e.failed.size() - kShown << " more\n";
    }
    return md.str();
}

}  // namespace

ReportFiles write_report(const std::filesystem::path& dir, const std::vector<Evaluation>& evals,
                         const EvalSet* set, const ReportOptions& options) {
    if (evals.empty()) throw UsageError("a report needs at least one evaluated model");
    std::error_code ec;
    std::filesystem::create_directories(dir / "plot-data", ec);
    if (ec) throw Error(ErrorKind::NotFound, dir, "cannot create the report folder: " + ec.message());
    if (options.figures && !gnuplot_available())
        throw Error(ErrorKind::NotFound, dir,
                    "gnuplot is not installed (apt-get install gnuplot-nox); it draws the "
                    "report's figures");

    ReportFiles files;
    files.markdown = dir / "report.md";
    files.predictions = dir / "predictions.csv";
    const std::vector<std::string> labels = unique_labels(evals);
    write_text(files.predictions, predictions_csv(evals, labels));

    std::ostringstream md;
    md << "# Bone age evaluation\n\n";
    md << fmt::format("Evaluated on `{}`{}: {} images, {} not evaluated.\n",
                      set ? set->source : std::string("the given set"),
                      set && set->split != "all" ? " (split " + set->split + ")" : "",
                      evals.front().metrics.n, evals.front().failed.size());
    md << "MAE and RMSE in months; loss is the mean squared logarithmic error (Keras' "
          "definition); ms/step is the median training step recorded in the model file; model "
          "size is the file size. ";
    md << fmt::format("The networks ran in {}, {}.\n\n", evals.front().precision,
                      views_sentence(evals, labels));
    md << "## Table 1: models side by side\n\n" << table_one(evals);
    md << "\nThe paper's Table 1 (RSNA test set, the authors' hardware), for scale:\n\n"
          "| model | ms/step | MAE | RMSE | loss (MSLE) | model size |\n"
          "| --- | ---: | ---: | ---: | ---: | ---: |\n"
          "| Shallow | 80 | 16.89 | 21.43 | 0.042 | 42 MB |\n"
          "| ResNet-50 | 132 | 13.45 | 17.82 | 0.032 | 420 MB |\n"
          "| Inception-v4 | 224 | 10.47 | 13.95 | 0.018 | 582 MB |\n";

    if (options.figures) {
        const std::filesystem::path work = dir / "plot-data";
        auto figure = [&](const std::string& name) {
            files.figures.push_back(dir / name);
            return dir / name;
        };
        figures::metrics_chart(evals, labels, work, figure("metrics.png"));
        md << "\n## Metrics across models (Fig. 3)\n\n![metrics](metrics.png)\n";

        md << "\n## Training curves (Fig. 4)\n\n";
        for (std::size_t i = 0; i < evals.size(); ++i) {
            std::string name = "training_" + labels[i] + ".png";
            if (figures::training_curves(evals[i], labels[i], work, dir / name)) {
                files.figures.push_back(dir / name);
                md << "![training " << labels[i] << "](" << name << ")\n\n";
            } else {
                md << "- " << evals[i].model << ": the model file records no training history.\n";
            }
        }

        md << "\n## Predicted against true age\n\n";
        for (std::size_t i = 0; i < evals.size(); ++i) {
            std::string name = "scatter_" + labels[i] + ".png";
            figures::scatter(evals[i], labels[i], work, figure(name));
            md << "![scatter " << labels[i] << "](" << name << ")\n";
        }

        md << "\n## Error by age band\n\n" << band_table(evals);
        figures::age_band_chart(evals, labels, work, figure("age_bands.png"));
        md << "\n![age bands](age_bands.png)\n";
        md << "\n## Error by sex\n\n" << sex_table(evals);

        if (set && !set->samples.empty()) {
            const LoadedModel* looked = options.heatmap_model ? &*options.heatmap_model : nullptr;
            cv::Mat sheet = sample_sheet(*set, &evals.front(), options.sample_count, 240, looked);
            write_image(figure("samples.png"), sheet);
            md << "\n## Preprocessed samples (Fig. 2)\n\nThe network's inputs, spread over the "
                  "age range, with the true age and " << evals.front().model
               << "'s prediction (error in brackets; red beyond 12 months)"
               << (looked ? "; the colour shows where the network looked (Grad-CAM, brighter "
                            "is more)"
                          : "")
               << ".\n\n![samples](samples.png)\n";
        }
    } else {
        md << "\n## Error by age band\n\n" << band_table(evals);
        md << "\n## Error by sex\n\n" << sex_table(evals);
    }
    md << recorded_validation(evals) << failures(evals);
    md << "\nEvery prediction: [predictions.csv](predictions.csv).\n";
    write_text(files.markdown, md.str());
    return files;
}

}  // namespace boneage
