// Out-of-fold errors of a cross-validation: the folds' predictions joined, with the standard
// error of the MAE, and the errors by fold, age band and sex.
#include <boneage/evaluate.hpp>

#include <boneage/error.hpp>

#include <fmt/format.h>

#include <cmath>
#include <cstdlib>
#include <fstream>
#include <limits>
#include <map>
#include <set>

namespace boneage {

GroupErrors group_errors(const std::string& label, const std::vector<ItemResult>& items) {
    GroupErrors g;
    g.label = label;
    g.n = items.size();
    if (g.n == 0) return g;
    const double n = static_cast<double>(g.n);
    double abs_sum = 0.0, sq_sum = 0.0, sum = 0.0;
    for (const ItemResult& r : items) {
        abs_sum += std::abs(r.error());
        sq_sum += r.error() * r.error();
        sum += r.error();
    }
    g.mae = abs_sum / n;
    g.rmse = std::sqrt(sq_sum / n);
    g.mean_error = sum / n;
    if (g.n < 2) {
        g.mae_se = std::numeric_limits<double>::quiet_NaN();
        return g;
    }
    double dev = 0.0;
    for (const ItemResult& r : items) dev += std::pow(std::abs(r.error()) - g.mae, 2);
    g.mae_se = std::sqrt(dev / (n - 1.0)) / std::sqrt(n);
    return g;
}

OutOfFoldSummary summarise_out_of_fold(const std::vector<std::vector<ItemResult>>& parts) {
    std::vector<ItemResult> all;
    std::set<std::string> seen;
    OutOfFoldSummary s;
    for (std::size_t k = 0; k < parts.size(); ++k) {
        for (const ItemResult& r : parts[k]) {
            if (!seen.insert(r.id).second)
                throw UsageError(fmt::format(
                    "id {} is predicted twice (again in part {}): out-of-fold predictions hold "
                    "each id once",
                    r.id, k));
            all.push_back(r);
        }
        s.folds.push_back(group_errors(fmt::format("fold {}", k), parts[k]));
    }
    if (all.empty()) throw UsageError("no predictions to summarise");
    s.all = group_errors("all", all);

    const std::vector<AgeBand>& bands = default_age_bands();
    for (std::size_t b = 0; b < bands.size(); ++b) {
        // As metrics_by_age_band: the first band takes anything younger, the last anything older.
        const bool first = b == 0, last = b + 1 == bands.size();
        std::vector<ItemResult> in;
        for (const ItemResult& r : all)
            if ((first || r.true_months >= bands[b].from_months) &&
                (last || r.true_months < bands[b].to_months))
                in.push_back(r);
        if (!in.empty()) s.age_bands.push_back(group_errors(bands[b].label, in));
    }
    for (const bool male : {false, true}) {
        std::vector<ItemResult> in;
        for (const ItemResult& r : all)
            if (r.male == male) in.push_back(r);
        if (!in.empty()) s.sexes.push_back(group_errors(male ? "boys" : "girls", in));
    }
    return s;
}

namespace {

// One CSV line into fields; a quoted field may hold commas and doubled quotes.
std::vector<std::string> csv_fields(const std::string& line) {
    std::vector<std::string> out(1);
    bool quoted = false;
    for (std::size_t i = 0; i < line.size(); ++i) {
        const char c = line[i];
        if (quoted) {
            if (c == '"' && i + 1 < line.size() && line[i + 1] == '"') {
                out.back() += '"';
                ++i;
            } else if (c == '"') {
                quoted = false;
            } else {
                out.back() += c;
            }
        } else if (c == '"') {
            quoted = true;
        } else if (c == ',') {
            out.emplace_back();
        } else if (c != '\r') {
            out.back() += c;
        }
    }
    return out;
}

}  // namespace

std::vector<ItemResult> read_predictions_csv(const std::filesystem::path& file) {
    std::ifstream in(file);
    if (!in) throw Error(ErrorKind::NotFound, file, "cannot open the predictions");
    auto bad = [&file](int line, const std::string& reason) {
        return Error(ErrorKind::BadData, file, fmt::format("line {}: {}", line, reason));
    };
    std::string line;
    if (!std::getline(in, line)) throw bad(1, "empty file: expected a header");
    const std::vector<std::string> header = csv_fields(line);
    std::map<std::string, std::size_t> column;
    for (std::size_t i = 0; i < header.size(); ++i) column[header[i]] = i;
    for (const char* name : {"id", "true", "predicted", "male"})
        if (!column.count(name))
            throw bad(1, fmt::format("no column '{}' (expected id,true,predicted,male,...)", name));

    std::vector<ItemResult> items;
    std::string model;
    for (int number = 2; std::getline(in, line); ++number) {
        if (line.empty() || line == "\r") continue;
        const std::vector<std::string> f = csv_fields(line);
        if (f.size() != header.size())
            throw bad(number, fmt::format("{} fields, the header has {}", f.size(), header.size()));
        auto months = [&](const char* name) {
            const std::string& text = f[column[name]];
            char* end = nullptr;
            const double v = std::strtod(text.c_str(), &end);
            if (text.empty() || *end != '\0' || !std::isfinite(v))
                throw bad(number, fmt::format("{} '{}' is not a number", name, text));
            return v;
        };
        ItemResult r;
        r.id = f[column["id"]];
        r.true_months = months("true");
        r.predicted_months = months("predicted");
        const std::string& male = f[column["male"]];
        if (male != "True" && male != "False")
            throw bad(number, fmt::format("male '{}' is not True or False", male));
        r.male = male == "True";
        if (column.count("model")) {
            const std::string& m = f[column["model"]];
            if (items.empty()) model = m;
            if (m != model)
                throw bad(number, fmt::format("a second model ({} after {}): give one model's "
                                              "predictions per file",
                                              m, model));
        }
        items.push_back(r);
    }
    return items;
}

}  // namespace boneage
