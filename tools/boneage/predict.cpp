// boneage predict: bone age of each input radiograph with a trained model.
#include "command.hpp"
#include "progress_bar.hpp"

#include <boneage/error.hpp>
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
    std::string format = "text";       // text | json | csv
    InferenceArgs inference;           // --batch, --threads, --precision, --tta
    std::vector<std::string> inputs;   // radiographs
};

// The model to use: --model, else the bundled default; a usage error when neither exists.
std::filesystem::path resolve_model(const std::string& given) {
    if (!given.empty()) return given;
    std::filesystem::path bundled = default_model_path();
    std::error_code ec;
    if (bundled.empty() || !std::filesystem::is_regular_file(bundled, ec))
        throw UsageError("no model given and no bundled model found; pass --model");
    return bundled;
}

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
                 "warnings\n";
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
                  << csv_field(joined(p.warnings, "; ")) << '\n';
    }
}

void print_text(const std::vector<Prediction>& results) {
    for (const Prediction& p : results) {
        if (!p.ok()) {
            std::cout << p.path.string() << ": error: " << p.message << '\n';
            continue;
        }
        double years = std::floor(p.bone_age_months / 12.0);
        std::cout << fmt::format("{}: bone age {:.1f} months ({:.0f} y {:.1f} m)", p.path.string(),
                                 p.bone_age_months, years, p.bone_age_months - 12 * years);
        if (p.male) std::cout << (*p.male ? ", male" : ", female");
        if (p.chronological_age_months)
            std::cout << fmt::format(", chronological age {:.1f} months (difference {:+.1f})",
                                     *p.chronological_age_months,
                                     p.bone_age_months - *p.chronological_age_months);
        std::cout << '\n';
        for (const std::string& w : p.warnings) std::cout << "  warning: " << w << '\n';
    }
}

int run_predict(const PredictArgs& args) {
    const PredictorOptions options = args.inference.predictor_options();  // a bad one fails first
    std::filesystem::path model_file = resolve_model(args.model);
    Predictor predictor(load_model(model_file), options);

    PredictRequest request;
    if (!args.sex.empty()) request.male = args.sex == "male";
    if (args.chronological_age >= 0) request.chronological_age_months = args.chronological_age;

    std::vector<std::filesystem::path> files(args.inputs.begin(), args.inputs.end());
    std::unique_ptr<ProgressBar> bar;
    if (files.size() > 8) bar = std::make_unique<ProgressBar>("predict", files.size());
    auto results = predictor.predict_files(files, request, [&](std::size_t done, std::size_t) {
        if (bar) bar->update(done);
    });
    if (bar) bar->finish();

    if (args.format == "json")
        std::cout << nlohmann::json(results).dump(2) << '\n';
    else if (args.format == "csv")
        print_csv(results);
    else
        print_text(results);

    std::size_t failed = 0;
    for (const Prediction& p : results) failed += p.ok() ? 0 : 1;
    if (failed)
        std::cerr << "boneage predict: " << failed << " of " << results.size()
                  << " inputs failed\n";
    return failed ? kSomeFailed : kOk;
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
                       "chronological age in months, carried into the result")
            ->check(CLI::Range(0.0, 300.0));
        sub.add_option("--format", args->format, "output format: text, json (one array) or csv")
            ->check(CLI::IsMember({"text", "json", "csv"}))
            ->capture_default_str();
        add_inference_options(sub, args->inference);
        sub.add_option("inputs", args->inputs, "radiograph files")->required();
        return [args] { return run_predict(*args); };
    }};

}  // namespace

}  // namespace boneage::cli
