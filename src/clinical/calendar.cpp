// Dates as the command line and DICOM give them, and ages between them.
#include <boneage/calendar.hpp>
#include <boneage/error.hpp>

#include <fmt/format.h>

#include <cctype>

namespace boneage {

namespace {

bool digits(const std::string& s, std::size_t from, std::size_t count) {
    for (std::size_t i = from; i < from + count; ++i)
        if (!std::isdigit(static_cast<unsigned char>(s[i]))) return false;
    return true;
}

bool leap(int y) { return (y % 4 == 0 && y % 100 != 0) || y % 400 == 0; }

int days_in_month(int y, int m) {
    static const int days[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    return m == 2 && leap(y) ? 29 : days[m - 1];
}

// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's days_from_civil).
long days_from_civil(const Date& d) {
    const long y = d.year - (d.month <= 2 ? 1 : 0);
    const long era = (y >= 0 ? y : y - 399) / 400;
    const long yoe = y - era * 400;
    const long mp = (d.month + 9) % 12;
    const long doy = (153 * mp + 2) / 5 + d.day - 1;
    const long doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + doe - 719468;
}

}  // namespace

std::optional<Date> try_parse_date(const std::string& s) {
    Date d;
    if (s.size() == 10 && s[4] == '-' && s[7] == '-' && digits(s, 0, 4) && digits(s, 5, 2) &&
        digits(s, 8, 2))
        d = {std::stoi(s.substr(0, 4)), std::stoi(s.substr(5, 2)), std::stoi(s.substr(8, 2))};
    else if (s.size() == 8 && digits(s, 0, 8))
        d = {std::stoi(s.substr(0, 4)), std::stoi(s.substr(4, 2)), std::stoi(s.substr(6, 2))};
    else
        return std::nullopt;
    if (d.year < 1800 || d.year > 2999 || d.month < 1 || d.month > 12 || d.day < 1 ||
        d.day > days_in_month(d.year, d.month))
        return std::nullopt;
    return d;
}

Date parse_date(const std::string& text, const std::string& what) {
    std::optional<Date> d = try_parse_date(text);
    if (!d)
        throw UsageError(fmt::format("{} '{}' is not a date of the form YYYY-MM-DD", what, text));
    return *d;
}

long days_between(const Date& from, const Date& to) {
    return days_from_civil(to) - days_from_civil(from);
}

double age_in_months(const Date& birth, const Date& on) {
    const long days = days_between(birth, on);
    if (days < 0)
        throw UsageError(fmt::format("the study date {} comes before the birth date {}",
                                     to_string(on), to_string(birth)));
    return static_cast<double>(days) / kDaysPerMonth;
}

std::string to_string(const Date& d) {
    return fmt::format("{:04d}-{:02d}-{:02d}", d.year, d.month, d.day);
}

}  // namespace boneage
