// boneage predict: bone age of each input radiograph with a trained model.
#include "build_info.hpp"
#include "command.hpp"
#include "progress_bar.hpp"

#include <boneage/calendar.hpp>
#include <boneage/dataset.hpp>
#include <boneage/dicom_sr.hpp>
#include <boneage/error.hpp>
#include <boneage/fhir.hpp>
#include <boneage/model.hpp>
#include <boneage/predict.hpp>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <cmath>
#include <iostream>
#include <memory>
#include <optional>

namespace boneage::cli {

namespace {

struct PredictArgs {
    std::string model;                 // model file; empty: the bundled default
    std::string sex;                   // M, F, male or female in any case (parse_sex); empty: unknown
    double chronological_age = -1;     // months; < 0: not given
    std::string birth_date;            // YYYY-MM-DD; with study_date, instead of the age
    std::string study_date;            // YYYY-MM-DD; empty: each DICOM's StudyDate
    std::string format = "text";       // text | json | csv | fhir
    std::string dicom_sr;              // folder for a structured report per DICOM input
    std::string heatmap;               // folder for a heatmap picture per input that succeeded
    InferenceArgs inference;           // --batch, --threads, --precision, --tta
    std::vector<std::string> inputs;   // radiographs
    std::string manifest;              // CSV path,sex,chronological_age: inputs with their own
                                       // sex and age, instead of `inputs`, --sex and the ages
};

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
                 "heatmap,hand_score,sex_ignored,model_file,model_sha256,model_version,"
                 "preprocess_version,build_commit,precision,crop_method\n";
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
                  << optional_number(p.hand_score, "{:.4f}") << ','
                  << (p.sex_ignored ? "true" : "false") << ','
                  << csv_field(p.provenance.model_file) << ',' << p.provenance.model_sha256 << ','
                  << csv_field(p.provenance.model_version) << ','
                  << p.provenance.preprocess_version << ','
                  << csv_field(p.provenance.build_commit) << ',' << p.provenance.precision << ','
                  << p.provenance.crop_method << '\n';
    }
}

// The predictor records a missing sex on every input it concerns, as JSON and CSV keep it per
// row; the terminal hears it once per run (sex_notice) instead of under every image.
bool about_missing_sex(const Prediction& p, const std::string& message) {
    return !p.male && message.rfind("sex not given", 0) == 0;
}

// One line on what a missing sex cost the run; empty when it cost nothing.
std::string sex_notice(const std::vector<Prediction>& results, bool manifest) {
    std::size_t averaged = 0, no_z_score = 0;
    for (const Prediction& p : results) {
        if (!p.ok() || p.male) continue;
        averaged += p.sex_averaged ? 1 : 0;
        no_z_score += p.chronological_age_months ? 1 : 0;
    }
    std::vector<std::string> costs;
    if (averaged)
        costs.push_back(fmt::format("{} of {} inputs are the mean of the male and female "
                                    "predictions (the model uses sex)",
                                    averaged, results.size()));
    if (no_z_score)
        costs.push_back(fmt::format("{} of {} inputs have no Z-score (the reference SD differs "
                                    "by sex)",
                                    no_z_score, results.size()));
    if (costs.empty()) return {};
    return "sex not given: " + joined(costs, "; ") +
           (manifest ? "; fill the manifest's sex column" : "; pass --sex M|F");
}

// A given sex the model does not take is recorded per input too; the terminal hears it once.
bool about_ignored_sex(const Prediction& p, const std::string& message) {
    return p.sex_ignored && message.rfind("sex given, but", 0) == 0;
}

// After the results, once per run: where they came from and what they are for.
void print_provenance(const Provenance& v, const std::vector<Prediction>& results) {
    const auto ignored = [](const Prediction& p) { return p.sex_ignored; };
    if (std::any_of(results.begin(), results.end(), ignored))
        std::cout << "note: sex given, but this model does not use it: the bone ages are the same "
                     "for either sex (the sex still chooses the reference SD of the Z-score)\n";
    std::cout << fmt::format(
        "model {} (version {}, SHA-256 {}), preprocessing version {}, crop {}, {}; boneage {} "
        "({}); research use, not a medical device\n",
        v.model_file, v.model_version, v.model_sha256, v.preprocess_version, v.crop_method,
        v.precision, build_version(), v.build_commit);
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
        if (!p.z_score_note.empty() && !about_missing_sex(p, p.z_score_note))
            std::cout << "  note: " << p.z_score_note << '\n';
        for (const std::string& w : p.warnings)
            if (!about_missing_sex(p, w) && !about_ignored_sex(p, w))
                std::cout << "  warning: " << w << '\n';
        if (!p.heatmap.empty()) std::cout << "  heatmap: " << p.heatmap.string() << '\n';
    }
}

