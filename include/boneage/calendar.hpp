// Calendar dates and the chronological age between two of them, in the months bone age is
// reported in.
//
//   boneage::Date birth = boneage::parse_date("2015-03-01");   // or DICOM's "20150301"
//   boneage::Date study = boneage::parse_date("2024-03-01");
//   double months = boneage::age_in_months(birth, study);       // 3288 days / 30.4375 = 108.02
#pragma once

#include <optional>
#include <string>

namespace boneage {

struct Date {
    int year = 0;
    int month = 0;  // 1-12
    int day = 0;    // 1-31, valid for the month
};

// Days in a month on average: 365.25 / 12, the convention of clinical age calculators (the
// Gregorian mean, 30.436875, differs by under a thousandth of a day).
constexpr double kDaysPerMonth = 30.4375;

// "YYYY-MM-DD", or "YYYYMMDD" as DICOM writes dates (DA). Empty for anything else, including
// a day that does not exist (2023-02-29) and years before 1800 or after 2999.
std::optional<Date> try_parse_date(const std::string& text);

// As try_parse_date; throws UsageError naming `what` (e.g. "--birth-date") and the text.
Date parse_date(const std::string& text, const std::string& what = "date");

// Days from `from` to `to`; negative when `to` comes first.
long days_between(const Date& from, const Date& to);

// Chronological age on `on` of someone born on `birth`: days / kDaysPerMonth. Throws
// UsageError when `on` comes before `birth`.
double age_in_months(const Date& birth, const Date& on);

// "YYYY-MM-DD".
std::string to_string(const Date& date);

}  // namespace boneage
