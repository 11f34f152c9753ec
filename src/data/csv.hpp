// The CSV reading that labels files (labels.cpp) and prediction manifests (manifest.cpp)
// share: lines, fields, header names and numbers, each with the file and line in its errors.
#pragma once

#include <filesystem>
#include <initializer_list>
#include <optional>
#include <string>
#include <vector>

namespace boneage::csv {

// The largest age, in months, a labels file or manifest may hold (25 years).
inline constexpr double kMaxAgeMonths = 300.0;

std::string trim(const std::string& s);
std::string lower(std::string s);

// Splits one CSV line on commas; a field in double quotes may hold commas and "" escapes.
// Fields are trimmed.
std::vector<std::string> split_csv_line(const std::string& line);

// The lines of the file without line ends (LF or CRLF) and without a UTF-8 byte-order mark.
// `what` names the file in the error when it cannot be opened ("labels file").
std::vector<std::string> read_lines(const std::filesystem::path& csv, const char* what);

// A header name as compared: lower case, without spaces and underscores, so "Case ID",
// "case_id" and "caseid" are one name, and "Bone Age (Months)" is "boneage(months)".
std::string header_key(const std::string& name);

// The column whose name is one of `keys` (header_key form), or nullopt. Two such columns are
// refused (BadData naming both and `what`): the header alone cannot tell which was meant.
std::optional<std::size_t> find_column(const std::filesystem::path& csv,
                                       const std::vector<std::string>& header, const char* what,
                                       std::initializer_list<const char*> keys);

// A finite number written in full ("132", "132.5"), or nullopt.
std::optional<double> parse_age(const std::string& text);

}  // namespace boneage::csv
