// Datasets in the RSNA layout (labels CSV `id,boneage,male`, images at DIR/<id>.png|jpg|dcm)
// and the prepared cache: every image preprocessed once into one file that training
// memory-maps.
//
//   auto report = boneage::prepare_dataset({"images/", "labels.csv", "train.bin"});
//   boneage::PreparedCache cache("train.bin");
//   const std::uint8_t* px = cache.image(0);   // 320 x 320 bytes, row-major
#pragma once

#include <boneage/preprocess.hpp>

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <string>
#include <vector>

namespace boneage {

struct LabelRow {
    std::string id;
    double age_months = 0.0;
    bool male = false;
    int line = 0;             // 1-based line in the CSV, for messages
};

// A row the reader or prepare skipped, and why.
struct RejectedRow {
    int line = 0;
    std::string id;
    std::string reason;
};

struct Labels {
    std::vector<LabelRow> rows;
    std::vector<RejectedRow> rejected;  // age not a number, out of 0..300, duplicate id, ...
};

// Reads an RSNA-style CSV. Accepts the columns in any order by header name (id, boneage,
// male; the RSNA test file puts male before boneage); `male` is true/false/1/0/True/False.
// Throws boneage::Error if the file cannot be read or lacks a column; bad rows are returned
// in `rejected`, or thrown when `strict`.
Labels read_labels(const std::filesystem::path& csv, bool strict = false);

// The image file of `id` in `dir`: the first of <id>.png, .jpg, .jpeg, .dcm, .tif, .tiff, .bmp
// that exists; empty path when none does.
std::filesystem::path find_image(const std::filesystem::path& dir, const std::string& id);

struct PrepareOptions {
    std::filesystem::path images_dir;
    std::filesystem::path labels_csv;
    std::filesystem::path out;
    PreprocessSettings settings;
    bool strict = false;      // stop at the first bad row instead of skipping it
    int threads = 0;          // 0: all cores
    std::function<void(std::size_t done, std::size_t total)> progress;  // optional
};

struct PrepareReport {
    std::size_t written = 0;
    std::vector<RejectedRow> rejected;  // rows of the CSV and images that failed, with reasons
};

// Preprocesses every labelled image and writes the cache atomically (temporary file, then
// rename). Throws boneage::Error on I/O failure, or on the first bad row when strict.
PrepareReport prepare_dataset(const PrepareOptions& options);

// A prepared cache, memory-mapped read-only. File layout (little-endian):
//   "BONEAGE-CACHE\0\0\0" (16 bytes), u32 version, u32 header_bytes, header JSON
//   {count, size, settings, ids, ages, male}, zero padding to 64 bytes, then
//   count x size x size uint8 pixels.
class PreparedCache {
public:
    static constexpr std::uint32_t kVersion = 1;

    // Maps the file. Throws boneage::Error (BadData) on a wrong magic, version or size.
    explicit PreparedCache(const std::filesystem::path& file);
    ~PreparedCache();
    PreparedCache(const PreparedCache&) = delete;
    PreparedCache& operator=(const PreparedCache&) = delete;

    std::size_t size() const { return ids_.size(); }
    int image_size() const { return image_size_; }
    const std::uint8_t* image(std::size_t i) const;   // image_size() x image_size() bytes
    const std::string& id(std::size_t i) const { return ids_[i]; }
    double age_months(std::size_t i) const { return ages_[i]; }
    bool male(std::size_t i) const { return male_[i] != 0; }
    const PreprocessSettings& settings() const { return settings_; }
    const std::filesystem::path& path() const { return path_; }

private:
    std::filesystem::path path_;
    int image_size_ = 0;
    std::vector<std::string> ids_;
    std::vector<double> ages_;
    std::vector<std::uint8_t> male_;
    PreprocessSettings settings_;
    const std::uint8_t* pixels_ = nullptr;
    void* map_ = nullptr;
    std::size_t map_bytes_ = 0;
};

// Deterministic split by id: an id goes to validation when a hash of the id string falls
// below `fraction`. The same id lands on the same side in every dataset and every run, so
// thumbnails and full-size images of one patient never straddle the split.
bool in_validation_split(const std::string& id, double fraction);

}  // namespace boneage
