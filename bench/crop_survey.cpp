// The crop methods side by side on a folder of radiographs: for each film, the classical
// finder's box and MediaPipe's (palm score, hand presence, landmarks), what each costs on one
// core, and contact sheets with both crops drawn on the whole film so a person can check that
// each holds the whole hand (green: classical; red: MediaPipe, with its 21 landmarks; grey
// cross: MediaPipe found no hand). Writes OUT/crops.csv, OUT/landmarks.json (each film's 21
// points in pixels, palm score and presence) and OUT/sheet-NN.png; prints a summary.
//
//   build/bench-crop-survey DIR OUT [--limit N] [--invert] [--lite] [--padding F]
//
// --invert gives MediaPipe the film with its grey levels reversed (a dark hand on a light
// ground, nearer the photographs it was trained on). Times are the calling thread's CPU time.
#include "../src/preprocess/hand_finder_steps.hpp"  // thread_cpu_ms (internal)

#include <boneage/hand_detector.hpp>
#include <boneage/image.hpp>
#include <boneage/preprocess.hpp>

#include <fmt/format.h>
#include <nlohmann/json.hpp>
#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>
#include <torch/torch.h>

#include <algorithm>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <string>
#include <vector>

namespace fs = std::filesystem;

namespace {

using boneage::hand_finder::thread_cpu_ms;

double median(std::vector<double> v) {
    if (v.empty()) return 0;
    std::sort(v.begin(), v.end());
    return v[v.size() / 2];
}

constexpr int kCell = 200, kColumns = 8, kRows = 6;

// One film's thumbnail with both crops drawn, kCell x kCell.
cv::Mat thumbnail(const cv::Mat& grey, const cv::Rect& classical,
                  const std::optional<boneage::HandLandmarks>& hand, const cv::Rect& mediapipe,
                  bool found, const std::string& id) {
    const double scale = static_cast<double>(kCell) / std::max(grey.cols, grey.rows);
    cv::Mat small, colour;
    cv::resize(grey, small, {}, scale, scale, cv::INTER_AREA);
    cv::cvtColor(small, colour, cv::COLOR_GRAY2BGR);
    auto scaled = [&](const cv::Rect& r) {
        return cv::Rect(cv::Point(int(r.x * scale), int(r.y * scale)),
                        cv::Point(int(r.br().x * scale), int(r.br().y * scale)));
    };
    cv::rectangle(colour, scaled(classical), {0, 220, 0}, 1);
    if (found) {
        cv::rectangle(colour, scaled(mediapipe), {0, 0, 255}, 1);
        for (const cv::Point2f& p : hand->points)
            cv::circle(colour, p * scale, 1, {0, 128, 255}, cv::FILLED);
    } else {
        cv::line(colour, {0, 0}, {colour.cols - 1, colour.rows - 1}, {128, 128, 128}, 1);
        cv::line(colour, {colour.cols - 1, 0}, {0, colour.rows - 1}, {128, 128, 128}, 1);
    }
    cv::putText(colour, id, {2, 12}, cv::FONT_HERSHEY_PLAIN, 0.9, {255, 255, 0}, 1);
    cv::Mat cell(kCell, kCell, CV_8UC3, cv::Scalar::all(0));
    colour.copyTo(cell(cv::Rect(0, 0, colour.cols, colour.rows)));
    return cell;
}

}  // namespace

