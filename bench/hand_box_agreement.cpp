// How far two builds of the hand finder agree, and what each costs: `boxes` runs find_hand on
// every PNG in a folder (one thread) and writes one CSV row per image (the box, the method and
// the CPU time find_hand took); `compare` reads two such files and prints the IoU distribution
// of the boxes and the images whose boxes differ most. The time is the calling thread's CPU
// time (CLOCK_THREAD_CPUTIME_ID), so other processes sharing the core do not count in it.
// `reference-boxes` does the same with hand_finder::find_hand_reference, the finder as first
// written, which the fast one must agree with.
//
//   build/bench-hand-box-agreement boxes DIR OUT.csv [REPS]
//   build/bench-hand-box-agreement reference-boxes DIR OUT.csv [REPS]
//   build/bench-hand-box-agreement compare BEFORE.csv AFTER.csv [WORST]
#include "../src/preprocess/hand_finder_steps.hpp"  // find_hand_reference (internal)

#include <boneage/image.hpp>
#include <boneage/preprocess.hpp>

#include <fmt/format.h>
#include <opencv2/core.hpp>

#include <algorithm>
#include <ctime>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <numeric>
#include <sstream>
#include <string>
#include <vector>

namespace {

using boneage::hand_finder::thread_cpu_ms;

struct Row {
    cv::Rect box;
    std::string method;
    double ms = 0.0;
};

double percentile(std::vector<double> v, double p) {
    if (v.empty()) return 0.0;
    std::sort(v.begin(), v.end());
    const std::size_t i = std::min(v.size() - 1, static_cast<std::size_t>(p * (v.size() - 1) + 0.5));
    return v[i];
}

// The median of REPS timed calls per image (after one untimed call), so a moment of load on a
// shared machine does not pass for the finder's cost.
int boxes(const std::filesystem::path& dir, const std::filesystem::path& out, int reps,
          bool reference) {
    const auto finder = reference ? boneage::hand_finder::find_hand_reference : boneage::find_hand;
    std::vector<std::filesystem::path> files;
    for (const auto& entry : std::filesystem::directory_iterator(dir))
        if (entry.path().extension() == ".png") files.push_back(entry.path());
    std::sort(files.begin(), files.end());
    if (files.empty()) {
        fmt::print(stderr, "{}: no PNG files\n", dir.string());
        return 2;
    }
    cv::setNumThreads(1);
    const boneage::PreprocessSettings settings;
    std::ofstream csv(out);
    csv << "id,x,y,width,height,method,ms\n";
    std::vector<double> times;
    for (const auto& file : files) {
        const cv::Mat grey = boneage::to_grey8(boneage::read_radiograph(file).pixels, "bench");
        boneage::HandBox hand = finder(grey, settings);
        std::vector<double> ms;
        for (int rep = 0; rep < reps; ++rep) {
            const double start = thread_cpu_ms();
            hand = finder(grey, settings);
            ms.push_back(thread_cpu_ms() - start);
        }
        const double median = percentile(ms, 0.5);
        times.push_back(median);
        csv << fmt::format("{},{},{},{},{},{},{:.3f}\n", file.stem().string(), hand.box.x,
                           hand.box.y, hand.box.width, hand.box.height, hand.method, median);
    }
    fmt::print("{} images, {} CPU ms/image on one thread: median {:.2f}, p90 {:.2f}, "
               "mean {:.2f}, max {:.2f}\n",
               files.size(), reference ? "find_hand_reference" : "find_hand", percentile(times, 0.5), percentile(times, 0.9),
               std::accumulate(times.begin(), times.end(), 0.0) / times.size(),
               percentile(times, 1.0));
    return 0;
}

std::map<std::string, Row> read_csv(const std::filesystem::path& path) {
    std::ifstream in(path);
    if (!in) throw std::runtime_error("cannot read " + path.string());
    std::map<std::string, Row> rows;
    std::string line;
    std::getline(in, line);  // header
    while (std::getline(in, line)) {
        std::stringstream s(line);
        std::string id, field;
        std::vector<std::string> fields;
        std::getline(s, id, ',');
        while (std::getline(s, field, ',')) fields.push_back(field);
        if (fields.size() < 6) continue;
        Row r;
        r.box = cv::Rect(std::stoi(fields[0]), std::stoi(fields[1]), std::stoi(fields[2]),
                         std::stoi(fields[3]));
        r.method = fields[4];
        r.ms = std::stod(fields[5]);
        rows[id] = r;
    }
    return rows;
}

double iou(const cv::Rect& a, const cv::Rect& b) {
    const double inter = (a & b).area();
    const double unite = a.area() + b.area() - inter;
    return unite > 0 ? inter / unite : 1.0;
}

int compare(const std::filesystem::path& before_csv, const std::filesystem::path& after_csv,
            int worst) {
    const std::map<std::string, Row> before = read_csv(before_csv), after = read_csv(after_csv);
    std::vector<std::pair<double, std::string>> scores;
    std::vector<double> ious, ms_before, ms_after;
    int equal = 0, missing = 0, method_changed = 0;
    for (const auto& [id, b] : before) {
        const auto it = after.find(id);
        if (it == after.end()) {
            ++missing;
            continue;
        }
        const Row& a = it->second;
        const double v = iou(b.box, a.box);
        scores.emplace_back(v, id);
        ious.push_back(v);
        ms_before.push_back(b.ms);
        ms_after.push_back(a.ms);
        if (b.box == a.box) ++equal;
        if (b.method != a.method) ++method_changed;
    }
    if (ious.empty()) {
        fmt::print(stderr, "no image in both files\n");
        return 2;
    }
    const double n = static_cast<double>(ious.size());
    const auto at_least = [&](double t) {
        return std::count_if(ious.begin(), ious.end(), [&](double v) { return v >= t; }) / n;
    };
    fmt::print("{} images in both ({} only in the first)\n", ious.size(), missing);
    fmt::print("IoU: min {:.4f}, 1st percentile {:.4f}, median {:.4f}\n", percentile(ious, 0.0),
               percentile(ious, 0.01), percentile(ious, 0.5));
    fmt::print("share IoU >= 0.99 {:.4f}, >= 0.95 {:.4f}, >= 0.90 {:.4f}; exactly equal {:.4f} "
               "({}); method changed {}\n",
               at_least(0.99), at_least(0.95), at_least(0.90), equal / n, equal, method_changed);
    fmt::print("find_hand CPU ms/image: first median {:.2f} p90 {:.2f}; second median {:.2f} p90 "
               "{:.2f}\n",
               percentile(ms_before, 0.5), percentile(ms_before, 0.9), percentile(ms_after, 0.5),
               percentile(ms_after, 0.9));
    std::sort(scores.begin(), scores.end());
    fmt::print("\n| id | IoU | first box (x, y, w, h) | second box |\n| --- | ---: | --- | --- |\n");
    for (int i = 0; i < std::min<int>(worst, scores.size()); ++i) {
        const auto& [v, id] = scores[i];
        const cv::Rect& b = before.at(id).box;
        const cv::Rect& a = after.at(id).box;
        fmt::print("| {} | {:.4f} | {} {} {} {} {} | {} {} {} {} {} |\n", id, v, b.x, b.y, b.width,
                   b.height, before.at(id).method, a.x, a.y, a.width, a.height, after.at(id).method);
    }
    return 0;
}

}  // namespace

int main(int argc, char** argv) {
    const std::string mode = argc > 1 ? argv[1] : "";
    try {
        if ((mode == "boxes" || mode == "reference-boxes") && argc >= 4)
            return boxes(argv[2], argv[3], argc > 4 ? std::max(1, std::atoi(argv[4])) : 1,
                         mode == "reference-boxes");
        if (mode == "compare" && argc >= 4)
            return compare(argv[2], argv[3], argc > 4 ? std::max(0, std::atoi(argv[4])) : 10);
    } catch (const std::exception& e) {
        fmt::print(stderr, "{}\n", e.what());
        return 1;
    }
    fmt::print(stderr,
               "usage: {0} boxes DIR OUT.csv [REPS]\n       {0} reference-boxes DIR OUT.csv "
               "[REPS]\n       {0} compare BEFORE.csv AFTER.csv "
               "[WORST]\n",
               argc > 0 ? argv[0] : "bench-hand-box-agreement");
    return 2;
}
