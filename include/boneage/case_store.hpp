// The cases a reading room has seen: each upload's result as the service gave it, and the
// reader's review of it. Behind an interface, so a hospital can keep them in its own database;
// the one built here is SQLite, one file beside the folder of uploaded images.
//
//   std::unique_ptr<boneage::CaseStore> store = boneage::open_sqlite_case_store("cases.db");
//   boneage::NewCase c;  c.status = "ok";  c.bone_age_months = 121.0;  c.image_ext = "png";
//   std::int64_t id = store->add_case(c, [&](std::int64_t id) { /* write images/<id>.png */ });
//   store->save_review(id, {"Dr Reader", 118.0, false, "radius looks younger"});
//   std::string csv = store->reviewed_csv();   // id,boneage,male
#pragma once

#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace boneage {

// A reader's verdict on one case. The last one saved is the case's review.
struct Review {
    std::string reader;            // who read it (free text: a name or an id)
    double bone_age_months = 0.0;  // the reader's bone age
    bool agrees = false;           // the reader took the model's value as it was
    std::string comment;
    std::string reviewed_at;  // UTC, ISO 8601; set by the store
};

// What the service knows about an upload once the model has seen it.
struct NewCase {
    std::string original_name;  // the client's file name, for display only (never a path)
    std::string image_ext;      // "png", "jpg", "dcm", "tif": images/<id>.<ext>
    std::string status;         // the Prediction's: "ok" or "rejected"
    std::optional<double> bone_age_months;  // ok only
    std::optional<bool> male;
    std::optional<double> chronological_age_months;
    std::string result_json;  // the Prediction as JSON (to_json), as the client got it
};

struct Case : NewCase {
    std::int64_t id = 0;
    std::string created_at;        // UTC, ISO 8601
    std::optional<Review> review;  // the latest review, when the case has one

    // images/<id>.<ext>: the uploaded file as it came.
    std::string image_file() const { return std::to_string(id) + "." + image_ext; }
};

class CaseStore {
public:
    virtual ~CaseStore() = default;

    // Records a case and returns its id. `place_files`, when set, runs inside the same
    // transaction once the id is known (to move the upload to images/<id>.<ext>); when it
    // throws, the case is not recorded and the exception goes on.
    virtual std::int64_t add_case(const NewCase& c,
                                  const std::function<void(std::int64_t)>& place_files = {}) = 0;
    // The case with that id, with its latest review; empty when there is none.
    virtual std::optional<Case> get_case(std::int64_t id) = 0;
    // The `limit` newest cases, newest first.
    virtual std::vector<Case> recent(int limit) = 0;
    // Adds a review to the case; false (and nothing written) when there is no such case.
    virtual bool save_review(std::int64_t id, const Review& review) = 0;
    // The reviewed cases whose sex is known, as an RSNA-style labels file `id,boneage,male`
    // (boneage: the reader's months; male: true/false), oldest first, for `boneage prepare
    // --images <images folder>`.
    virtual std::string reviewed_csv() = 0;
    // Where the uploaded images and the pictures made from them live.
    virtual const std::filesystem::path& images_dir() const = 0;
};

// The schema version this build writes; a database file of a newer one is refused.
constexpr int kCaseStoreSchemaVersion = 1;

// Opens (creating when absent) the SQLite database `file`, and the images folder beside it
// (<stem>-images/), applying the schema migrations the file lacks. Writes go through the
// write-ahead log with full syncs, each in one transaction, so a committed review survives a
// killed process. Thread-safe. Throws boneage::Error naming the file when it cannot be opened,
// is not a database, or was written by a newer build.
std::unique_ptr<CaseStore> open_sqlite_case_store(const std::filesystem::path& file);

// Now as the store writes it: "YYYY-MM-DDTHH:MM:SSZ".
std::string utc_timestamp();

}  // namespace boneage
