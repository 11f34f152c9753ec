// The cases: listing, one case, its pictures (the heatmap drawn on first request, then kept),
// the reader's review, and the reviewed cases as a labels file for `boneage prepare`.
#include <fmt/format.h>

#include <boneage/error.hpp>
#include <boneage/heatmap.hpp>
#include <boneage/image.hpp>
#include <fstream>
#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>
#include <sstream>

#include "serve/service_impl.hpp"

namespace boneage {

namespace {

// The readers' range is the model's: no hand is outside it.
constexpr double kMaxReviewMonths = kMaxBoneAgeMonths;
constexpr std::size_t kMaxReaderLength = 200;
constexpr std::size_t kMaxCommentLength = 4000;
// The longest side of the upload as the page shows it: a screen's worth, whatever the film.
constexpr int kOriginalSide = 1024;

std::int64_t case_id(const httplib::Request& req) {
    try {
        return std::stoll(req.matches[1].str());
    } catch (const std::exception&) {
        throw UsageError("the case id '" + req.matches[1].str() + "' is not a number");
    }
}

nlohmann::json review_json(const Review& r) {
    return {{"reader", r.reader},
            {"bone_age_months", r.bone_age_months},
            {"agrees", r.agrees},
            {"comment", r.comment},
            {"reviewed_at", r.reviewed_at}};
}

bool send_file(httplib::Response& res, const std::filesystem::path& file, const char* type) {
    std::ifstream in(file, std::ios::binary);
    if (!in) return false;
    std::ostringstream bytes;
    bytes << in.rdbuf();
    res.set_content(bytes.str(), type);
    return true;
}

// The review in `body` for case `c`; UsageError (400) naming what is wrong.
Review parse_review(const std::string& body, const Case& c) {
    nlohmann::json j = nlohmann::json::parse(body, nullptr, /*allow_exceptions=*/false);
    if (!j.is_object())
        throw UsageError(
            "the review must be a JSON object: {\"reader\": ..., "
            "\"bone_age_months\": ..., \"comment\": ...}");
    Review r;
    if (!j.contains("reader") || !j["reader"].is_string() ||
        j["reader"].get<std::string>().empty() ||
        j["reader"].get<std::string>().size() > kMaxReaderLength)
        throw UsageError(
            fmt::format("'reader' must be a name of 1 to {} characters", kMaxReaderLength));
    r.reader = j["reader"].get<std::string>();
    if (j.contains("agrees") && !j["agrees"].is_boolean())
        throw UsageError("'agrees' must be true or false");
    r.agrees = j.value("agrees", false);
    if (j.contains("comment") && !j["comment"].is_null()) {
        if (!j["comment"].is_string() || j["comment"].get<std::string>().size() > kMaxCommentLength)
            throw UsageError(
                fmt::format("'comment' must be text of at most {} characters", kMaxCommentLength));
        r.comment = j["comment"].get<std::string>();
    }
    const bool given = j.contains("bone_age_months") && !j["bone_age_months"].is_null();
    if (!given && !(r.agrees && c.bone_age_months))
        throw UsageError(c.bone_age_months ? "give 'bone_age_months', or 'agrees': true"
                                           : "the case has no bone age to agree with; give "
                                             "'bone_age_months'");
    if (given && (!j["bone_age_months"].is_number() ||
                  !(j["bone_age_months"].get<double>() >= 0 &&
                    j["bone_age_months"].get<double>() <= kMaxReviewMonths)))
        throw UsageError(
            fmt::format("'bone_age_months' must be a number from 0 to {:.0f}", kMaxReviewMonths));
    r.bone_age_months = given ? j["bone_age_months"].get<double>() : *c.bone_age_months;
    return r;
}

}  // namespace

nlohmann::json Service::Impl::case_json(const Case& c) const {
    nlohmann::json j = nlohmann::json::parse(c.result_json);
    j["case_id"] = c.id;
    j["path"] = c.image_file();
    j["original_name"] = c.original_name;
    j["created_at"] = c.created_at;
    const std::string base = fmt::format("/v1/cases/{}", c.id);
    j["original_url"] = base + "/original.png";
    j["image_url"] = c.status == "ok" ? nlohmann::json(base + "/image.png") : nlohmann::json();
    j["heatmap_url"] = c.status == "ok" ? nlohmann::json(base + "/heatmap.png") : nlohmann::json();
    j["review"] = c.review ? review_json(*c.review) : nlohmann::json();
    return j;
}

void Service::Impl::add_case_routes() {
    route("GET", "/v1/cases", "/v1/cases", &Impl::list_cases);
    route("GET", "/v1/cases\\.csv", "/v1/cases.csv", &Impl::labels_csv);
    route("GET", "/v1/cases/(\\d+)", "/v1/cases/{id}", &Impl::one_case);
    route("GET", "/v1/cases/(\\d+)/original\\.png", "/v1/cases/{id}/original.png",
          &Impl::case_original);
    route("GET", "/v1/cases/(\\d+)/image\\.png", "/v1/cases/{id}/image.png", &Impl::case_image);
    route("GET", "/v1/cases/(\\d+)/heatmap\\.png", "/v1/cases/{id}/heatmap.png",
          &Impl::case_heatmap);
    route("PUT", "/v1/cases/(\\d+)/review", "/v1/cases/{id}/review", &Impl::put_review);
}

void Service::Impl::list_cases(const httplib::Request& req, httplib::Response& res) {
    int limit = 20;
    if (req.has_param("limit")) {
        const std::string text = req.get_param_value("limit");
        std::size_t used = 0;
        try {
            limit = std::stoi(text, &used);
        } catch (const std::exception&) {
            used = 0;
        }
        if (used != text.size() || limit < 1 || limit > 500)
            return serve::send_error(res, 400, "limit must be a whole number from 1 to 500");
    }
    nlohmann::json cases = nlohmann::json::array();
    for (const Case& c : store->recent(limit)) cases.push_back(case_json(c));
    serve::send_json(res, {{"cases", cases}});
}

void Service::Impl::labels_csv(const httplib::Request&, httplib::Response& res) {
    res.set_header("Content-Disposition", "attachment; filename=\"labels.csv\"");
    res.set_content(store->reviewed_csv(), "text/csv; charset=utf-8");
}

void Service::Impl::one_case(const httplib::Request& req, httplib::Response& res) {
    std::optional<Case> c = store->get_case(case_id(req));
    if (!c) return serve::send_error(res, 404, "no case " + req.matches[1].str());
    serve::send_json(res, case_json(*c));
}

void Service::Impl::case_original(const httplib::Request& req, httplib::Response& res) {
    const std::int64_t id = case_id(req);
    std::optional<Case> c = store->get_case(id);
    if (!c) return serve::send_error(res, 404, "no case " + std::to_string(id));
    // Decoded here rather than sent as stored: a browser shows neither DICOM nor 16-bit TIFF.
    cv::Mat grey = to_8bit(read_radiograph(store->images_dir() / c->image_file()).pixels);
    const int longest = std::max(grey.cols, grey.rows);
    if (longest > kOriginalSide) {
        const double scale = double(kOriginalSide) / longest;
        cv::resize(grey, grey, cv::Size(), scale, scale, cv::INTER_AREA);
    }
    std::vector<unsigned char> png;
    if (!cv::imencode(".png", grey, png))
        return serve::send_error(res, 500, fmt::format("case {}'s upload could not be drawn", id));
    res.set_content(reinterpret_cast<const char*>(png.data()), png.size(), "image/png");
}

void Service::Impl::case_image(const httplib::Request& req, httplib::Response& res) {
    const std::int64_t id = case_id(req);
    if (!send_file(res, store->images_dir() / fmt::format("{}.input.png", id), "image/png"))
        serve::send_error(res, 404,
                          fmt::format("case {} has no preprocessed image (no such case, or its "
                                      "input was rejected)",
                                      id));
}

void Service::Impl::case_heatmap(const httplib::Request& req, httplib::Response& res) {
    const std::int64_t id = case_id(req);
    std::optional<Case> c = store->get_case(id);
    const std::filesystem::path dir = store->images_dir();
    const std::filesystem::path input = dir / fmt::format("{}.input.png", id);
    const std::filesystem::path picture = dir / fmt::format("{}.heatmap.png", id);
    if (!c || c->status != "ok" || !std::filesystem::exists(input))
        return serve::send_error(
            res, 404,
            fmt::format("case {} has no heatmap (no such case, or its input was rejected)", id));
    if (!std::filesystem::exists(picture)) draw_heatmap(*c, input, picture);  // then kept
    if (!send_file(res, picture, "image/png"))
        serve::send_error(res, 500, fmt::format("the heatmap of case {} could not be read", id));
}

void Service::Impl::draw_heatmap(const Case& c, const std::filesystem::path& input,
                                 const std::filesystem::path& picture) {
    const std::string caption =
        fmt::format("bone age {:.0f} months", c.bone_age_months.value_or(0));
    auto draw = [&](const Predictor& p) {
        cv::Mat image = cv::imread(input.string(), cv::IMREAD_GRAYSCALE);
        if (image.empty()) throw Error(ErrorKind::NotAnImage, input, "cannot be read");
        cv::Mat png = render_heatmap(image, saliency(p.model(), image, c.male).map, caption);
        // Whole or not at all: two requests drawing it at once never serve half a file.
        write_image(picture, png);
    };
    worker->run(draw).get();
}

void Service::Impl::put_review(const httplib::Request& req, httplib::Response& res) {
    const std::int64_t id = case_id(req);
    std::optional<Case> c = store->get_case(id);
    if (!c) return serve::send_error(res, 404, "no case " + std::to_string(id));
    const Review review = parse_review(req.body, *c);
    if (!store->save_review(id, review))
        return serve::send_error(res, 404, "no case " + std::to_string(id));
    serve::send_json(res, case_json(*store->get_case(id)));
}

}  // namespace boneage
