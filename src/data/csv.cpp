// The CSV reading that labels files and prediction manifests share (csv.hpp).
#include "data/csv.hpp"

#include <boneage/dataset.hpp>
#include <boneage/error.hpp>

#include <fmt/format.h>

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstdlib>
#include <fstream>
#include <sstream>

namespace boneage::csv {

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

std::optional<double> parse_age(const std::string& text) {
    if (text.empty()) return std::nullopt;
    char* end = nullptr;
    double value = std::strtod(text.c_str(), &end);
    if (end != text.c_str() + text.size() || !std::isfinite(value)) return std::nullopt;
    return value;
}

}  // namespace boneage::csv

namespace boneage {

std::string csv_field(const std::string& text) {
    if (text.find_first_of(",\"\n\r") == std::string::npos) return text;
    std::string out = "\"";
    for (char c : text) out += c == '"' ? std::string("\"\"") : std::string(1, c);
    return out + "\"";
}

}  // namespace boneage
