// POST /v1/predict: one upload in, one case out. The form is checked before any work; the
// upload is written under a generated name, read by the inference thread, and recorded with its
// images as one case, ok or rejected. A file that cannot be read at all is not a case (422).
#include <fmt/format.h>

#include <boneage/image.hpp>
#include <boneage/calendar.hpp>
#include <boneage/dataset.hpp>
#include <boneage/error.hpp>
#include <future>
#include <opencv2/imgcodecs.hpp>

#include "serve/service_impl.hpp"
#include "serve/upload.hpp"

namespace boneage {

namespace {

std::string field(const httplib::Request& req, const std::string& name) {
    return req.has_file(name) ? req.get_file_value(name).content : std::string();
}

// The patient as the form describes it; UsageError (400) on a value that is not one.
PredictRequest form_request(const httplib::Request& req) {
    PredictRequest r;
    r.keep_images = true;  // the preprocessed hand is kept with the case
    const std::string sex = field(req, "sex");
    if (!sex.empty()) {
        r.male = parse_sex(sex);  // as labels files and the command line write it
        if (!r.male) throw UsageError("sex must be M, F, male or female, not '" + sex + "'");
    }
    const std::string age = field(req, "chronological_age_months");
    if (!age.empty()) {
        std::size_t used = 0;
        double months = -1;
        try {
            months = std::stod(age, &used);
        } catch (const std::exception&) {
        }
        if (used != age.size() || !(months >= 0 && months <= 300))
            throw UsageError(
                "chronological_age_months must be a number of months from 0 to "
                "300, not '" +
                age + "'");
        r.chronological_age_months = months;
    }
    const std::string birth = field(req, "birth_date"), study = field(req, "study_date");
    if ((!birth.empty() || !study.empty()) && r.chronological_age_months)
        throw UsageError("give chronological_age_months or birth_date and study_date, not both");
    if (!birth.empty()) r.birth_date = to_string(parse_date(birth, "birth_date"));
    if (!study.empty()) r.study_date = to_string(parse_date(study, "study_date"));
    if (r.birth_date && r.study_date)
        age_in_months(parse_date(*r.birth_date), parse_date(*r.study_date));  // order checked
    return r;
}

NewCase new_case(const Prediction& p, const std::string& name, const std::string& ext) {
    NewCase c;
    c.original_name = serve::display_name(name);
    c.image_ext = ext;
    c.status = p.status;
    if (p.ok()) c.bone_age_months = p.bone_age_months;
    c.male = p.male;
    c.chronological_age_months = p.chronological_age_months;
    nlohmann::json result = p;
    result["path"] = nullptr;  // the stored file's name is known once the case has an id
    c.result_json = result.dump();
    return c;
}

}  // namespace

void Service::Impl::add_predict_route() {
    route("POST", "/v1/predict", "/v1/predict", &Impl::predict);
}

void Service::Impl::predict(const httplib::Request& req, httplib::Response& res) {
    if (!req.is_multipart_form_data())
        return serve::send_error(res, 415,
                                 "POST /v1/predict takes multipart/form-data with the "
                                 "radiograph in the field 'file'");
    if (!req.has_file("file"))
        return serve::send_error(res, 400, "the form has no 'file' field (the radiograph)");
    const httplib::MultipartFormData& upload = req.get_file_value("file");
    if (upload.content.size() > options.max_upload_bytes)
        return serve::send_error(
            res, 413,
            fmt::format("the file is {:.1f} MB; this service takes at most {:.1f} MB",
                        upload.content.size() / 1048576.0, options.max_upload_bytes / 1048576.0));
    if (upload.content.empty()) return serve::send_error(res, 400, "the file is empty");
    const PredictRequest request = form_request(req);
    const std::string ext = serve::image_extension(upload.content);
    if (ext.empty()) {
        metrics.record_prediction("error");
        return serve::send_error(res, 422, "the file is not a PNG, JPEG, TIFF, BMP or DICOM image");
    }
    read_upload(upload, ext, request, res);
}

void Service::Impl::read_upload(const httplib::MultipartFormData& upload, const std::string& ext,
                                const PredictRequest& request, httplib::Response& res) {
    const std::filesystem::path dir = store->images_dir();
    const std::filesystem::path file = serve::write_upload(dir, upload.content, ext);
    std::future<Prediction> pending;
    try {
        pending = worker->predict(file, request);
    } catch (...) {
        std::filesystem::remove(file);
        throw;
    }
    if (pending.wait_for(options.inference_timeout) != std::future_status::ready)
        return serve::send_error(res, 503, "the model did not answer in time; try again");
    Prediction p = pending.get();
    metrics.record_prediction(p.status);
    if (p.status == "error") {
        std::filesystem::remove(file);
        return serve::send_error(res, 422,
                                 "the file could not be read as a radiograph: " + p.message);
    }
    // The upload and the preprocessed hand take the case's id in the transaction recording it.
    const std::int64_t id = store->add_case(new_case(p, upload.filename, ext), [&](std::int64_t n) {
        std::filesystem::rename(file, dir / fmt::format("{}.{}", n, ext));
        if (!p.image.empty()) write_image(dir / fmt::format("{}.input.png", n), p.image);
    });
    serve::send_json(res, case_json(*store->get_case(id)));
}

}  // namespace boneage
