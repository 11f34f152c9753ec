// The predictor: a model file's own preprocessing, then the network prepared once by FastModel
// (in the precision asked for), in batches, with per-input failures kept per input.
#include <boneage/predict.hpp>

#include <boneage/bone_age_reference.hpp>
#include <boneage/build_info.hpp>
#include <boneage/calendar.hpp>
#include <boneage/error.hpp>
#include <boneage/hand_detector.hpp>
#include <boneage/hand_gate.hpp>
#include <boneage/image.hpp>
#include <boneage/parallel.hpp>

#include "infer/preprocess_ahead.hpp"

#include <fmt/format.h>
#include <nlohmann/json.hpp>
#include <torch/torch.h>

#include <algorithm>
#include <cmath>
#include <exception>

namespace boneage {

namespace {

// One forward pass on `size` px images already on the host; returns N months.
std::vector<double> forward(FastModel& fast, const std::vector<const std::uint8_t*>& images,
                            int size, const std::vector<float>& sex) {
    // The same resize training applied when the model's input differs from the cache's.
    torch::Tensor x = resize_batch(images_to_tensor(images, size), fast.config().input_size);
    torch::Tensor s = torch::tensor(sex, torch::kFloat32);
    torch::Tensor y = fast.infer(x, s).reshape({-1}).to(torch::kCPU, torch::kFloat64).contiguous();
    if (y.size(0) != static_cast<std::int64_t>(images.size()))
        throw Error(ErrorKind::Internal, fmt::format("the model returned {} outputs for {} images",
                                                     y.size(0), images.size()));
    const double* p = y.data_ptr<double>();
    return std::vector<double>(p, p + y.size(0));
}

}  // namespace

Predictor::Predictor(LoadedModel model, PredictorOptions options)
    : model_(std::move(model)), options_(options) {
    if (!model_.net) throw Error(ErrorKind::BadModel, "the predictor was given no network");
    if (model_.net->config().input_size <= 0 || model_.meta.preprocess.output_size <= 0)
        throw Error(ErrorKind::BadModel,
                    fmt::format("the model takes {} px inputs from {} px preprocessed images",
                                model_.net->config().input_size,
                                model_.meta.preprocess.output_size));
    if (options_.crop) model_.meta.preprocess.detector = *options_.crop;
    finder_ = hand_finder_for(settings());
    options_.batch = std::max(1, options_.batch);
    if (options_.views == 0) options_.views = model_.meta.views;
    tta_views(options_.views);  // a bad count fails here, before any work
    model_.net->eval();
    fast_ = std::make_unique<FastModel>(model_.net, options_.precision);
    provenance_.model_file = model_.file.filename().string();
    provenance_.model_sha256 = model_.sha256;
    provenance_.model_version = model_.meta.model_version;
    provenance_.preprocess_version = model_.meta.preprocess_version;
    provenance_.build_commit = build_commit();
    provenance_.precision = to_string(precision());
    provenance_.crop_method = crop_method(settings());
}

Precision Predictor::precision() const { return fast_->precision(); }

std::vector<double> Predictor::predict_preprocessed(const std::vector<const std::uint8_t*>& images,
                                                    const std::vector<bool>& male) {
    if (!male.empty() && male.size() != images.size())
        throw Error(ErrorKind::Usage, fmt::format("{} sexes given for {} images", male.size(),
                                                  images.size()));
    const int size = image_size();
    const bool average = uses_sex() && male.empty();
    // One reading of a chunk; sex unknown: the mean of both readings, the least wrong answer.
    auto read = [&](const std::vector<const std::uint8_t*>& chunk, std::size_t start) {
        if (average) {
            std::vector<double> as_male =
                forward(*fast_, chunk, size, std::vector<float>(chunk.size(), 1.0f));
            std::vector<double> months =
                forward(*fast_, chunk, size, std::vector<float>(chunk.size(), 0.0f));
            for (std::size_t i = 0; i < months.size(); ++i)
                months[i] = 0.5 * (months[i] + as_male[i]);
            return months;
        }
        std::vector<float> sex(chunk.size(), 0.0f);
        for (std::size_t i = 0; i < chunk.size() && !male.empty(); ++i)
            sex[i] = male[start + i] ? 1.0f : 0.0f;
        return forward(*fast_, chunk, size, sex);
    };
    const std::vector<Augmentation> views = tta_views(options_.views);
    const std::size_t pixels = static_cast<std::size_t>(size) * size;
    std::vector<double> out;
    out.reserve(images.size());
    const std::size_t batch = static_cast<std::size_t>(options_.batch);
    for (std::size_t start = 0; start < images.size(); start += batch) {
        std::size_t end = std::min(images.size(), start + batch);
        std::vector<const std::uint8_t*> chunk(images.begin() + start, images.begin() + end);
        std::vector<double> months = read(chunk, start);  // the first view is the image itself
        std::vector<std::uint8_t> moved(views.size() > 1 ? chunk.size() * pixels : 0);
        for (std::size_t v = 1; v < views.size(); ++v) {
            std::vector<const std::uint8_t*> view(chunk.size());
            for (std::size_t i = 0; i < chunk.size(); ++i) {
                augment_image(chunk[i], size, views[v], moved.data() + i * pixels);
                view[i] = moved.data() + i * pixels;
            }
            std::vector<double> more = read(view, start);
            for (std::size_t i = 0; i < months.size(); ++i) months[i] += more[i];
        }
        for (double& m : months) m /= static_cast<double>(views.size());
        out.insert(out.end(), months.begin(), months.end());
    }
    return out;
}

namespace {

// The chronological age from the birth and study dates, each from the request, else from the
// DICOM header. A date the caller gave that cannot be used is reported in `warnings`.
std::optional<double> age_from_dates(const PredictRequest& request, const DicomIdentity& dicom,
                                     std::vector<std::string>& warnings) {
    const std::string birth = request.birth_date.value_or(dicom.patient_birth_date);
    const std::string study = request.study_date.value_or(dicom.study_date);
    const bool asked = request.birth_date || request.study_date;
    if (birth.empty() || study.empty()) {
        if (asked)
            warnings.push_back(birth.empty() ? "no birth date: chronological age unknown"
                                             : "no study date: chronological age unknown");
        return std::nullopt;
    }
    std::optional<Date> b = try_parse_date(birth), s = try_parse_date(study);
    if (!b || !s) {
        warnings.push_back(fmt::format("the date '{}' is not a date: chronological age "
                                       "unknown", b ? study : birth));
        return std::nullopt;
    }
    if (days_between(*b, *s) < 0) {
        warnings.push_back(fmt::format("the study date {} comes before the birth date {}: "
                                       "chronological age unknown", to_string(*s), to_string(*b)));
        return std::nullopt;
    }
    return age_in_months(*b, *s);
}

// The request for one input: what the caller gave, else what the input's DICOM header says.
PredictRequest for_input(const PredictRequest& request, const DicomIdentity& dicom,
                         std::vector<std::string>& warnings) {
    PredictRequest r = request;
    if (!r.male && (dicom.patient_sex == "M" || dicom.patient_sex == "F"))
        r.male = dicom.patient_sex == "M";
    if (!r.chronological_age_months)
        r.chronological_age_months = age_from_dates(request, dicom, warnings);
    return r;
}

// predict_preprocessed for images of known and unknown sex mixed: those of unknown sex are
// read as both sexes (when the model uses sex), the others as their own.
std::vector<double> predict_mixed(Predictor& predictor,
                                  const std::vector<const std::uint8_t*>& images,
                                  const std::vector<std::optional<bool>>& male) {
    std::vector<const std::uint8_t*> known_images, unknown_images;
    std::vector<bool> known_sex;
    for (std::size_t i = 0; i < images.size(); ++i) {
        if (male[i]) known_sex.push_back(*male[i]);
        (male[i] ? known_images : unknown_images).push_back(images[i]);
    }
    std::vector<double> known = known_images.empty()
                                    ? std::vector<double>()
                                    : predictor.predict_preprocessed(known_images, known_sex);
    std::vector<double> unknown = unknown_images.empty()
                                      ? std::vector<double>()
                                      : predictor.predict_preprocessed(unknown_images);
    std::vector<double> out(images.size());
    std::size_t k = 0, u = 0;
    for (std::size_t i = 0; i < images.size(); ++i) out[i] = male[i] ? known[k++] : unknown[u++];
    return out;
}

}  // namespace

Prediction Predictor::finish(Prediction p, double raw, const PredictRequest& request) const {
    p.status = "ok";
    p.raw_months = raw;
    p.chronological_age_months = request.chronological_age_months;
    p.male = request.male;
    p.provenance = provenance_;
    if (uses_sex()) {
        p.sex_averaged = !request.male.has_value();
        if (p.sex_averaged)
            p.warnings.push_back(
                "sex not given; the model uses it, so this is the mean of the male and female "
                "predictions (pass --sex for a sharper estimate)");
    } else if (request.male) {
        // Said rather than dropped: a reader could take the bone age for a sex-specific one.
        p.sex_ignored = true;
        p.warnings.push_back(
            "sex given, but this model does not use it: the bone age is the same for either sex "
            "(the sex still chooses the reference SD of the Z-score)");
    }
    if (!std::isfinite(raw)) {
        p.status = "error";
        p.message = "the model returned a non-finite value";
        return p;
    }
    p.precision = to_string(precision());
    p.views = options_.views;
    p.bone_age_months = std::clamp(raw, kMinBoneAgeMonths, kMaxBoneAgeMonths);
    if (p.bone_age_months != raw)
        p.warnings.push_back(fmt::format("the model's output {:.1f} months lies outside {:.0f}-{:.0f}; "
                                         "reported clamped",
                                         raw, kMinBoneAgeMonths, kMaxBoneAgeMonths));
    if (p.ok()) {
        AgeAssessment a = assess_bone_age(p.bone_age_months, p.chronological_age_months, p.male);
        p.z_score = a.z_score;
        p.reference_sd_months = a.reference_sd_months;
        p.interpretation = a.interpretation;
        p.z_score_note = a.note;
    }
    return p;
}

namespace {

// Preprocessed pixels of one input, checked to be the model's input size.
cv::Mat checked_input(const Preprocessed& p, int size) {
    if (p.image.type() != CV_8UC1 || p.image.rows != size || p.image.cols != size)
        throw Error(ErrorKind::Internal,
                    fmt::format("preprocessing gave a {}x{} image, the model expects {}x{}",
                                p.image.cols, p.image.rows, size, size));
    return p.image.isContinuous() ? p.image : p.image.clone();
}

Prediction describe(const std::filesystem::path& path, const Radiograph& r, const Preprocessed& p) {
    Prediction out;
    out.path = path;
    out.hand = p.hand;
    out.width = r.pixels.cols;
    out.height = r.pixels.rows;
    out.warnings = p.hand.warnings;
    out.source = r.info;
    return out;
}

// An input the hand gate refused: why, and what was learned reading it; no bone age.
Prediction rejected(const std::filesystem::path& path, const Radiograph& r, const GateVerdict& verdict) {
    Prediction out;
    out.path = path;
    out.status = "rejected";
    out.message = verdict.reason;
    out.hand_score = verdict.hand_score;
    out.warnings = r.info.warnings;  // damage met while reading
    out.width = r.pixels.cols;
    out.height = r.pixels.rows;
    out.source = r.info;
    return out;
}

}  // namespace

std::optional<GateVerdict> Predictor::screen(const Radiograph& radiograph) const {
    if (!options_.gate) return std::nullopt;
    return options_.gate->check(radiograph);
}

Prediction Predictor::predict(const Radiograph& radiograph, const PredictRequest& request) {
    const std::optional<GateVerdict> verdict = screen(radiograph);
    if (verdict && !verdict->accepted) {
        Prediction out = rejected({}, radiograph, *verdict);
        out.provenance = provenance_;
        return out;
    }
    Preprocessed p = preprocess(radiograph, settings(), *finder_);
    cv::Mat input = checked_input(p, image_size());
    Prediction out = describe({}, radiograph, p);
    if (verdict) out.hand_score = verdict->hand_score;
    if (request.keep_images) out.image = input;
    PredictRequest resolved = for_input(request, radiograph.info.dicom, out.warnings);
    double raw = predict_mixed(*this, {input.ptr<std::uint8_t>()}, {resolved.male}).front();
    return finish(std::move(out), raw, resolved);
}

void Predictor::run_chunk(std::size_t start, std::size_t end, std::vector<cv::Mat>& inputs,
                          std::vector<Prediction>& out, const std::vector<PredictRequest>& requests,
                          infer::PreprocessAhead* ahead) {
    // The ok inputs of known and of unknown sex, in input order, and how many of each have run.
    struct Group {
        bool known;
        std::vector<std::size_t> items;
        std::size_t run = 0;
    };
    Group known{true, {}, 0}, unknown{false, {}, 0};
    std::vector<double> raw(end - start, 0.0);
    std::string failure;  // the model's error: every ok input of the chunk fails with it
    const std::size_t batch = static_cast<std::size_t>(options_.batch);
    // The next `count` inputs of `g` through the network: one forward batch (predict_preprocessed
    // batches by options_.batch, so `count` <= batch is one pass), as predict_mixed runs it.
    auto run = [&](Group& g, std::size_t count) {
        if (count == 0 || !failure.empty()) return;
        std::vector<const std::uint8_t*> images;
        std::vector<bool> male;
        for (std::size_t k = g.run; k < g.run + count; ++k) {
            images.push_back(inputs[g.items[k]].ptr<std::uint8_t>());
            if (g.known) male.push_back(*requests[g.items[k]].male);
        }
        auto forward = [&] {
            try {
                std::vector<double> months = predict_preprocessed(images, male);
                for (std::size_t k = 0; k < count; ++k) raw[g.items[g.run + k] - start] = months[k];
            } catch (const std::exception& e) {
                failure = first_line(e.what());
            }
        };
        if (ahead)
            ahead->run_network(forward);
        else
            forward();
        for (std::size_t k = g.run; k < g.run + count; ++k) inputs[g.items[k]].release();
        g.run += count;
    };
    for (std::size_t i = start; i < end; ++i) {
        if (ahead) ahead->wait_for(i);
        if (inputs[i].empty()) continue;
        Group& g = requests[i].male ? known : unknown;
        g.items.push_back(i);
        // With everything prepared at once, the batches run at the chunk's end as before.
        if (ahead && g.items.size() - g.run == batch) run(g, batch);
    }
    for (Group* g : {&known, &unknown})
        while (g->run < g->items.size()) run(*g, std::min(batch, g->items.size() - g->run));
    for (const Group* g : {&known, &unknown})
        for (std::size_t i : g->items) {
            if (failure.empty()) {
                out[i] = finish(std::move(out[i]), raw[i - start], requests[i]);
            } else {
                out[i].status = "error";
                out[i].message = "the model failed: " + failure;
            }
        }
}

std::vector<Prediction> Predictor::predict_files(
    const std::vector<std::filesystem::path>& files, const PredictRequest& request,
    const std::function<void(std::size_t, std::size_t)>& progress) {
    return predict_batch(files, std::vector<PredictRequest>(files.size(), request), progress);
}

std::vector<Prediction> Predictor::predict_batch(
    const std::vector<std::filesystem::path>& files, const std::vector<PredictRequest>& given,
    const std::function<void(std::size_t, std::size_t)>& progress) {
    if (given.size() != files.size())
        throw Error(ErrorKind::Usage, fmt::format("{} requests given for {} files", given.size(),
                                                  files.size()));
    std::vector<Prediction> out(files.size());
    std::vector<PredictRequest> requests = given;  // each input's own sex, age
    std::vector<cv::Mat> inputs(files.size());     // preprocessed, until their batch has run
    // Reads and preprocesses input i into inputs[i], or records why it cannot be read.
    auto prepare = [&](std::size_t i) {
        try {
            Radiograph r = read_radiograph(files[i]);
            const std::optional<GateVerdict> verdict = screen(r);
            if (verdict && !verdict->accepted) {
                out[i] = rejected(files[i], r, *verdict);
                return;
            }
            Preprocessed p = preprocess(r, settings(), *finder_);
            inputs[i] = checked_input(p, image_size());
            out[i] = describe(files[i], r, p);
            if (verdict) out[i].hand_score = verdict->hand_score;
            if (given[i].keep_images) out[i].image = inputs[i];
            requests[i] = for_input(given[i], r.info.dicom, out[i].warnings);
        } catch (const std::exception& e) {
            out[i].path = files[i];
            out[i].status = "error";
            out[i].message = first_line(e.what());
        }
    };
    // Chunks bound the memory held by decoded inputs while keeping every core busy. Within a
    // chunk the inputs of known sex and those of unknown sex each run in batches of
    // options_.batch, in input order (predict_mixed): with or without overlap the batches are
    // the same, so are the answers.
    const std::size_t chunk = std::max<std::size_t>(64, std::size_t(options_.batch));
    std::unique_ptr<infer::PreprocessAhead> ahead;
    if (options_.overlap && files.size() > 1)
        ahead = std::make_unique<infer::PreprocessAhead>(
            files.size(), options_.threads > 0 ? options_.threads : default_thread_count(),
            chunk, prepare);
    for (std::size_t start = 0; start < files.size(); start += chunk) {
        const std::size_t end = std::min(files.size(), start + chunk);
        if (!ahead) {
            parallel_for(end - start, options_.threads, [&](std::size_t k) { prepare(start + k); });
            run_chunk(start, end, inputs, out, requests, nullptr);
        } else {
            run_chunk(start, end, inputs, out, requests, ahead.get());
        }
        if (progress) progress(end, files.size());
    }
    ahead.reset();
    for (Prediction& p : out) p.provenance = provenance_;  // the failed and rejected too
    return out;
}

void to_json(nlohmann::json& j, const Prediction& p) {
    using nlohmann::json;
    j = json::object();
    j["path"] = p.path.string();
    j["status"] = p.status;
    j["message"] = p.message.empty() ? json(nullptr) : json(p.message);
    bool ok = p.ok();
    j["bone_age_months"] = ok ? json(p.bone_age_months) : json(nullptr);
    j["raw_months"] = ok ? json(p.raw_months) : json(nullptr);
    j["male"] = p.male ? json(*p.male) : json(nullptr);
    j["sex_averaged"] = p.sex_averaged;
    j["chronological_age_months"] =
        p.chronological_age_months ? json(*p.chronological_age_months) : json(nullptr);
    j["z_score"] = p.z_score ? json(*p.z_score) : json(nullptr);
    if (ok) {
        const cv::Rect& b = p.hand.box;
        j["box"] = {b.x, b.y, b.width, b.height};
        j["method"] = p.hand.method;
        j["confidence"] = p.hand.confidence;
        j["width"] = p.width;
        j["height"] = p.height;
    } else {
        j["box"] = nullptr;
        j["method"] = nullptr;
        j["confidence"] = nullptr;
        j["width"] = nullptr;
        j["height"] = nullptr;
    }
    j["hand_score"] = p.hand_score ? json(*p.hand_score) : json(nullptr);
    j["warnings"] = p.warnings;
    j["precision"] = p.precision.empty() ? json(nullptr) : json(p.precision);
    j["views"] = ok ? json(p.views) : json(nullptr);
    std::optional<double> difference = p.difference_months();
    j["difference_months"] = difference ? json(*difference) : json(nullptr);
    j["reference_sd_months"] = p.reference_sd_months ? json(*p.reference_sd_months) : json(nullptr);
    j["interpretation"] = p.interpretation.empty() ? json(nullptr) : json(p.interpretation);
    j["z_score_note"] = p.z_score_note.empty() ? json(nullptr) : json(p.z_score_note);
    j["heatmap"] = p.heatmap.empty() ? json(nullptr) : json(p.heatmap.string());
    j["sex_ignored"] = p.sex_ignored;
    const Provenance& v = p.provenance;
    auto text = [](const std::string& s) { return s.empty() ? json(nullptr) : json(s); };
    j["provenance"] = {{"model_file", text(v.model_file)},
                       {"model_sha256", text(v.model_sha256)},
                       {"model_version", text(v.model_version)},
                       {"preprocess_version",
                        v.preprocess_version > 0 ? json(v.preprocess_version) : json(nullptr)},
                       {"build_commit", text(v.build_commit)},
                       {"precision", text(v.precision)},
                       {"crop_method", text(v.crop_method)}};
}

}  // namespace boneage
