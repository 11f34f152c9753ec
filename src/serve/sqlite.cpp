// The SQLite layer: errors carry the database file and SQLite's own message.
#include "serve/sqlite.hpp"

#include <sqlite3.h>

#include <boneage/error.hpp>

namespace boneage::sql {

Database::Database(const std::filesystem::path& file) : file_(file) {
    int rc = sqlite3_open_v2(file.c_str(), &db_,
                             SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_FULLMUTEX,
                             nullptr);
    if (rc != SQLITE_OK) {
        std::string message = db_ ? sqlite3_errmsg(db_) : sqlite3_errstr(rc);
        sqlite3_close(db_);
        db_ = nullptr;
        throw Error(ErrorKind::NotFound, file, "cannot open the database: " + message);
    }
    // Readers and the writer may meet (the review of one case while another is listed):
    // wait for the lock a while instead of failing at once.
    sqlite3_busy_timeout(db_, 5000);
}

Database::~Database() { sqlite3_close(db_); }

void Database::fail(const std::string& what) const {
    throw Error(ErrorKind::BadData, file_, what + ": " + sqlite3_errmsg(db_));
}

void Database::exec(const std::string& sql) {
    char* message = nullptr;
    if (sqlite3_exec(db_, sql.c_str(), nullptr, nullptr, &message) != SQLITE_OK) {
        std::string text = message ? message : "unknown error";
        sqlite3_free(message);
        throw Error(ErrorKind::BadData, file_, "'" + sql.substr(0, 60) + "' failed: " + text);
    }
}

std::int64_t Database::last_insert_id() const { return sqlite3_last_insert_rowid(db_); }

int Database::user_version() {
    Statement s(*this, "PRAGMA user_version");
    return s.step() ? static_cast<int>(s.integer(0)) : 0;
}

Statement::Statement(Database& db, const std::string& sql) : db_(db) {
    if (sqlite3_prepare_v2(db.handle(), sql.c_str(), -1, &stmt_, nullptr) != SQLITE_OK)
        db.fail("cannot prepare '" + sql.substr(0, 60) + "'");
}

Statement::~Statement() { sqlite3_finalize(stmt_); }

Statement& Statement::bind(int index, const std::string& text) {
    if (sqlite3_bind_text(stmt_, index, text.data(), static_cast<int>(text.size()),
                          SQLITE_TRANSIENT) != SQLITE_OK)
        db_.fail("cannot bind a parameter");
    return *this;
}

Statement& Statement::bind(int index, std::int64_t value) {
    if (sqlite3_bind_int64(stmt_, index, value) != SQLITE_OK) db_.fail("cannot bind a parameter");
    return *this;
}

Statement& Statement::bind(int index, double value) {
    if (sqlite3_bind_double(stmt_, index, value) != SQLITE_OK) db_.fail("cannot bind a parameter");
    return *this;
}

Statement& Statement::bind(int index, std::optional<double> value) {
    if (value) return bind(index, *value);
    if (sqlite3_bind_null(stmt_, index) != SQLITE_OK) db_.fail("cannot bind a parameter");
    return *this;
}

Statement& Statement::bind(int index, std::optional<bool> value) {
    if (value) return bind(index, std::int64_t(*value ? 1 : 0));
    if (sqlite3_bind_null(stmt_, index) != SQLITE_OK) db_.fail("cannot bind a parameter");
    return *this;
}

bool Statement::step() {
    int rc = sqlite3_step(stmt_);
    if (rc == SQLITE_ROW) return true;
    if (rc == SQLITE_DONE) return false;
    db_.fail("a statement failed");
}

void Statement::run() {
    while (step()) {
    }
}

std::int64_t Statement::integer(int column) const { return sqlite3_column_int64(stmt_, column); }

double Statement::real(int column) const { return sqlite3_column_double(stmt_, column); }

std::string Statement::text(int column) const {
    const unsigned char* p = sqlite3_column_text(stmt_, column);
    return p ? std::string(reinterpret_cast<const char*>(p),
                           static_cast<std::size_t>(sqlite3_column_bytes(stmt_, column)))
             : std::string();
}

bool Statement::is_null(int column) const {
    return sqlite3_column_type(stmt_, column) == SQLITE_NULL;
}

std::optional<double> Statement::optional_real(int column) const {
    return is_null(column) ? std::nullopt : std::optional<double>(real(column));
}

std::optional<bool> Statement::optional_bool(int column) const {
    return is_null(column) ? std::nullopt : std::optional<bool>(integer(column) != 0);
}

Transaction::Transaction(Database& db) : db_(db) { db_.exec("BEGIN IMMEDIATE"); }

Transaction::~Transaction() {
    if (done_) return;
    try {
        db_.exec("ROLLBACK");
    } catch (...) {
        // Already rolled back by SQLite (it does so on some errors); nothing left to undo.
    }
}

void Transaction::commit() {
    db_.exec("COMMIT");
    done_ = true;
}

}  // namespace boneage::sql
