// A thin RAII layer over the SQLite C API: a connection, prepared statements with bound
// parameters, and a transaction that rolls back unless committed. Every failure throws
// boneage::Error naming the database file and SQLite's message.
#pragma once

#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>

struct sqlite3;
struct sqlite3_stmt;

namespace boneage::sql {

class Database {
public:
    explicit Database(const std::filesystem::path& file);  // opens or creates
    ~Database();
    Database(const Database&) = delete;
    Database& operator=(const Database&) = delete;

    // Runs one or more statements without results (schema, pragmas).
    void exec(const std::string& sql);
    std::int64_t last_insert_id() const;
    int user_version();
    const std::filesystem::path& file() const { return file_; }
    sqlite3* handle() const { return db_; }
    // Throws boneage::Error with the file name, `what` and SQLite's message.
    [[noreturn]] void fail(const std::string& what) const;

private:
    std::filesystem::path file_;
    sqlite3* db_ = nullptr;
};

class Statement {
public:
    Statement(Database& db, const std::string& sql);
    ~Statement();
    Statement(const Statement&) = delete;
    Statement& operator=(const Statement&) = delete;

    // Parameters are numbered from 1, as in SQL's ?1.
    Statement& bind(int index, const std::string& text);
    Statement& bind(int index, std::int64_t value);
    Statement& bind(int index, double value);
    Statement& bind(int index, std::optional<double> value);  // NULL when empty
    Statement& bind(int index, std::optional<bool> value);    // 1, 0 or NULL

    // The next row: true while there is one.
    bool step();
    // Runs a statement without results to its end.
    void run();

    std::int64_t integer(int column) const;
    double real(int column) const;
    std::string text(int column) const;
    bool is_null(int column) const;
    std::optional<double> optional_real(int column) const;
    std::optional<bool> optional_bool(int column) const;

private:
    Database& db_;
    sqlite3_stmt* stmt_ = nullptr;
};

// BEGIN IMMEDIATE (the write lock at once, so two writers never deadlock upgrading), and
// ROLLBACK on destruction unless commit() ran.
class Transaction {
public:
    explicit Transaction(Database& db);
    ~Transaction();
    void commit();

private:
    Database& db_;
    bool done_ = false;
};

}  // namespace boneage::sql
