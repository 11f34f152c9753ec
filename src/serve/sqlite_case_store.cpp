// CaseStore on SQLite: one database file, the images in a folder beside it. The schema is
// versioned by PRAGMA user_version; each migration runs in its own transaction with the version
// bump, so a file is always at one version or the next, never half-way.
#include <fmt/format.h>

#include <boneage/case_store.hpp>
#include <boneage/error.hpp>
#include <ctime>
#include <mutex>
#include <sstream>

#include "serve/sqlite.hpp"

namespace boneage {

namespace {

// Migration k (0-based) takes a file from user_version k to k + 1. Append, never edit: files
// in hospitals were written by the old ones.
const char* const kMigrations[] = {
    // 1: cases and their reviews (every review kept; the latest is the case's).
    R"(CREATE TABLE cases (
           id INTEGER PRIMARY KEY AUTOINCREMENT,
           created_at TEXT NOT NULL,
           original_name TEXT NOT NULL,
           image_ext TEXT NOT NULL,
           status TEXT NOT NULL,
           bone_age_months REAL,
           male INTEGER,
           chronological_age_months REAL,
           result_json TEXT NOT NULL);
       CREATE TABLE reviews (
           id INTEGER PRIMARY KEY AUTOINCREMENT,
           case_id INTEGER NOT NULL REFERENCES cases(id),
           reader TEXT NOT NULL,
           bone_age_months REAL NOT NULL,
           agrees INTEGER NOT NULL,
           comment TEXT NOT NULL,
           reviewed_at TEXT NOT NULL);
       CREATE INDEX reviews_by_case ON reviews(case_id, id);)",
};
static_assert(sizeof(kMigrations) / sizeof(kMigrations[0]) == kCaseStoreSchemaVersion,
              "one migration per schema version");

// The case columns, then the latest review's (NULL without one).
const char* const kSelectCase = R"(
    SELECT c.id, c.created_at, c.original_name, c.image_ext, c.status, c.bone_age_months,
           c.male, c.chronological_age_months, c.result_json,
           r.reader, r.bone_age_months, r.agrees, r.comment, r.reviewed_at
    FROM cases c
    LEFT JOIN reviews r ON r.id = (SELECT MAX(id) FROM reviews WHERE case_id = c.id))";

Case read_case(const sql::Statement& s) {
    Case c;
    c.id = s.integer(0);
    c.created_at = s.text(1);
    c.original_name = s.text(2);
    c.image_ext = s.text(3);
    c.status = s.text(4);
    c.bone_age_months = s.optional_real(5);
    c.male = s.optional_bool(6);
    c.chronological_age_months = s.optional_real(7);
    c.result_json = s.text(8);
    if (!s.is_null(9))
        c.review = Review{s.text(9), s.real(10), s.integer(11) != 0, s.text(12), s.text(13)};
    return c;
}

class SqliteCaseStore : public CaseStore {
public:
    explicit SqliteCaseStore(const std::filesystem::path& file)
        : db_(file), images_(images_folder(file)) {
        // WAL: readers do not block the writer; FULL: a commit is on disk before it returns,
        // so a process killed after answering a review has kept it.
        db_.exec("PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL; PRAGMA foreign_keys=ON");
        migrate();
        std::error_code ec;
        std::filesystem::create_directories(images_, ec);
        if (ec) throw Error(ErrorKind::NotFound, images_, "cannot be created: " + ec.message());
    }