int main(int argc, char** argv) {
    if (argc < 3) {
        std::cerr << "usage: bench-crop-survey DIR OUT [--limit N] [--invert] [--lite] [--padding F]\n";
        return 2;
    }
    const fs::path dir = argv[1], out = argv[2];
    std::size_t limit = SIZE_MAX;
    boneage::PreprocessSettings settings;
    bool invert = false, lite = false;
    for (int i = 3; i < argc; ++i) {
        const std::string a = argv[i];
        if (a == "--limit" && i + 1 < argc) limit = std::stoul(argv[++i]);
        else if (a == "--invert") invert = true;
        else if (a == "--lite") lite = true;
        else if (a == "--padding" && i + 1 < argc) settings.landmark_padding = std::stod(argv[++i]);
        else {
            std::cerr << "bench-crop-survey: unknown option " << a << "\n";
            return 2;
        }
    }
    torch::set_num_threads(1);
    cv::setNumThreads(1);
    fs::create_directories(out);
    std::vector<fs::path> files;
    for (const auto& e : fs::directory_iterator(dir)) {
        const std::string ext = e.path().extension().string();
        if (ext == ".png" || ext == ".jpg" || ext == ".dcm") files.push_back(e.path());
    }
    std::sort(files.begin(), files.end());
    if (files.size() > limit) files.resize(limit);

    const boneage::MediaPipeHands hands(boneage::mediapipe_model_dir(),
                                        lite ? boneage::MediaPipeModel::lite
                                             : boneage::MediaPipeModel::full);
    std::ofstream csv(out / "crops.csv");
    csv << "id,width,height,classical_method,classical_x,classical_y,classical_w,classical_h,"
           "classical_ms,palm_score,presence,mediapipe_x,mediapipe_y,mediapipe_w,mediapipe_h,"
           "mediapipe_ms\n";
    nlohmann::json landmarks = nlohmann::json::array();
    std::vector<double> classical_ms, mediapipe_ms;
    std::size_t classical_found = 0, palms = 0, hands_found = 0;
    std::vector<cv::Mat> cells;
    int sheet = 0;
    auto flush_sheet = [&] {
        if (cells.empty()) return;
        cv::Mat page(kRows * kCell, kColumns * kCell, CV_8UC3, cv::Scalar::all(40));
        for (std::size_t k = 0; k < cells.size(); ++k)
            cells[k].copyTo(page(cv::Rect(int(k % kColumns) * kCell, int(k / kColumns) * kCell,
                                          kCell, kCell)));
        cv::imwrite((out / fmt::format("sheet-{:02d}.png", sheet++)).string(), page);
        cells.clear();
    };
    for (std::size_t i = 0; i < files.size(); ++i) {
        const boneage::Radiograph r = boneage::read_radiograph(files[i]);
        const cv::Mat grey = boneage::to_grey8(r.pixels, "crop survey");
        double t0 = thread_cpu_ms();
        const boneage::HandBox classical = boneage::find_hand(grey, settings);
        const double c_ms = thread_cpu_ms() - t0;
        cv::Mat seen = grey;
        if (invert) seen = 255 - grey;
        t0 = thread_cpu_ms();
        const std::optional<boneage::HandLandmarks> hand = hands.find(seen, settings.landmark_padding);
        const double m_ms = thread_cpu_ms() - t0;
        const bool found = hand && hand->presence >= settings.landmark_min_score;
        const cv::Rect classical_crop = boneage::crop_box(classical.box, grey.size(), settings.crop_margin);
        const cv::Rect mp_crop = found ? boneage::crop_box(boneage::landmark_box(*hand, grey.size(), settings.landmark_forearm),
                                                           grey.size(), settings.landmark_margin)
                                       : cv::Rect();
        classical_ms.push_back(c_ms);
        mediapipe_ms.push_back(m_ms);
        classical_found += classical.method == "threshold";
        palms += hand.has_value();
        hands_found += found;
        const std::string id = files[i].stem().string();
        csv << fmt::format("{},{},{},{},{},{},{},{},{:.2f},{:.4f},{:.4f},{},{},{},{},{:.2f}\n", id,
                           grey.cols, grey.rows, classical.method, classical_crop.x,
                           classical_crop.y, classical_crop.width, classical_crop.height, c_ms,
                           hand ? hand->palm_score : 0.0f, hand ? hand->presence : 0.0f, mp_crop.x,
                           mp_crop.y, mp_crop.width, mp_crop.height, m_ms);
        nlohmann::json entry = {{"id", id}, {"width", grey.cols}, {"height", grey.rows}};
        if (hand) {
            nlohmann::json points = nlohmann::json::array();
            for (const cv::Point2f& p : hand->points) points.push_back({p.x, p.y});
            entry["palm_score"] = hand->palm_score;
            entry["presence"] = hand->presence;
            entry["points"] = points;
        }
        landmarks.push_back(entry);
        cells.push_back(thumbnail(grey, classical_crop, hand, mp_crop, found, id));
        if (cells.size() == std::size_t(kColumns * kRows)) flush_sheet();
        if ((i + 1) % 50 == 0) std::cerr << fmt::format("{} of {}\n", i + 1, files.size());
    }
    flush_sheet();
    std::ofstream(out / "landmarks.json") << landmarks.dump() << "\n";
    const std::size_t n = files.size();
    std::cout << fmt::format(
        "| method | films | hand found | median ms/film (one core) |\n|---|---:|---:|---:|\n"
        "| classical | {} | {} ({:.1f}%) | {:.1f} |\n"
        "| mediapipe{}{}, padding {} | {} | {} ({:.1f}%); palms {} | {:.1f} |\n",
        n, classical_found, 100.0 * classical_found / std::max<std::size_t>(n, 1),
        median(classical_ms), lite ? " lite" : "", invert ? ", inverted" : "",
        settings.landmark_padding, n, hands_found,
        100.0 * hands_found / std::max<std::size_t>(n, 1), palms, median(mediapipe_ms));
    return 0;
}
