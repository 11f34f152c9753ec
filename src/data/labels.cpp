// RSNA-style labels files (`id,boneage,male`, the columns in any order, by exact names).
#include <boneage/dataset.hpp>
#include <boneage/error.hpp>

#include <fmt/format.h>

#include "data/csv.hpp"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstdlib>
#include <fstream>
#include <optional>
#include <sstream>
#include <unordered_map>

namespace boneage {

namespace {

using namespace csv;

// How a labels file codes sex: RSNA's `male` column holds booleans, a `sex` column letters.
enum class SexCoding { MaleBoolean, Letters };

struct Columns {
    std::size_t id = 0, age = 0, sex = 0;
    SexCoding coding = SexCoding::MaleBoolean;
    std::size_t needed = 0;  // fields a row must have: the largest index + 1
};

Columns parse_header(const std::filesystem::path& csv, const std::string& line) {
    std::vector<std::string> header = split_csv_line(line);
    auto id = find_column(csv, header, "id", {"id", "caseid"});
    // Never `age`: files that carry both ages name the chronological one `age`.
    auto age = find_column(csv, header, "bone age",
                           {"boneage", "boneage(months)", "boneagemonths", "groundtruthboneage",
                            "groundtruthboneage(months)"});
    auto male = find_column(csv, header, "sex", {"male"});
    auto sex = find_column(csv, header, "sex", {"sex"});
    if (male && sex)
        throw Error(ErrorKind::BadData, csv,
                    fmt::format("line 1: columns '{}' and '{}' could both be the sex; keep one of "
                                "them",
                                header[std::min(*male, *sex)], header[std::max(*male, *sex)]));
    auto missing = [&](const char* what, const std::string& accepted) {
        return Error(ErrorKind::BadData, csv,
                     fmt::format("line 1: no {} column in the header \"{}\" (accepted: {})", what,
                                 line, accepted));
    };
    if (!id) throw missing("id", "id or Case ID");
    if (!age) {
        std::string accepted =
            "boneage, bone age (months) or ground truth bone age (months)";
        const bool has_age = std::any_of(header.begin(), header.end(), [](const std::string& h) {
            std::string k = header_key(h);
            return k == "age" || k == "age(months)" || k == "agemonths";
        });
        if (has_age)
            accepted += "; 'age' is not taken as the bone age, as it may be the chronological age";
        throw missing("bone age", accepted);
    }
    if (!male && !sex)
        throw missing("sex", "male holding True/False/1/0, or sex holding M/F/male/female");
    Columns c;
    c.id = *id;
    c.age = *age;
    c.sex = male ? *male : *sex;
    c.coding = male ? SexCoding::MaleBoolean : SexCoding::Letters;
    c.needed = std::max({c.id, c.age, c.sex}) + 1;
    return c;
}

std::optional<bool> parse_male(const std::string& text) {
    std::string t = lower(text);
    if (t == "true" || t == "1") return true;
    if (t == "false" || t == "0") return false;
    return std::nullopt;
}

// Checks one data row; returns the reason it is bad, or empty when it is good.
std::string check_row(const std::vector<std::string>& fields, const Columns& columns,
                      const std::unordered_map<std::string, int>& seen, LabelRow& row) {
    if (fields.size() < columns.needed)
        return fmt::format("missing field: {} of {} columns", fields.size(), columns.needed);
    row.id = fields[columns.id];
    if (row.id.empty()) return "empty id";
    auto age = parse_age(fields[columns.age]);
    if (!age) return fmt::format("age '{}' is not a number", fields[columns.age]);
    if (*age < 0 || *age > kMaxAgeMonths)
        return fmt::format("age {} months is outside 0..{}", fields[columns.age], kMaxAgeMonths);
    const std::string& sex = fields[columns.sex];
    auto male = columns.coding == SexCoding::MaleBoolean ? parse_male(sex) : parse_sex(sex);
    if (!male)
        return columns.coding == SexCoding::MaleBoolean
                   ? fmt::format("male '{}' is not one of True, False, 1 or 0", sex)
                   : fmt::format("sex '{}' is not one of M, F, male or female (any case)", sex);
    if (auto it = seen.find(row.id); it != seen.end())
        return fmt::format("duplicate id (first on line {})", it->second);
    row.age_months = *age;
    row.male = *male;
    return {};
}

}  // namespace

Labels read_labels(const std::filesystem::path& csv, bool strict) {
    std::vector<std::string> lines = read_lines(csv, "labels file");
    if (lines.empty() || trim(lines[0]).empty())
        throw Error(ErrorKind::BadData, csv, "empty labels file: no header line");
    Columns columns = parse_header(csv, lines[0]);

    Labels labels;
    std::unordered_map<std::string, int> seen;  // id -> line of its first good row
    for (std::size_t i = 1; i < lines.size(); ++i) {
        if (trim(lines[i]).empty()) continue;  // blank lines, e.g. at the end of the file
        LabelRow row;
        row.line = int(i) + 1;
        std::vector<std::string> fields = split_csv_line(lines[i]);
        std::string reason = check_row(fields, columns, seen, row);
        if (reason.empty()) {
            seen.emplace(row.id, row.line);
            labels.rows.push_back(std::move(row));
            continue;
        }
        if (strict)
            throw Error(ErrorKind::BadData, csv, fmt::format("line {}: {}", row.line, reason));
        std::string id = fields.size() > columns.id ? fields[columns.id] : std::string();
        labels.rejected.push_back({row.line, id, reason});
    }
    return labels;
}

std::optional<bool> parse_sex(const std::string& text) {
    std::string t = lower(trim(text));
    if (t == "m" || t == "male") return true;
    if (t == "f" || t == "female") return false;
    return std::nullopt;
}

}  // namespace boneage
