// boneage bench: how fast preprocessing, inference and training run on this machine, printed
// as llama-bench does: a markdown table (csv or json on request) of mean ± sd over --reps
// repetitions after --warmup untimed runs, with the build and the CPU in the footer.
#include "build_info.hpp"
#include "command.hpp"

#include <boneage/autocast.hpp>
#include <boneage/cpu_features.hpp>
#include <boneage/error.hpp>
#include <boneage/fast_path.hpp>
#include <boneage/image.hpp>
#include <boneage/memory_format.hpp>
#include <boneage/model.hpp>
#include <boneage/parallel.hpp>
#include <boneage/preprocess.hpp>
#include <boneage/synth.hpp>
#include <boneage/train.hpp>

#include <fmt/format.h>
#include <nlohmann/json.hpp>
#include <sys/resource.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <filesystem>
#include <functional>
#include <iostream>
#include <memory>

namespace boneage::cli {

namespace {

struct BenchArgs {
    std::vector<std::string> tests = {"preprocess", "infer", "train"};  // rows to run
    std::vector<std::string> archs = {"shallow", "resnet50", "inceptionv4"};
    std::vector<std::string> precisions = {"fp32", "bf16"};  // bf16 only where native; eager: net's own forward
    std::vector<int> infer_batches = {1, 8};  // images per inference call
    int train_batch = 8;                      // images per training step
    int input_size = 320;                     // network input side, pixels
    int reps = 5;                             // timed repetitions
    int warmup = 1;                           // untimed runs before them
    int threads = 0;                          // torch and preprocessing threads; 0: all cores
    int images = 16;                          // phantoms per preprocessing repetition
    std::string images_dir;                   // preprocess these PNG files (decode included) instead
    std::string format = "md";                // md | csv | json
};

struct Row {
    std::string test, arch, precision, mode, unit;
    int batch = 0;
    double mean = 0.0, sd = 0.0;
    int n = 0;
    double peak_mib = 0.0;  // the process's peak resident memory after this row
};

double peak_rss_mib() {
    rusage usage{};
    getrusage(RUSAGE_SELF, &usage);
    return static_cast<double>(usage.ru_maxrss) / 1024.0;  // kilobytes on Linux
}

// Runs fn `warmup` times, then `reps` times, and returns the wall times in ms.
std::vector<double> time_ms(int warmup, int reps, const std::function<void()>& fn) {
    for (int i = 0; i < warmup; ++i) fn();
    std::vector<double> ms;
    for (int i = 0; i < reps; ++i) {
        auto t0 = std::chrono::steady_clock::now();
        fn();
        ms.push_back(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count());
    }
    return ms;
}

Row summarise(Row row, const std::vector<double>& values) {
    double sum = 0.0;
    for (double v : values) sum += v;
    row.n = static_cast<int>(values.size());
    row.mean = sum / row.n;
    double ss = 0.0;
    for (double v : values) ss += (v - row.mean) * (v - row.mean);
    row.sd = row.n > 1 ? std::sqrt(ss / (row.n - 1)) : 0.0;
    row.peak_mib = peak_rss_mib();
    return row;
}

// Images per second of the whole preprocessing chain over every core: in-memory 1500x2000
// phantoms, or with --images the files, decoding included (what the Python peer times).
Row bench_preprocess(const BenchArgs& a) {
    PreprocessSettings settings;
    std::vector<Radiograph> inputs;
    std::vector<std::filesystem::path> files;
    if (a.images_dir.empty()) {
        SynthOptions o;
        o.width = 1500;
        o.height = 2000;
        for (const auto& label : phantom_labels(a.images, 1)) {
            Radiograph r;
            r.pixels = make_phantom(label, phantom_seed(1, static_cast<int>(inputs.size())), o).image;
            inputs.push_back(std::move(r));
        }
    } else {
        for (const auto& e : std::filesystem::directory_iterator(a.images_dir))
            if (e.path().extension() == ".png") files.push_back(e.path());
        std::sort(files.begin(), files.end());
        if (files.empty()) throw UsageError("no .png files in " + a.images_dir);
    }
    const std::size_t count = files.empty() ? inputs.size() : files.size();
    auto ms = time_ms(a.warmup, a.reps, [&] {
        parallel_for(count, a.threads, [&](std::size_t i) {
            if (files.empty())
                preprocess(inputs[i], settings);
            else
                preprocess(read_radiograph(files[i]), settings);
        });
    });
    std::vector<double> rates;
    for (double t : ms) rates.push_back(1000.0 * static_cast<double>(count) / t);
    Row row;
    row.test = files.empty() ? "preprocess 1500x2000" : "preprocess files";
    row.arch = "-";
    row.precision = "-";
    row.mode = files.empty() ? "in memory" : "decode+";
    row.unit = "images/s";
    row.batch = static_cast<int>(count);
    return summarise(row, rates);
}

BoneAgeNet bench_model(const BenchArgs& a, const std::string& arch) {
    torch::manual_seed(1);
    ModelConfig c;
    c.arch = arch;
    c.input_size = a.input_size;
    c.label_offset = 120.0;
    c.label_scale = 40.0;
    if (arch == "resnet18") {  // as the bundled model: the compact head, with sex
        c.head = "gap";
        c.use_sex = true;
    }
    return make_model(c);
}

Row bench_infer(const BenchArgs& a, const std::string& arch, const std::string& precision, int batch) {
    BoneAgeNet net = bench_model(a, arch);
    net->eval();
    torch::Tensor images = torch::rand({batch, 1, a.input_size, a.input_size});
    torch::Tensor sex = torch::ones({batch});
    std::function<void()> run;
    Row row;
    std::unique_ptr<FastModel> fast;
    if (precision == "eager") {
        row.mode = "forward";
        run = [&] {
            torch::NoGradGuard no_grad;
            net->forward(images, sex);
        };
    } else {
        fast = std::make_unique<FastModel>(net, parse_precision(precision));
        row.mode = fast->mode();
        run = [&] { fast->infer(images, sex); };
    }
    std::vector<double> ms = time_ms(a.warmup, a.reps, run);
    for (double& t : ms) t /= batch;
    row.test = "infer";
    row.arch = arch;
    row.precision = precision;
    row.unit = "ms/image";
    row.batch = batch;
    return summarise(row, ms);
}

// One step of the paper's recipe: forward, MSLE + L2, backward, Adam. bf16: autocast with fp32
// master weights and a channels-last trunk.
Row bench_train(const BenchArgs& a, const std::string& arch, const std::string& precision) {
    BoneAgeNet net = bench_model(a, arch);
    net->train();
    const bool bf16 = precision == "bf16";
    if (bf16) use_channels_last(*net);
    torch::optim::Adam adam(net->parameters(), torch::optim::AdamOptions(1e-3));
    const int b = a.train_batch;
    torch::Tensor images = torch::rand({b, 1, a.input_size, a.input_size});
    if (bf16) images = channels_last(images);
    torch::Tensor sex = torch::ones({b});
    torch::Tensor target = torch::rand({b}) * 200 + 10;
    auto step = [&] {
        adam.zero_grad();
        torch::Tensor pred;
        {
            Bf16Autocast autocast(bf16);
            pred = net->forward(images, sex).to(torch::kFloat32);
        }
        torch::Tensor loss = msle_loss(pred, target) + l2_penalty(*net, 0.01);
        loss.backward();
        adam.step();
    };
    Row row;
    row.test = "train";
    row.arch = arch;
    row.precision = precision;
    row.mode = bf16 ? "autocast" : "forward";
    row.unit = "ms/step";
    row.batch = b;
    return summarise(row, time_ms(a.warmup, a.reps, step));
}

std::string mean_sd(const Row& r) {
    const int digits = r.mean >= 100 ? 1 : 2;
    return fmt::format("{:.{}f} ± {:.{}f}", r.mean, digits, r.sd, digits);
}

void print(const BenchArgs& a, const std::vector<Row>& rows, int threads) {
    const std::string commit = build_commit(), cpu = cpu_description();
    if (a.format == "json") {
        nlohmann::json out = nlohmann::json::array();
        for (const Row& r : rows)
            out.push_back({{"test", r.test}, {"arch", r.arch}, {"precision", r.precision},
                           {"mode", r.mode}, {"batch", r.batch}, {"unit", r.unit},
                           {"mean", r.mean}, {"sd", r.sd}, {"n", r.n}, {"peak_mib", r.peak_mib},
                           {"threads", threads}, {"commit", commit}, {"cpu", cpu}});
        std::cout << out.dump(2) << "\n";
        return;
    }
    if (a.format == "csv") {
        std::cout << "test,arch,precision,mode,batch,threads,unit,mean,sd,n,peak_mib\n";
        for (const Row& r : rows)
            std::cout << fmt::format("{},{},{},{},{},{},{},{:.4f},{:.4f},{},{:.0f}\n", r.test, r.arch,
                                     r.precision, r.mode, r.batch, threads, r.unit, r.mean, r.sd,
                                     r.n, r.peak_mib);
        return;
    }
    std::cout << "| test | arch | precision | mode | batch | threads | unit | mean ± sd | peak MiB |\n"
                 "| --- | --- | --- | --- | ---: | ---: | --- | ---: | ---: |\n";
    for (const Row& r : rows)
        std::cout << fmt::format("| {} | {} | {} | {} | {} | {} | {} | {} | {:.0f} |\n", r.test,
                                 r.arch, r.precision, r.mode, r.batch, threads, r.unit, mean_sd(r),
                                 r.peak_mib);
    std::cout << fmt::format("\nbuild: {} | cpu: {} | reps {} after {} warm-up\n", commit, cpu,
                             a.reps, a.warmup);
}

bool wants(const std::vector<std::string>& list, const std::string& item) {
    return std::find(list.begin(), list.end(), item) != list.end();
}

int run_bench(const BenchArgs& a) {
    for (const auto& t : a.tests)
        if (t != "preprocess" && t != "infer" && t != "train")
            throw UsageError("unknown test '" + t + "' (expected preprocess, infer or train)");
    for (const auto& p : a.precisions)
        if (p != "eager") parse_precision(p);
    const int threads = a.threads > 0 ? a.threads : default_thread_count();
    torch::set_num_threads(threads);
    std::vector<std::string> precisions;
    for (const auto& p : a.precisions) {
        if (resolve(p == "eager" ? Precision::Fp32 : parse_precision(p)) == Precision::Bf16 &&
            !native_bf16()) {
            std::cerr << "bench: skipping bf16: this CPU has no native bf16\n";
            continue;
        }
        precisions.push_back(p);
    }
    std::vector<Row> rows;
    auto add = [&](Row r) {
        std::cerr << fmt::format("bench: {} {} {} b{}: {} {}\n", r.test, r.arch, r.precision,
                                 r.batch, mean_sd(r), r.unit);
        rows.push_back(std::move(r));
    };
    if (wants(a.tests, "preprocess")) add(bench_preprocess(a));
    for (const auto& arch : a.archs) {
        if (wants(a.tests, "infer"))
            for (const auto& p : precisions)
                for (int b : a.infer_batches) add(bench_infer(a, arch, p, b));
        if (wants(a.tests, "train")) {
            // Training has no fast path: eager and fp32 are the same step.
            std::vector<std::string> train_precisions;
            for (const auto& p : precisions) {
                std::string q = p == "eager" || p == "auto" ? to_string(resolve(Precision::Fp32)) : p;
                if (p == "auto") q = to_string(resolve(Precision::Auto));
                if (!wants(train_precisions, q)) train_precisions.push_back(q);
            }
            for (const auto& p : train_precisions) add(bench_train(a, arch, p));
        }
    }
    print(a, rows, threads);
    return kOk;
}

const Command bench_command{
    "bench", "Time preprocessing, inference and training on this machine (markdown, csv or json)",
    [](CLI::App& sub) -> std::function<int()> {
        auto a = std::make_shared<BenchArgs>();
        sub.add_option("--tests", a->tests, "Rows to run: preprocess, infer, train")
            ->delimiter(',')
            ->capture_default_str();
        sub.add_option("--arch", a->archs, "Architectures: shallow, resnet50, inceptionv4, resnet18 (as bundled: gap, sex)")
            ->delimiter(',')
            ->check(CLI::IsMember({"shallow", "resnet50", "inceptionv4", "resnet18"}))
            ->capture_default_str();
        sub.add_option("--precision", a->precisions,
                       "Precisions: fp32, bf16 (skipped without native bf16), auto, eager (the "
                       "net's own fp32 forward, no fast path)")
            ->delimiter(',')
            ->capture_default_str();
        sub.add_option("--batch", a->infer_batches, "Inference batch sizes")
            ->delimiter(',')
            ->check(CLI::Range(1, 1024))
            ->capture_default_str();
        sub.add_option("--train-batch", a->train_batch, "Training batch size")
            ->check(CLI::Range(1, 1024))
            ->capture_default_str();
        sub.add_option("--input-size", a->input_size, "Network input side, pixels")
            ->check(CLI::Range(64, 1024))
            ->capture_default_str();
        sub.add_option("--reps", a->reps, "Timed repetitions")->check(CLI::Range(1, 1000))->capture_default_str();
        sub.add_option("--warmup", a->warmup, "Untimed runs before them")->check(CLI::Range(0, 1000))->capture_default_str();
        sub.add_option("--threads", a->threads, "Threads; 0: all cores")->check(CLI::Range(0, 1024))->capture_default_str();
        sub.add_option("--images", a->images, "Phantoms (1500x2000) per preprocessing repetition")
            ->check(CLI::Range(1, 10000))
            ->capture_default_str();
        sub.add_option("--images-dir", a->images_dir,
                       "Preprocess the PNG files of this folder instead, decoding included");
        sub.add_option("--format", a->format, "Output format")
            ->check(CLI::IsMember({"md", "csv", "json"}))
            ->capture_default_str();
        return [a] { return run_bench(*a); };
    }};

}  // namespace

}  // namespace boneage::cli
