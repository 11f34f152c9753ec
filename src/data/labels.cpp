// Reading RSNA-style label files: `id,boneage,male` with the columns in any order.
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
std::vector<std::string> read_lines(const std::filesystem::path& csv) {
    std::ifstream in(csv, std::ios::binary);
    if (!in) throw Error(ErrorKind::NotFound, csv, "cannot open the labels file");
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

struct Columns {
    std::size_t id = 0, age = 0, male = 0;
    std::size_t needed = 0;  // fields a row must have: the largest index + 1
};

// Finds a column by any of its accepted names (compared without case or spaces).
std::optional<std::size_t> find_column(const std::vector<std::string>& header,
                                       std::initializer_list<const char*> names) {
    for (std::size_t i = 0; i < header.size(); ++i) {
        std::string h = lower(header[i]);
        h.erase(std::remove(h.begin(), h.end(), ' '), h.end());
        for (const char* n : names)
            if (h == n) return i;
    }
    return std::nullopt;
}

Columns parse_header(const std::filesystem::path& csv, const std::string& line) {
    std::vector<std::string> header = split_csv_line(line);
    auto id = find_column(header, {"id", "caseid"});
    auto age = find_column(header, {"boneage", "boneage(months)", "age"});
    auto male = find_column(header, {"male", "sex"});
    auto missing = [&](const char* name) {
        return Error(ErrorKind::BadData, csv,
                     fmt::format("line 1: no '{}' column in the header \"{}\" (expected "
                                 "id,boneage,male in any order)",
                                 name, line));
    };
    if (!id) throw missing("id");
    if (!age) throw missing("boneage");
    if (!male) throw missing("male");
    Columns c{*id, *age, *male, 0};
    c.needed = std::max({c.id, c.age, c.male}) + 1;
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
    if (t == "true" || t == "1" || t == "m" || t == "male") return true;
    if (t == "false" || t == "0" || t == "f" || t == "female") return false;
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
    auto male = parse_male(fields[columns.male]);
    if (!male)
        return fmt::format("male '{}' is not one of true/false/1/0/M/F", fields[columns.male]);
    if (auto it = seen.find(row.id); it != seen.end())
        return fmt::format("duplicate id (first on line {})", it->second);
    row.age_months = *age;
    row.male = *male;
    return {};
}

}  // namespace

Labels read_labels(const std::filesystem::path& csv, bool strict) {
    std::vector<std::string> lines = read_lines(csv);
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

bool in_validation_split(const std::string& id, double fraction) {
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
    double unit = double(hash >> 11) * 0x1.0p-53;  // the top 53 bits, uniform in [0, 1)
    return unit < fraction;
}

}  // namespace boneage
