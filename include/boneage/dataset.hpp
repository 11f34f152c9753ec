// Datasets in the RSNA layout (labels CSV `id,boneage,male`, images at DIR/<id>.png|jpg|dcm)
// and the prepared cache: every image preprocessed once into one file that training
// memory-maps. Also the per-input manifest of `boneage predict --manifest`.
//
//   auto report = boneage::prepare_dataset({"images/", "labels.csv", "train.bin"});
//   boneage::PreparedCache cache("train.bin");
//   const std::uint8_t* px = cache.image(0);   // 320 x 320 bytes, row-major
#pragma once

#include <boneage/preprocess.hpp>

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <map>
#include <functional>
#include <optional>
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

// Reads an RSNA-style CSV: the columns in any order, found by header name compared without
// case, spaces or underscores:
//   id        `id` or `Case ID`
//   bone age  `boneage`, `Bone Age (Months)` or `Ground truth bone age (Months)` (RSNA's test
//             set); never `age`, which in files that carry both ages is the chronological one
//   sex       `male` holding True/False/1/0 (RSNA), or `sex` holding M/F/male/female, any
//             case (a number in `sex` is refused: datasets code 1 for either sex)
// Throws boneage::Error (NotFound) if the file cannot be read, (BadData) if the header lacks
// one of the three or has two columns that could be the same one; bad rows are returned in
// `rejected`, or thrown (BadData, "line N: reason") when `strict`.
Labels read_labels(const std::filesystem::path& csv, bool strict = false);

// A sex as labels files and the command line write it: true for M or male, false for F or
// female, any case; nullopt for anything else (numbers included).
std::optional<bool> parse_sex(const std::string& text);

// `text` as one field of a CSV file that boneage writes: as it is, or in double quotes (with
// "" for a quote) where it holds a comma, a quote or a line end.
std::string csv_field(const std::string& text);

// One input of a prediction manifest.
struct ManifestRow {
    std::filesystem::path path;  // the radiograph; a relative one resolved against the CSV's folder
    std::optional<bool> male;    // empty: not given (a DICOM's own PatientSex is then used)
    std::optional<double> chronological_age_months;  // empty: not given
    int line = 0;                // 1-based line in the CSV
};

// Reads a manifest: a CSV with the header `path,sex,chronological_age` (columns in any order;
// only `path` is required), one input per row; sex as parse_sex or empty, the age in months
// (0 to 300) or empty. Throws boneage::Error (NotFound) if the file cannot be read, (BadData,
// "line N: reason") on an unknown or doubled column, a bad row, or no rows at all.
std::vector<ManifestRow> read_manifest(const std::filesystem::path& csv);

// The image file of `id` in `dir`: the first of <id>.png, .jpg, .jpeg, .dcm, .tif, .tiff, .bmp
// that exists; empty path when none does.
std::filesystem::path find_image(const std::filesystem::path& dir, const std::string& id);

// True when `file`'s extension is one find_image looks for (any case).
bool has_image_extension(const std::filesystem::path& file);

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
    // Images in the folder that no row of the labels names (not prepared), sorted. Not an
    // error: a fold's labels often name part of a shared folder; strict refuses them.
    std::vector<std::filesystem::path> unlabelled;
    // How many written images each crop method cropped ("threshold", "mediapipe", "full-frame").
    std::map<std::string, std::size_t> crop_methods;
};

// Preprocesses every labelled image and writes the cache atomically (temporary file, then
// rename). Throws boneage::Error on I/O failure, or when strict on the first bad row, missing
// or unreadable image, or on an image no row names.
PrepareReport prepare_dataset(const PrepareOptions& options);

// A prepared cache, memory-mapped read-only. File layout (little-endian):
//   "BONEAGE-CACHE\0\0\0" (16 bytes), u32 version, u32 header_bytes, header JSON
//   {count, size, settings, preprocess_version, build_commit, ids, ages, male}, zero padding
//   to 64 bytes, then count x size x size uint8 pixels. A cache written before
//   preprocess_version and build_commit were recorded reads as version 1 and "unknown".
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
    // The preprocessing version (kPreprocessVersion when written) its images were made with,
    // and the commit of the build that wrote it. Opening a cache never checks them: training
    // does (TrainOptions::allow_preprocess_mismatch).
    int preprocess_version() const { return preprocess_version_; }
    const std::string& build_commit() const { return build_commit_; }
    const std::filesystem::path& path() const { return path_; }

private:
    std::filesystem::path path_;
    int image_size_ = 0;
    std::vector<std::string> ids_;
    std::vector<double> ages_;
    std::vector<std::uint8_t> male_;
    PreprocessSettings settings_;
    int preprocess_version_ = 1;
    std::string build_commit_ = "unknown";
    const std::uint8_t* pixels_ = nullptr;
    void* map_ = nullptr;
    std::size_t map_bytes_ = 0;
};

// Deterministic split by id: an id goes to validation when a hash of the id string falls
// below `fraction`. The same id lands on the same side in every dataset and every run, so
// thumbnails and full-size images of one patient never straddle the split.
bool in_validation_split(const std::string& id, double fraction);

// The hash of an id that in_validation_split compares with its fraction: a number in [0, 1)
// fixed by the id's characters alone (FNV-1a with MurmurHash3's finaliser), so it is the same
// on every platform.
double id_hash_fraction(const std::string& id);

// The cross-validation fold of `id` among `folds`: floor(id_hash_fraction(id) x folds), with
// the fold edges taken as the doubles k / folds, so that fold 0 of K holds exactly the ids of
// in_validation_split(id, 1.0 / K) (fold 0 of 5 is the 20% validation split). Every id is in
// exactly one fold, 0 to folds - 1. Throws boneage::UsageError when folds < 2.
int fold_of(const std::string& id, int folds);

}  // namespace boneage
