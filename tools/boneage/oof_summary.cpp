// boneage oof-summary: the out-of-fold errors of a cross-validation (scripts/cross-validate)
// from each fold's predictions.csv: MAE with its standard error, RMSE, and the errors by fold,
// age band and sex, as a markdown table (or JSON), and the joined predictions as one CSV.
#include "command.hpp"

#include <boneage/durable_file.hpp>
#include <boneage/error.hpp>
#include <boneage/evaluate.hpp>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <cmath>
#include <fstream>
#include <iostream>
#include <memory>
#include <sstream>

namespace boneage::cli {

namespace {

struct OofArgs {
    std::vector<std::string> files;  // predictions.csv of fold 0, 1, ... in order
    std::string out;                 // the joined predictions; empty: not written
    std::string format = "text";     // text | json
};

std::string number(double v, const char* format = "{:.2f}") {
    return std::isfinite(v) ? fmt::format(fmt::runtime(format), v) : std::string("-");
}

std::string row(const GroupErrors& g) {
    return fmt::format("| {} | {} | {} | {} | {} | {} |\n", g.label, g.n, number(g.mae),
                       number(g.mae_se), number(g.rmse), number(g.mean_error, "{:+.2f}"));
}

std::string table(const std::string& title, const std::vector<GroupErrors>& groups) {
    std::string md = fmt::format("| {} | n | MAE (months) | SE of MAE | RMSE (months) | mean "
                                 "error (months) |\n| --- | ---: | ---: | ---: | ---: | ---: |\n",
                                 title);
    for (const GroupErrors& g : groups) md += row(g);
    return md;
}

nlohmann::json to_json(const GroupErrors& g) {
    auto finite = [](double v) { return std::isfinite(v) ? nlohmann::json(v) : nlohmann::json(); };
    return {{"label", g.label},         {"n", g.n},         {"mae", finite(g.mae)},
            {"mae_se", finite(g.mae_se)}, {"rmse", finite(g.rmse)},
            {"mean_error", finite(g.mean_error)}};
}

nlohmann::json to_json(const std::vector<GroupErrors>& groups) {
    nlohmann::json out = nlohmann::json::array();
    for (const GroupErrors& g : groups) out.push_back(to_json(g));
    return out;
}

void write_joined(const std::string& file, const std::vector<std::vector<ItemResult>>& parts) {
    std::ostringstream out;
    out << "id,true,predicted,male,error,fold\n";
    for (std::size_t k = 0; k < parts.size(); ++k)
        for (const ItemResult& r : parts[k])
            out << fmt::format("{},{:.2f},{:.3f},{},{:.3f},{}\n", csv_field(r.id),
                               r.true_months, r.predicted_months, r.male ? "True" : "False",
                               r.error(), k);
    boneage::write_file_atomically(file, out.str());
}

int run_oof_summary(const OofArgs& a) {
    std::vector<std::vector<ItemResult>> parts;
    for (const std::string& file : a.files) parts.push_back(read_predictions_csv(file));
    const OutOfFoldSummary s = summarise_out_of_fold(parts);
    if (!a.out.empty()) write_joined(a.out, parts);

    if (a.format == "json") {
        const nlohmann::json j = {{"all", to_json(s.all)},
                                  {"folds", to_json(s.folds)},
                                  {"age_bands", to_json(s.age_bands)},
                                  {"sexes", to_json(s.sexes)}};
        std::cout << j.dump(2) << '\n';
        return kOk;
    }
    std::cout << fmt::format("Out-of-fold: {} predictions from {} folds; MAE {} ± {} months "
                             "(± one standard error), RMSE {}\n\n",
                             s.all.n, parts.size(), number(s.all.mae), number(s.all.mae_se),
                             number(s.all.rmse))
              << table("set", std::vector<GroupErrors>{s.all}) << '\n'
              << table("fold", s.folds) << '\n'
              << table("age band", s.age_bands) << '\n'
              << table("sex", s.sexes);
    return kOk;
}

const Command oof_summary_command{
    "oof-summary",
    "Out-of-fold errors of a cross-validation from each fold's predictions.csv",
    [](CLI::App& sub) -> std::function<int()> {
        auto a = std::make_shared<OofArgs>();
        sub.add_option("files", a->files,
                       "predictions.csv of each fold's model on its own fold (evaluate --report), "
                       "fold 0 first")
            ->required()
            ->check(CLI::ExistingFile);
        sub.add_option("--out", a->out,
                       "Write the joined predictions here (id,true,predicted,male,error,fold)");
        sub.add_option("--format", a->format, "text (markdown tables) | json")
            ->check(CLI::IsMember({"text", "json"}))
            ->capture_default_str();
        return [a] { return run_oof_summary(*a); };
    }};

}  // namespace

}  // namespace boneage::cli
