// Seeds for the fuzz targets (seeds.hpp): small phantoms in every format the reader takes,
// labels files and manifests in the forms the README names, a tiny model, a tiny cache, and
// the requests the service answers.
#include "seeds.hpp"

#include <unistd.h>

#include <boneage/dataset.hpp>
#include <boneage/error.hpp>
#include <boneage/image.hpp>
#include <boneage/model.hpp>
#include <boneage/synth.hpp>

#include <fmt/format.h>
#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>

#include <filesystem>
#include <fstream>
#include <sstream>

namespace boneage::fuzz {

namespace fs = std::filesystem;

namespace {

// Small, so a fuzzer runs through many mutations a second; still above ReadLimits::min_side.
constexpr int kSide = 64;  // the smallest phantom synth draws

// A folder of its own for the seeds that must pass through a file, removed when done.
class TempDir {
public:
    TempDir() {
        static int counter = 0;
        path_ = fs::temp_directory_path() /
                fmt::format("boneage-seeds-{}-{}", ::getpid(), counter++);
        fs::create_directories(path_);
    }
    ~TempDir() {
        std::error_code ignored;
        fs::remove_all(path_, ignored);
    }
    const fs::path& path() const { return path_; }

private:
    fs::path path_;
};

std::string slurp(const fs::path& file) {
    std::ifstream in(file, std::ios::binary);
    if (!in) throw Error(ErrorKind::NotFound, file, "a seed could not be read back");
    std::ostringstream out;
    out << in.rdbuf();
    return out.str();
}

cv::Mat phantom(int width, int height, bool bits16 = false) {
    SynthOptions o;
    o.width = width;
    o.height = height;
    o.bits16 = bits16;
    return make_phantom(PhantomLabel{"1000", 120.0, true}, 7, o).image;
}

std::string encoded(const cv::Mat& image, const std::string& ext,
                    const std::vector<int>& params = {}) {
    std::vector<std::uint8_t> bytes;
    if (!cv::imencode(ext, image, bytes, params))
        throw Error(ErrorKind::Internal, "a " + ext + " seed could not be encoded");
    return std::string(bytes.begin(), bytes.end());
}

std::vector<Seed> image_seeds() {
    const cv::Mat grey = phantom(kSide, kSide + 16);
    const cv::Mat grey16 = phantom(kSide, kSide + 16, true);
    cv::Mat colour;
    cv::cvtColor(grey, colour, cv::COLOR_GRAY2BGR);
    colour.col(3).setTo(cv::Scalar(0, 0, 255));  // a red line: a photograph, not a film
    cv::Mat alpha;
    cv::cvtColor(grey, alpha, cv::COLOR_GRAY2BGRA);
    const std::string jpeg = encoded(grey, ".jpg", {cv::IMWRITE_JPEG_QUALITY, 90});
    // The scan cut short and closed with an end-of-image marker: libjpeg decodes it with a
    // warning (premature end of data segment).
    const std::string cut = jpeg.substr(0, jpeg.size() * 2 / 3) + "\xff\xd9";
    return {
        {"grey.png", encoded(grey, ".png")},
        {"grey16.png", encoded(grey16, ".png")},
        {"colour.png", encoded(colour, ".png")},
        {"alpha.png", encoded(alpha, ".png")},
        {"grey.jpg", jpeg},
        {"cut.jpg", cut},
        {"colour.jpg", encoded(colour, ".jpg", {cv::IMWRITE_JPEG_QUALITY, 80})},
        {"progressive.jpg", encoded(grey, ".jpg", {cv::IMWRITE_JPEG_PROGRESSIVE, 1})},
        {"grey.bmp", encoded(grey, ".bmp")},
        {"colour.bmp", encoded(colour, ".bmp")},
        {"grey.tif", encoded(grey, ".tif", {cv::IMWRITE_TIFF_COMPRESSION, 1})},
        {"grey16.tif", encoded(grey16, ".tif", {cv::IMWRITE_TIFF_COMPRESSION, 1})},
        {"lzw.tif", encoded(colour, ".tif")},
    };
}

std::vector<Seed> dicom_seeds() {
    TempDir dir;
    std::vector<Seed> seeds;
    auto add = [&](const std::string& name, auto&& write) {
        const fs::path file = dir.path() / name;
        write(file);
        seeds.push_back({name, slurp(file)});
    };
    const cv::Mat grey = phantom(kSide, kSide + 16);
    const cv::Mat grey16 = phantom(kSide, kSide + 16, true);
    add("grey.dcm", [&](const fs::path& f) { write_dicom(f, grey); });
    add("grey16.dcm", [&](const fs::path& f) { write_dicom(f, grey16); });
    add("monochrome1.dcm", [&](const fs::path& f) { write_dicom(f, grey16, true, 0.1); });
    DicomIdentity id;
    id.patient_id = "P1";
    id.patient_name = "Doe^Jane";
    id.patient_sex = "F";
    id.patient_birth_date = "20150301";
    id.study_date = "20250301";
    id.accession_number = "A1";
    add("identity.dcm", [&](const fs::path& f) { write_dicom(f, grey, id, false, 0.143); });
    // The dataset without its 128-byte preamble and "DICM": recognised by its first tag.
    const std::string whole = seeds.front().bytes;
    seeds.push_back({"no-preamble.dcm", whole.substr(132)});
    return seeds;
}

std::vector<Seed> labels_seeds() {
    return {
        {"rsna-train.csv", "id,boneage,male\n1377,180,False\n1378,12,True\n1379,94,1\n"},
        {"rsna-test.csv",
         "Case ID,Sex,Ground truth bone age (Months)\r\n4360,M,168.934\r\n4361,F,169.652\r\n"},
        {"bom-quoted.csv",
         "\xEF\xBB\xBF\"id\",\"bone_age\",\"sex\"\n\"a,b\",\"12.5\",\"female\"\n\"c\"\"d\",7,m\n\n"},
        {"bad-rows.csv", "boneage,id,male,age\n-1,x,True,12\n400,y,yes,1\nabc,z,0,2\n5,z,0,3\n5\n"},
        {"manifest.csv", "path,sex,chronological_age\nhands/0001.png,F,96\nhands/0002.dcm,,\n"
                         "/data/0003.png,M,150.5\n"},
        {"doubled.csv", "id,boneage,Bone Age (Months),male,sex\n1,2,3,True,M\n"},
    };
}

std::vector<Seed> model_seeds() {
    TempDir dir;
    std::vector<Seed> seeds;
    ModelConfig config;
    config.arch = "shallow";
    config.input_size = 32;
    config.label_offset = 120.0;
    config.label_scale = 40.0;
    ModelMetadata meta;
    meta.preprocess.output_size = 32;
    for (const char* dtype : {"int8", "float16"}) {
        meta.weights_dtype = dtype;
        const fs::path file = dir.path() / fmt::format("shallow-{}.bin", dtype);
        save_model(file, make_model(config), meta);
        seeds.push_back({file.filename().string(), slurp(file)});
    }
    return seeds;
}

std::vector<Seed> cache_seeds() {
    TempDir dir;
    const fs::path images = dir.path() / "images";
    fs::create_directories(images);
    SynthOptions o;
    o.width = kSide;
    o.height = kSide + 16;
    write_phantom_set(images, 3, 11, o);
    PrepareOptions options;
    options.images_dir = images;
    options.labels_csv = images / "labels.csv";
    options.out = dir.path() / "cache.bin";
    options.settings.output_size = 16;  // the smallest pixels a cache may hold, for speed
    options.settings.detect_size = 64;
    options.threads = 1;
    prepare_dataset(options);
    const std::string whole = slurp(options.out);
    // The same cache as written before preprocess_version and build_commit were recorded: the
    // keys blanked out, so the header keeps its length and the pixels their offset.
    std::string older = whole;
    for (const char* key : {"\"preprocess_version\":", "\"build_commit\":"}) {
        const std::size_t at = older.find(key);
        const std::size_t end = older.find(',', at);
        if (at == std::string::npos || end == std::string::npos)
            throw Error(ErrorKind::Internal, "the cache header has no " + std::string(key));
        older.replace(at, end + 1 - at, end + 1 - at, ' ');
    }
    return {{"three.bin", whole}, {"three-before-versions.bin", older}};
}

std::string multipart(const std::string& boundary, const std::string& file_bytes,
                      const std::string& file_name) {
    std::string body;
    auto part = [&](const std::string& name, const std::string& extra, const std::string& value) {
        body += "--" + boundary + "\r\nContent-Disposition: form-data; name=\"" + name + "\"" +
                extra + "\r\n\r\n" + value + "\r\n";
    };
    part("sex", "", "F");
    part("chronological_age_months", "", "96");
    body += "--" + boundary + "\r\nContent-Disposition: form-data; name=\"file\"; filename=\"" +
            file_name + "\"\r\nContent-Type: application/octet-stream\r\n\r\n" + file_bytes +
            "\r\n--" + boundary + "--\r\n";
    return body;
}

std::vector<Seed> http_seeds() {
    const cv::Mat grey = phantom(kSide, kSide);
    const std::string png = encoded(grey, ".png");
    const std::string boundary = "----boneage7MA4YWxkTrZu0gW";
    const std::string form = multipart(boundary, png, "hand.png");
    const std::string post = "POST /v1/predict HTTP/1.1\r\nHost: localhost\r\n"
                             "Content-Type: multipart/form-data; boundary=" +
                             boundary + "\r\nContent-Length: " + std::to_string(form.size()) +
                             "\r\n\r\n" + form;
    std::string chunked = "POST /v1/predict HTTP/1.1\r\nHost: localhost\r\n"
                          "Content-Type: multipart/form-data; boundary=" +
                          boundary + "\r\nTransfer-Encoding: chunked\r\n\r\n";
    for (std::size_t at = 0; at < form.size(); at += 700) {
        const std::string piece = form.substr(at, 700);
        chunked += fmt::format("{:x}\r\n", piece.size()) + piece + "\r\n";
    }
    chunked += "0\r\n\r\n";
    const std::string review = "{\"bone_age_months\": 100, \"note\": \"ok\"}";
    return {
        {"get.http", "GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n"},
        {"pipelined.http", "GET /healthz HTTP/1.1\r\nHost: a\r\n\r\nGET /nowhere?x=1&y=%41 "
                           "HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"},
        {"predict.http", post},
        {"expect.http", "POST /v1/predict HTTP/1.1\r\nHost: localhost\r\nExpect: 100-continue\r\n"
                        "Content-Type: multipart/form-data; boundary=" +
                            boundary + "\r\nContent-Length: " + std::to_string(form.size()) +
                            "\r\n\r\n" + form},
        {"chunked.http", chunked},
        {"review.http", "PUT /v1/cases/12/review HTTP/1.1\r\nHost: a\r\nContent-Type: "
                        "application/json\r\nContent-Length: " +
                            std::to_string(review.size()) + "\r\n\r\n" + review},
        {"ranged.http", "GET /healthz HTTP/1.1\r\nHost: a\r\nRange: bytes=0-3,5-\r\n\r\n"},
    };
}

}  // namespace

std::vector<Seed> make_seeds(const std::string& target) {
    if (target == "image") return image_seeds();
    if (target == "dicom") return dicom_seeds();
    if (target == "labels") return labels_seeds();
    if (target == "model") return model_seeds();
    if (target == "cache") return cache_seeds();
    if (target == "http") return http_seeds();
    throw Error(ErrorKind::Usage, "no fuzz target named '" + target + "'");
}

}  // namespace boneage::fuzz
