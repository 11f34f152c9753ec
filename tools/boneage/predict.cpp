// boneage predict: bone age of each input radiograph with a trained model.
#include "build_info.hpp"
#include "command.hpp"
#include "progress_bar.hpp"

#include <boneage/calendar.hpp>
#include <boneage/dicom_sr.hpp>
#include <boneage/error.hpp>
#include <boneage/fhir.hpp>
#include <boneage/model.hpp>
#include <boneage/predict.hpp>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <cmath>
#include <iostream>
#include <memory>
#include <optional>

namespace boneage::cli {

namespace {

struct PredictArgs {
    std::string model;                 // model file; empty: the bundled default
    std::string sex;                   // "male" | "female" | empty (unknown)
    double chronological_age = -1;     // months; < 0: not given
    std::string birth_date;            // YYYY-MM-DD; with study_date, instead of the age
    std::string study_date;            // YYYY-MM-DD; empty: each DICOM's StudyDate
    std::string format = "text";       // text | json | csv | fhir
    std::string dicom_sr;              // folder for a structured report per DICOM input
    std::string heatmap;               // folder for a heatmap picture per input that succeeded
    InferenceArgs inference;           // --batch, --threads, --precision, --tta
    std::vector<std::string> inputs;   // radiographs
};

std::string csv_field(const std::string& text) {
    if (text.find_first_of(",\"\n\r") == std::string::npos) return text;
    std::string out = "\"";
    for (char c : text) out += c == '"' ? std::string("\"\"") : std::string(1, c);
    return out + "\"";
}

std::string joined(const std::vector<std::string>& items, const char* separator) {
    std::string out;
    for (const std::string& s : items) out += (out.empty() ? "" : separator) + s;
    return out;
}

std::string optional_number(const std::optional<double>& v, const char* format = "{:.2f}") {
    return v ? fmt::format(fmt::runtime(format), *v) : std::string();
}

void print_csv(const std::vector<Prediction>& results) {
    std::cout << "path,bone_age_months,status,message,raw_months,male,sex_averaged,"
                 "chronological_age_months,z_score,box_x,box_y,box_w,box_h,method,confidence,"
                 "warnings,difference_months,reference_sd_months,interpretation,z_score_note,"
                 "heatmap,hand_score\n";
    for (const Prediction& p : results) {
        bool ok = p.ok();
        const cv::Rect& b = p.hand.box;
        std::cout << csv_field(p.path.string()) << ','
                  << (ok ? fmt::format("{:.2f}", p.bone_age_months) : "") << ',' << p.status
                  << ',' << csv_field(p.message) << ','
                  << (ok ? fmt::format("{:.3f}", p.raw_months) : "") << ','
                  << (p.male ? (*p.male ? "male" : "female") : "") << ','
                  << (p.sex_averaged ? "true" : "false") << ','
                  << optional_number(p.chronological_age_months) << ','
                  << optional_number(p.z_score) << ','
                  << (ok ? fmt::format("{},{},{},{}", b.x, b.y, b.width, b.height) : ",,,")
                  << ',' << csv_field(p.hand.method) << ','
                  << (ok ? fmt::format("{:.3f}", p.hand.confidence) : "") << ','
                  << csv_field(joined(p.warnings, "; ")) << ','
                  << optional_number(p.difference_months()) << ','
                  << optional_number(p.reference_sd_months) << ',' << p.interpretation << ','
                  << csv_field(p.z_score_note) << ',' << csv_field(p.heatmap.string()) << ','
                  << optional_number(p.hand_score, "{:.4f}") << '\n';
    }
}

void print_text(const std::vector<Prediction>& results) {
    for (const Prediction& p : results) {
        if (p.status == "rejected") {
            std::cout << fmt::format("{}: rejected: {} (hand score {:.2f}); no bone age\n", p.path.string(),
                                     p.message, p.hand_score.value_or(0.0));
            continue;
        }
        if (!p.ok()) {
            std::cout << p.path.string() << ": error: " << p.message << '\n';
            continue;
        }
        double years = std::floor(p.bone_age_months / 12.0);
        std::cout << fmt::format("{}: bone age {:.1f} months ({:.0f} y {:.1f} m)", p.path.string(),
                                 p.bone_age_months, years, p.bone_age_months - 12 * years);
        if (p.male) std::cout << (*p.male ? ", male" : ", female");
        if (p.chronological_age_months)
            std::cout << fmt::format(", chronological age {:.1f} months: {:+.1f} months",
                                     *p.chronological_age_months, *p.difference_months());
        if (p.z_score)
            std::cout << fmt::format(", Z {:+.2f} (SD {:.2f}), {}", *p.z_score,
                                     *p.reference_sd_months, p.interpretation);
        std::cout << '\n';
        if (!p.z_score_note.empty()) std::cout << "  note: " << p.z_score_note << '\n';
        for (const std::string& w : p.warnings) std::cout << "  warning: " << w << '\n';
        if (!p.heatmap.empty()) std::cout << "  heatmap: " << p.heatmap.string() << '\n';
    }
}

// What the command line says about the patients; dates checked here, before any work.
PredictRequest request_from(const PredictArgs& args) {
    PredictRequest request;
    if (!args.sex.empty()) request.male = args.sex == "male";
    if (args.chronological_age >= 0) request.chronological_age_months = args.chronological_age;
    const bool dates = !args.birth_date.empty() || !args.study_date.empty();
    if (dates && request.chronological_age_months)
        throw UsageError("give --chronological-age or --birth-date/--study-date, not both");
    if (!args.birth_date.empty())
        request.birth_date = to_string(parse_date(args.birth_date, "--birth-date"));
    if (!args.study_date.empty())
        request.study_date = to_string(parse_date(args.study_date, "--study-date"));
    if (request.birth_date && request.study_date)
        age_in_months(parse_date(*request.birth_date), parse_date(*request.study_date));
    request.keep_images = !args.heatmap.empty();  // the heatmaps are drawn on them
    return request;
}

ReportSource report_source(const std::filesystem::path& model_file, const LoadedModel& model) {
    return {model_file.filename().string(), model.net->config().arch,
            fmt::format("boneage {} ({})", build_version(), build_commit())};
}

// One structured report per DICOM input that has a bone age, OUT/<stem>.sr.dcm. Returns how
// many could not be written (each reported on stderr).
std::size_t write_reports(const std::filesystem::path& folder,
                          const std::vector<Prediction>& results, const ReportSource& source) {
    std::error_code ec;
    std::filesystem::create_directories(folder, ec);
    if (ec) throw Error(ErrorKind::NotFound, folder, "could not be created: " + ec.message());
    std::size_t failed = 0;
    for (const Prediction& p : results) {
        if (!p.ok()) continue;  // its error is reported with the results
        if (p.source.format != "dicom") {
            std::cerr << "boneage predict: warning: " << p.path.string()
                      << " is not DICOM; no structured report\n";
            continue;
        }
        try {
            write_bone_age_sr(folder / (p.path.stem().string() + ".sr.dcm"), p, source);
        } catch (const Error& e) {
            std::cerr << "boneage predict: " << e.what() << '\n';
            ++failed;
        }
    }
    return failed;
}

int run_predict(const PredictArgs& args) {
    const PredictorOptions options = args.inference.predictor_options();  // a bad one fails first
    const PredictRequest request = request_from(args);
    std::filesystem::path model_file = resolve_model(args.model);
    Predictor predictor(load_model(model_file), options);

    std::vector<std::filesystem::path> files(args.inputs.begin(), args.inputs.end());
    std::unique_ptr<ProgressBar> bar;
    if (files.size() > 8) bar = std::make_unique<ProgressBar>("predict", files.size());
    auto results = predictor.predict_files(files, request, [&](std::size_t done, std::size_t) {
        if (bar) bar->update(done);
    });
    if (bar) bar->finish();
    if (!args.heatmap.empty()) write_heatmaps(predictor.model(), results, args.heatmap);

    const ReportSource source = report_source(model_file, predictor.model());
    if (args.format == "json")
        std::cout << nlohmann::json(results).dump(2) << '\n';
    else if (args.format == "fhir")
        std::cout << fhir_document(results, source).dump(2) << '\n';
    else if (args.format == "csv")
        print_csv(results);
    else
        print_text(results);

    std::size_t failed = 0, rejected = 0;
    if (!args.dicom_sr.empty()) failed += write_reports(args.dicom_sr, results, source);
    for (const Prediction& p : results) {
        rejected += p.status == "rejected" ? 1 : 0;
        failed += p.status == "error" ? 1 : 0;
    }
    if (rejected)
        std::cerr << "boneage predict: " << rejected << " of " << results.size()
                  << " inputs rejected as not whole hand radiographs (--accept-all reads them anyway)\n";
    if (failed)
        std::cerr << "boneage predict: " << failed << " of " << results.size()
                  << " inputs failed\n";
    return failed || rejected ? kSomeFailed : kOk;
}

const Command predict_command{
    "predict", "Bone age in months of each radiograph (PNG, JPEG, TIFF, DICOM)",
    [](CLI::App& sub) -> std::function<int()> {
        auto args = std::make_shared<PredictArgs>();
        sub.add_option("--model", args->model,
                       "model file (default: $BONEAGE_MODEL or the bundled models/default.bin)")
            ->check(CLI::ExistingFile);
        sub.add_option("--sex", args->sex,
                       "patient's sex; without it a model that uses sex averages both")
            ->check(CLI::IsMember({"male", "female"}));
        sub.add_option("--chronological-age", args->chronological_age,
                       "chronological age in months: the Z-score against the Greulich-Pyle SD")
            ->check(CLI::Range(0.0, 300.0));
        sub.add_option("--birth-date", args->birth_date,
                       "birth date YYYY-MM-DD; with --study-date (or a DICOM's StudyDate) it gives "
                       "the chronological age");
        sub.add_option("--study-date", args->study_date,
                       "study date YYYY-MM-DD (default: each DICOM's StudyDate)");
        sub.add_option("--format", args->format,
                       "output format: text, json (one array), csv or fhir (an R4 Observation; a "
                       "Bundle for several inputs)")
            ->check(CLI::IsMember({"text", "json", "csv", "fhir"}))
            ->capture_default_str();
        sub.add_option("--dicom-sr", args->dicom_sr,
                       "folder for a DICOM structured report per DICOM input, <stem>.sr.dcm");
        sub.add_option("--heatmap", args->heatmap,
                       "folder for a picture of where the network looked (Grad-CAM) per input, "
                       "<stem>.heatmap.png");
        add_inference_options(sub, args->inference);
        sub.add_option("inputs", args->inputs, "radiograph files")->required();
        return [args] { return run_predict(*args); };
    }};

}  // namespace

}  // namespace boneage::cli