// What the command line says about the patients; dates checked here, before any work.
PredictRequest request_from(const PredictArgs& args) {
    PredictRequest request;
    if (!args.sex.empty()) request.male = parse_sex(args.sex);
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

ReportSource report_source(const std::filesystem::path& model_file, const Predictor& predictor) {
    return {model_file.filename().string(), predictor.provenance().model_version,
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

// The manifest's inputs, each with `base` plus its own sex and age. A manifest that cannot be
// read is a usage error: nothing has run yet, and the message names the line to fix.
std::vector<PredictRequest> manifest_requests(const std::filesystem::path& manifest,
                                              const PredictRequest& base,
                                              std::vector<std::filesystem::path>& files) {
    std::vector<ManifestRow> rows;
    try {
        rows = read_manifest(manifest);
    } catch (const Error& e) {
        throw UsageError(e.what());
    }
    std::vector<PredictRequest> requests;
    for (const ManifestRow& row : rows) {
        files.push_back(row.path);
        PredictRequest r = base;
        r.male = row.male;
        r.chronological_age_months = row.chronological_age_months;
        requests.push_back(std::move(r));
    }
    return requests;
}

int run_predict(const PredictArgs& args) {
    if (args.inputs.empty() && args.manifest.empty())
        throw UsageError("predict: no inputs; give radiograph files, or --manifest FILE");
    const PredictorOptions options = args.inference.predictor_options();  // a bad one fails first
    const PredictRequest request = request_from(args);
    std::vector<std::filesystem::path> files(args.inputs.begin(), args.inputs.end());
    std::vector<PredictRequest> requests;  // one per input with a manifest; else `request` for all
    if (!args.manifest.empty()) requests = manifest_requests(args.manifest, request, files);
    std::filesystem::path model_file = resolve_model(args.model);
    Predictor predictor(load_inference_model(model_file, "predict"), options);

    std::unique_ptr<ProgressBar> bar;
    if (files.size() > 8) bar = std::make_unique<ProgressBar>("predict", files.size());
    auto progress = [&](std::size_t done, std::size_t) {
        if (bar) bar->update(done);
    };
    auto results = requests.empty() ? predictor.predict_files(files, request, progress)
                                    : predictor.predict_batch(files, requests, progress);
    if (bar) bar->finish();
    if (!args.heatmap.empty()) write_heatmaps(predictor.model(), results, args.heatmap);

    const ReportSource source = report_source(model_file, predictor);
    if (args.format == "json")
        std::cout << nlohmann::json(results).dump(2) << '\n';
    else if (args.format == "fhir")
        std::cout << fhir_document(results, source).dump(2) << '\n';
    else if (args.format == "csv")
        print_csv(results);
    else {
        print_text(results);
        print_provenance(predictor.provenance(), results);
    }

    std::size_t failed = 0, rejected = 0;
    if (!args.dicom_sr.empty()) failed += write_reports(args.dicom_sr, results, source);
    for (const Prediction& p : results) {
        rejected += p.status == "rejected" ? 1 : 0;
        failed += p.status == "error" ? 1 : 0;
    }
    if (std::string notice = sex_notice(results, !args.manifest.empty()); !notice.empty())
        std::cerr << "boneage predict: warning: " << notice << '\n';
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
        CLI::Option* sex =
            sub.add_option("--sex", args->sex,
                           "patient's sex, M or F (or male/female, any case), for every input; "
                           "without it a model that uses sex averages both")
                ->check(CLI::Validator(
                    [](std::string& text) {
                        return parse_sex(text) ? std::string()
                                               : "'" + text + "' is not one of M, F, male or female";
                    },
                    "M|F", "sex"));
        CLI::Option* age =
            sub.add_option("--chronological-age", args->chronological_age,
                           "chronological age in months, for every input: the Z-score against the "
                           "Greulich-Pyle SD")
                ->check(CLI::Range(0.0, 300.0));
        CLI::Option* birth =
            sub.add_option("--birth-date", args->birth_date,
                           "birth date YYYY-MM-DD; with --study-date (or a DICOM's StudyDate) it "
                           "gives the chronological age");
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
        CLI::Option* inputs = sub.add_option("inputs", args->inputs, "radiograph files");
        // Per-input values and per-run ones would contradict each other; refused, not ranked.
        sub.add_option("--manifest", args->manifest,
                       "CSV of inputs of different patients, header path,sex,chronological_age: "
                       "sex M/F or empty, age in months or empty, paths relative to the CSV's "
                       "folder; instead of input files, --sex, --chronological-age and "
                       "--birth-date")
            ->check(CLI::ExistingFile)
            ->excludes(inputs)
            ->excludes(sex)
            ->excludes(age)
            ->excludes(birth);
        return [args] { return run_predict(*args); };
    }};

}  // namespace

}  // namespace boneage::cli
