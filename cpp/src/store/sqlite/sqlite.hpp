// A thin RAII layer over the SQLite C API: a connection, prepared statements, transactions and
// versioned migrations. Every status is checked; failures become couponcore::Error
// (kUnavailable for I/O and busy, kConflict for constraint violations, kInternal otherwise).
#pragma once

#include <sqlite3.h>

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace couponcore::sqlite {

class Db;

class Stmt {
 public:
  Stmt(Db& db, std::string_view sql);
  ~Stmt();
  Stmt(const Stmt&) = delete;
  Stmt& operator=(const Stmt&) = delete;

  Stmt& bind(int index, int64_t v);
  Stmt& bind(int index, std::string_view v);
  Stmt& bind(int index, const std::optional<int64_t>& v);
  Stmt& bind_null(int index);
  // Returns true while there is a row to read; false when done.
  bool step();
  void reset();  // clears bindings too
  void run() { step(); reset(); }

  int64_t i64(int col) const { return sqlite3_column_int64(s_, col); }
  bool is_null(int col) const { return sqlite3_column_type(s_, col) == SQLITE_NULL; }
  std::optional<int64_t> opt_i64(int col) const {
    return is_null(col) ? std::nullopt : std::optional<int64_t>(i64(col));
  }
  std::string text(int col) const;

 private:
  Db& db_;
  sqlite3_stmt* s_ = nullptr;
};

struct Migration {
  const char* component;  // e.g. "coupons", "wallet": each has its own version sequence
  int version;
  const char* sql;
};

class Db {
 public:
  explicit Db(const std::string& path, bool synchronous_full = true);
  ~Db();
  Db(const Db&) = delete;
  Db& operator=(const Db&) = delete;

  void exec(const char* sql);
  int64_t last_insert_rowid() const { return sqlite3_last_insert_rowid(db_); }
  int changes() const { return sqlite3_changes(db_); }
  void migrate(const std::vector<Migration>& migrations);
  [[noreturn]] void fail(int rc, std::string_view what) const;
  sqlite3* raw() { return db_; }

 private:
  sqlite3* db_ = nullptr;
};

// BEGIN IMMEDIATE on construction, ROLLBACK on destruction unless commit() ran.
class Tx {
 public:
  explicit Tx(Db& db);
  ~Tx();
  void commit();

 private:
  Db& db_;
  bool done_ = false;
};

}  // namespace couponcore::sqlite
