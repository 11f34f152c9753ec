// prepare_dataset: every labelled image read, preprocessed and streamed into one cache file.
#include "data/cache_format.hpp"

#include <boneage/build_info.hpp>
#include <boneage/dataset.hpp>
#include <boneage/durable_file.hpp>
#include <boneage/error.hpp>
#include <boneage/hand_detector.hpp>
#include <boneage/image.hpp>
#include <boneage/parallel.hpp>
#include <boneage/preprocess.hpp>

#include <fmt/format.h>
#include <nlohmann/json.hpp>
#include <opencv2/core.hpp>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <mutex>
#include <unordered_set>

namespace boneage {

namespace {

namespace fs = std::filesystem;
using namespace cache_format;

// Images are preprocessed in chunks of about this many bytes, then written in row order, so
// a dataset of any size needs only one chunk in memory.
constexpr std::size_t kChunkBytes = std::size_t(64) << 20;

struct Candidate {
    LabelRow row;
    fs::path image;
};

// The header JSON of a cache holding `rows`.
std::string header_json(const std::vector<LabelRow>& rows, const PreprocessSettings& settings) {
    nlohmann::json ids = nlohmann::json::array(), ages = nlohmann::json::array(),
                   male = nlohmann::json::array();
    for (const LabelRow& r : rows) {
        ids.push_back(r.id);
        ages.push_back(r.age_months);
        male.push_back(r.male);
    }
    nlohmann::json header = {{"version", PreparedCache::kVersion},
                             {"count", rows.size()},
                             {"size", settings.output_size},
                             {"settings", settings},
                             {"preprocess_version", kPreprocessVersion},
                             {"build_commit", build_commit()},
                             {"ids", std::move(ids)},
                             {"ages", std::move(ages)},
                             {"male", std::move(male)}};
    return header.dump();
}

// A cache being written to a temporary file beside `out`; commit() renames it into place,
// and a writer destroyed before that removes it, so `out` is never left half-written.
class CacheWriter {
public:
    // `header_bytes` is reserved for the header, which is written last, once the rows that
    // succeeded are known.
    CacheWriter(fs::path out, std::size_t header_bytes)
        : out_(std::move(out)), tmp_(temp_beside(out_)), header_bytes_(header_bytes) {
        if (out_.has_parent_path()) {
            std::error_code ec;
            fs::create_directories(out_.parent_path(), ec);
        }
        file_ = std::fopen(tmp_.path().c_str(), "wb");
        if (!file_) fail("cannot create");
        std::vector<char> zeros(pixel_offset(header_bytes_), 0);
        write(zeros.data(), zeros.size());
    }

    ~CacheWriter() {
        if (file_) std::fclose(file_);  // before tmp_ removes the file
    }

    CacheWriter(const CacheWriter&) = delete;
    CacheWriter& operator=(const CacheWriter&) = delete;

    void append(const cv::Mat& image) { write(image.data, image.total()); }

    // Writes the preamble and `json`, padded with spaces (still valid JSON) to the reserved
    // size, then moves the file into place.
    void commit(std::string json) {
        if (json.size() > header_bytes_)
            throw Error(ErrorKind::Internal, out_, "cache header outgrew its reserved space");
        json.resize(header_bytes_, ' ');
        const auto version = put_u32(PreparedCache::kVersion);
        const auto header_size = put_u32(std::uint32_t(header_bytes_));
        if (std::fseek(file_, 0, SEEK_SET) != 0) fail("cannot seek in");
        write(kMagic, kMagicBytes);
        write(version.data(), version.size());
        write(header_size.data(), header_size.size());
        write(json.data(), json.size());
        int closed = std::fclose(file_);
        file_ = nullptr;
        if (closed != 0) fail("cannot finish writing");
        tmp_.commit(out_);
    }

private:
    void write(const void* data, std::size_t bytes) {
        if (std::fwrite(data, 1, bytes, file_) != bytes) fail("cannot write");
    }

    [[noreturn]] void fail(const char* what) {
        throw Error(ErrorKind::CannotWrite, out_, fmt::format("{}: {}", what, std::strerror(errno)));
    }