    std::int64_t add_case(const NewCase& c,
                          const std::function<void(std::int64_t)>& place_files) override {
        std::lock_guard<std::mutex> lock(mutex_);
        sql::Transaction t(db_);
        sql::Statement s(db_, R"(INSERT INTO cases (created_at, original_name, image_ext, status,
                                     bone_age_months, male, chronological_age_months, result_json)
                                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8))");
        s.bind(1, utc_timestamp()).bind(2, c.original_name).bind(3, c.image_ext).bind(4, c.status);
        s.bind(5, c.bone_age_months).bind(6, c.male).bind(7, c.chronological_age_months);
        s.bind(8, c.result_json).run();
        const std::int64_t id = db_.last_insert_id();
        if (place_files) place_files(id);
        t.commit();
        return id;
    }

    std::optional<Case> get_case(std::int64_t id) override {
        std::lock_guard<std::mutex> lock(mutex_);
        sql::Statement s(db_, std::string(kSelectCase) + " WHERE c.id = ?1");
        s.bind(1, id);
        if (!s.step()) return std::nullopt;
        return read_case(s);
    }

    std::vector<Case> recent(int limit) override {
        std::lock_guard<std::mutex> lock(mutex_);
        sql::Statement s(db_, std::string(kSelectCase) + " ORDER BY c.id DESC LIMIT ?1");
        s.bind(1, std::int64_t(limit));
        std::vector<Case> out;
        while (s.step()) out.push_back(read_case(s));
        return out;
    }

    bool save_review(std::int64_t id, const Review& review) override {
        std::lock_guard<std::mutex> lock(mutex_);
        sql::Transaction t(db_);
        sql::Statement exists(db_, "SELECT 1 FROM cases WHERE id = ?1");
        exists.bind(1, id);
        if (!exists.step()) return false;  // the transaction rolls back, nothing was written
        sql::Statement s(db_, R"(INSERT INTO reviews (case_id, reader, bone_age_months, agrees,
                                                      comment, reviewed_at)
                                 VALUES (?1, ?2, ?3, ?4, ?5, ?6))");
        s.bind(1, id).bind(2, review.reader).bind(3, review.bone_age_months);
        s.bind(4, std::int64_t(review.agrees ? 1 : 0)).bind(5, review.comment);
        s.bind(6, utc_timestamp()).run();
        t.commit();
        return true;
    }

    std::string reviewed_csv() override {
        std::lock_guard<std::mutex> lock(mutex_);
        sql::Statement s(db_, std::string(kSelectCase) +
                                  " WHERE r.reader IS NOT NULL AND c.male IS NOT NULL"
                                  " ORDER BY c.id");
        std::ostringstream out;
        out << "id,boneage,male\n";
        while (s.step()) {
            Case c = read_case(s);
            out << c.id << ',' << fmt::format("{:.2f}", c.review->bone_age_months) << ','
                << (*c.male ? "True" : "False") << '\n';
        }
        return out.str();
    }

    const std::filesystem::path& images_dir() const override { return images_; }

private:
    static std::filesystem::path images_folder(const std::filesystem::path& file) {
        return file.parent_path() / (file.stem().string() + "-images");
    }

    void migrate() {
        const int version = db_.user_version();
        if (version > kCaseStoreSchemaVersion)
            throw Error(ErrorKind::BadData, db_.file(),
                        fmt::format("schema version {} is newer than this build's {}; use a "
                                    "newer boneage",
                                    version, kCaseStoreSchemaVersion));
        for (int v = version; v < kCaseStoreSchemaVersion; ++v) {
            sql::Transaction t(db_);
            db_.exec(kMigrations[v]);
            db_.exec(fmt::format("PRAGMA user_version = {}", v + 1));
            t.commit();
        }
    }

    std::mutex mutex_;  // one connection: a transaction must not interleave with another's
    sql::Database db_;
    std::filesystem::path images_;
};

}  // namespace

std::string utc_timestamp() {
    std::time_t now = std::time(nullptr);
    std::tm tm{};
    gmtime_r(&now, &tm);
    char text[32];
    std::strftime(text, sizeof text, "%Y-%m-%dT%H:%M:%SZ", &tm);
    return text;
}

std::unique_ptr<CaseStore> open_sqlite_case_store(const std::filesystem::path& file) {
    return std::make_unique<SqliteCaseStore>(file);
}

}  // namespace boneage
