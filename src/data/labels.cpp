// Reading the CSV files of datasets and predictions: RSNA-style labels (`id,boneage,male`, the
// columns in any order) and predict's per-input manifests (`path,sex,chronological_age`).
#include <boneage/dataset.hpp>
#include <boneage/error.hpp>

#include <fmt/format.h>

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

constexpr double kMaxAgeMonths = 300.0;

std::string trim(const std::string& s) {
    auto not_space = [](unsigned char c) { return !std::isspace(c); };
    auto begin = std::find_if(s.begin(), s.end(), not_space);
    auto end = std::find_if(s.rbegin(), s.rend(), not_space).base();
    return begin < end ? std::string(begin, end) : std::string();
}

std::string lower(std::string s) {
    for (char& c : s) c = char(std::tolower(static_cast<unsigned char>(c)));
    return s;
}

// Splits one CSV line on commas; a field in double quotes may hold commas and "" escapes.
std::vector<std::string> split_csv_line(const std::string& line) {
    std::vector<std::string> fields(1);
    bool quoted = false;
    for (std::size_t i = 0; i < line.size(); ++i) {
        char c = line[i];
        if (quoted) {
            if (c == '"' && i + 1 < line.size() && line[i + 1] == '"') {
                fields.back() += '"';
                ++i;
            } else if (c == '"') {
                quoted = false;
            } else {
                fields.back() += c;
            }
        } else if (c == '"') {
            quoted = true;
        } else if (c == ',') {
            fields.emplace_back();
        } else {
            fields.back() += c;
        }
    }
    for (auto& f : fields) f = trim(f);
    return fields;
}

// The lines of the file without line ends (LF or CRLF) and without a UTF-8 byte-order mark.
// `what` names the file in the error when it cannot be opened ("labels file").
std::vector<std::string> read_lines(const std::filesystem::path& csv, const char* what) {
    std::ifstream in(csv, std::ios::binary);
    if (!in) throw Error(ErrorKind::NotFound, csv, fmt::format("cannot open the {}", what));
    std::ostringstream buffer;
    buffer << in.rdbuf();
    std::string text = buffer.str();
    if (text.compare(0, 3, "\xEF\xBB\xBF") == 0) text.erase(0, 3);
    std::vector<std::string> lines;
    std::istringstream stream(text);
    for (std::string line; std::getline(stream, line);) {
        if (!line.empty() && line.back() == '\r') line.pop_back();
        lines.push_back(line);
    }
    return lines;
}

// A header name as compared: lower case, without spaces and underscores, so "Case ID",
// "case_id" and "caseid" are one name, and "Bone Age (Months)" is "boneage(months)".
std::string header_key(const std::string& name) {
    std::string key;
    for (char c : lower(name))
        if (c != ' ' && c != '_') key += c;
    return key;
}

// The column whose name is one of `keys` (header_key form), or nullopt. Two such columns are
// refused: the header alone cannot tell which one was meant, and taking the first would give
// a silently wrong result whenever it is the other.
std::optional<std::size_t> find_column(const std::filesystem::path& csv,
                                       const std::vector<std::string>& header, const char* what,
                                       std::initializer_list<const char*> keys) {
    std::optional<std::size_t> found;
    for (std::size_t i = 0; i < header.size(); ++i) {
        std::string key = header_key(header[i]);
        if (std::none_of(keys.begin(), keys.end(), [&](const char* k) { return key == k; }))
            continue;
        if (found)
            throw Error(ErrorKind::BadData, csv,
                        fmt::format("line 1: columns '{}' and '{}' could both be the {}; keep "
                                    "one of them",
                                    header[*found], header[i], what));
        found = i;
    }
    return found;
}

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

std::optional<double> parse_age(const std::string& text) {
    if (text.empty()) return std::nullopt;
    char* end = nullptr;
    double value = std::strtod(text.c_str(), &end);
    if (end != text.c_str() + text.size() || !std::isfinite(value)) return std::nullopt;
    return value;
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

std::filesystem::path find_image(const std::filesystem::path& dir, const std::string& id) {
    static const char* const kExtensions[] = {".png", ".jpg", ".jpeg", ".dcm",
                                              ".tif", ".tiff", ".bmp"};
    // An id is a file stem, never a path: "../x" must not reach outside the folder.
    if (id.empty() || id.find('/') != std::string::npos || id == "." || id == "..") return {};
    for (const char* ext : kExtensions) {
        std::filesystem::path candidate = dir / (id + ext);
        std::error_code ec;
        if (std::filesystem::is_regular_file(candidate, ec)) return candidate;
    }
    return {};
}

double id_hash_fraction(const std::string& id) {
    // FNV-1a, 64 bits: fixed by its definition, unlike std::hash, so the split is the same
    // on every platform and standard library.
    std::uint64_t hash = 0xcbf29ce484222325ull;
    for (unsigned char c : id) {
        hash ^= c;
        hash *= 0x100000001b3ull;
    }
    // FNV-1a alone leaves ids that differ in the last digit close together (eight consecutive
    // RSNA ids fell on one side); MurmurHash3's 64-bit finaliser spreads them.
    hash ^= hash >> 33;
    hash *= 0xff51afd7ed558ccdull;
    hash ^= hash >> 33;
    hash *= 0xc4ceb9fe1a85ec53ull;
    hash ^= hash >> 33;
    return double(hash >> 11) * 0x1.0p-53;  // the top 53 bits, uniform in [0, 1)
}

bool in_validation_split(const std::string& id, double fraction) {
    return id_hash_fraction(id) < fraction;
}

int fold_of(const std::string& id, int folds) {
    if (folds < 2)
        throw UsageError(fmt::format("cross-validation needs at least 2 folds, not {}", folds));
    const double h = id_hash_fraction(id);
    // floor(h x K), then nudged so the fold edges are exactly the doubles k / K that a split
    // fraction would be: fold 0 of K is then in_validation_split(id, 1.0 / K), to the last id.
    int fold = std::min(folds - 1, static_cast<int>(h * folds));
    while (fold > 0 && h < static_cast<double>(fold) / folds) --fold;
    while (fold + 1 < folds && h >= static_cast<double>(fold + 1) / folds) ++fold;
    return fold;
}

}  // namespace boneage