    fs::path out_;
    TempFileGuard tmp_;
    std::size_t header_bytes_;
    std::FILE* file_ = nullptr;
};

// Reads and preprocesses one image; the result is size x size, CV_8UC1, continuous.
cv::Mat prepare_image(const fs::path& file, const PreprocessSettings& settings,
                      const HandFinder& finder, std::string& method) {
    Preprocessed p = preprocess(read_radiograph(file), settings, finder);
    method = p.hand.method;
    cv::Mat image = std::move(p.image);
    if (image.rows != settings.output_size || image.cols != settings.output_size ||
        image.type() != CV_8UC1)
        throw Error(ErrorKind::Internal, file,
                    fmt::format("preprocess returned {}x{} type {}, expected {}x{} 8-bit grey",
                                image.cols, image.rows, image.type(), settings.output_size,
                                settings.output_size));
    return image.isContinuous() ? image : image.clone();
}

void check_settings(const PreprocessSettings& s) {
    if (s.output_size < 8 || s.output_size > 4096)
        throw UsageError(fmt::format("image size {} is outside 8..4096", s.output_size));
}

// The labelled rows whose image exists; the others go to `rejected` (or throw when strict).
std::vector<Candidate> find_images(const PrepareOptions& o, const Labels& labels,
                                   std::vector<RejectedRow>& rejected) {
    std::vector<Candidate> found;
    for (const LabelRow& row : labels.rows) {
        fs::path image = find_image(o.images_dir, row.id);
        if (!image.empty()) {
            found.push_back({row, std::move(image)});
            continue;
        }
        if (o.strict)
            throw Error(ErrorKind::NotFound, o.images_dir / row.id,
                        fmt::format("line {}, id {}: missing image", row.line, row.id));
        rejected.push_back({row.line, row.id, "missing image"});
    }
    return found;
}

// The images in `dir` whose stem no row names, good or rejected, sorted.
std::vector<fs::path> unlabelled_images(const fs::path& dir, const Labels& labels) {
    std::unordered_set<std::string> named;
    for (const LabelRow& row : labels.rows) named.insert(row.id);
    for (const RejectedRow& row : labels.rejected) named.insert(row.id);
    std::vector<fs::path> out;
    std::error_code ec;
    for (fs::directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec))
        if (it->is_regular_file(ec) && has_image_extension(it->path()) &&
            !named.count(it->path().stem().string()))
            out.push_back(it->path());
    std::sort(out.begin(), out.end());
    return out;
}

// Calls the user's progress callback one call at a time, with a count that only grows.
class Progress {
public:
    Progress(const PrepareOptions& o, std::size_t total) : fn_(o.progress), total_(total) {
        if (fn_) fn_(0, total_);
    }
    void step() {
        if (!fn_) return;
        std::lock_guard<std::mutex> lock(mutex_);
        fn_(++done_, total_);
    }

private:
    const std::function<void(std::size_t, std::size_t)>& fn_;
    std::size_t total_, done_ = 0;
    std::mutex mutex_;
};

std::string summary_of_failures(const std::vector<RejectedRow>& rejected) {
    std::string text;
    for (std::size_t i = 0; i < rejected.size() && i < 3; ++i)
        text += fmt::format("{}line {}, id {}: {}", i ? "; " : "", rejected[i].line,
                            rejected[i].id, rejected[i].reason);
    if (rejected.size() > 3) text += fmt::format("; and {} more", rejected.size() - 3);
    return text;
}

}  // namespace

PrepareReport prepare_dataset(const PrepareOptions& o) {
    check_settings(o.settings);
    std::error_code ec;
    if (!fs::is_directory(o.images_dir, ec))
        throw Error(ErrorKind::NotFound, o.images_dir, "no such image folder");
    Labels labels = read_labels(o.labels_csv, o.strict);
    PrepareReport report;
    report.rejected = labels.rejected;
    std::vector<Candidate> candidates = find_images(o, labels, report.rejected);
    report.unlabelled = unlabelled_images(o.images_dir, labels);
    if (o.strict && !report.unlabelled.empty())
        throw Error(ErrorKind::BadData, report.unlabelled.front(),
                    fmt::format("no row of {} names this image ({} such image{} in all)",
                                o.labels_csv.string(), report.unlabelled.size(),
                                report.unlabelled.size() == 1 ? "" : "s"));

    // The header of all candidates bounds the final one: failures only remove entries.
    std::vector<LabelRow> rows;
    for (const Candidate& c : candidates) rows.push_back(c.row);
    std::string upper_bound = header_json(rows, o.settings);
    CacheWriter writer(o.out, pixel_offset(upper_bound.size()) - kPreambleBytes);
    rows.clear();

    const std::size_t image_bytes = std::size_t(o.settings.output_size) * o.settings.output_size;
    const std::size_t chunk = std::max<std::size_t>(1, kChunkBytes / image_bytes);
    Progress progress(o, candidates.size());
    const std::shared_ptr<const HandFinder> finder = hand_finder_for(o.settings);
    for (std::size_t start = 0; start < candidates.size(); start += chunk) {
        std::size_t count = std::min(chunk, candidates.size() - start);
        std::vector<cv::Mat> images(count);
        std::vector<std::string> failures(count);
        std::vector<std::string> methods(count);
        parallel_for(count, o.threads, [&](std::size_t k) {
            const Candidate& c = candidates[start + k];
            try {
                images[k] = prepare_image(c.image, o.settings, *finder, methods[k]);
            } catch (const Error& e) {
                if (o.strict)
                    throw Error(e.kind(), c.image,
                                fmt::format("line {}, id {}: {}", c.row.line, c.row.id, e.reason()));
                failures[k] = fmt::format("{}: {}", c.image.filename().string(), e.reason());
            } catch (const std::exception& e) {  // OpenCV's own exceptions, bad_alloc
                if (o.strict) throw;
                failures[k] = fmt::format("{}: {}", c.image.filename().string(), e.what());
            }
            progress.step();
        });
        for (std::size_t k = 0; k < count; ++k) {
            const Candidate& c = candidates[start + k];
            if (!failures[k].empty()) {
                report.rejected.push_back({c.row.line, c.row.id, failures[k]});
                continue;
            }
            writer.append(images[k]);
            rows.push_back(c.row);
            ++report.crop_methods[methods[k]];
        }
    }
    std::stable_sort(report.rejected.begin(), report.rejected.end(),
                     [](const RejectedRow& a, const RejectedRow& b) { return a.line < b.line; });
    if (rows.empty())
        throw Error(ErrorKind::BadData, o.labels_csv,
                    report.rejected.empty()
                        ? std::string("no labelled rows")
                        : "no image could be prepared: " + summary_of_failures(report.rejected));
    writer.commit(header_json(rows, o.settings));
    report.written = rows.size();
    return report;
}

}  // namespace boneage
