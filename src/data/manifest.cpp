// Prediction manifests: one input per row with its own sex and chronological age
// (`path,sex,chronological_age`), for batches of mixed patients.
#include <boneage/dataset.hpp>
#include <boneage/error.hpp>

#include <fmt/format.h>

#include "data/csv.hpp"

namespace boneage {

using namespace csv;

std::vector<ManifestRow> read_manifest(const std::filesystem::path& csv) {
    std::vector<std::string> lines = read_lines(csv, "manifest");
    if (lines.empty() || trim(lines[0]).empty())
        throw Error(ErrorKind::BadData, csv, "empty manifest: no header line");
    auto bad = [&](int line, const std::string& reason) {
        return Error(ErrorKind::BadData, csv, fmt::format("line {}: {}", line, reason));
    };

    // Every column must be one the reader knows: an `age` column left unread would leave its
    // inputs without the age the user meant to give them.
    std::vector<std::string> header = split_csv_line(lines[0]);
    for (const std::string& h : header) {
        std::string k = header_key(h);
        if (k != "path" && k != "sex" && k != "chronologicalage" && k != "chronologicalagemonths" &&
            k != "chronologicalage(months)")
            throw bad(1, fmt::format("unknown column '{}' (a manifest has path, sex and "
                                     "chronological_age)",
                                     h));
    }
    auto path = find_column(csv, header, "path", {"path"});
    auto sex = find_column(csv, header, "sex", {"sex"});
    auto age = find_column(csv, header, "chronological age",
                           {"chronologicalage", "chronologicalagemonths", "chronologicalage(months)"});
    if (!path)
        throw bad(1, fmt::format("no 'path' column in the header \"{}\" (expected "
                                 "path,sex,chronological_age)",
                                 lines[0]));

    std::vector<ManifestRow> rows;
    for (std::size_t i = 1; i < lines.size(); ++i) {
        if (trim(lines[i]).empty()) continue;
        const int line = int(i) + 1;
        std::vector<std::string> fields = split_csv_line(lines[i]);
        if (fields.size() != header.size())
            throw bad(line, fmt::format("{} fields, the header has {}", fields.size(),
                                        header.size()));
        ManifestRow row;
        row.line = line;
        if (fields[*path].empty()) throw bad(line, "empty path");
        std::filesystem::path file = fields[*path];
        row.path = file.is_absolute() ? file : (csv.parent_path() / file).lexically_normal();
        if (sex && !fields[*sex].empty()) {
            row.male = parse_sex(fields[*sex]);
            if (!row.male)
                throw bad(line, fmt::format("sex '{}' is not one of M, F, male or female (any "
                                            "case), or empty",
                                            fields[*sex]));
        }
        if (age && !fields[*age].empty()) {
            auto months = parse_age(fields[*age]);
            if (!months)
                throw bad(line, fmt::format("chronological age '{}' is not a number of months",
                                            fields[*age]));
            if (*months < 0 || *months > kMaxAgeMonths)
                throw bad(line, fmt::format("chronological age {} months is outside 0..{}",
                                            fields[*age], kMaxAgeMonths));
            row.chronological_age_months = *months;
        }
        rows.push_back(std::move(row));
    }
    if (rows.empty()) throw bad(1, "no inputs: the manifest has a header and no rows");
    return rows;
}

}  // namespace boneage
