#include "store/sqlite/sqlite.hpp"

#include "couponcore/error.hpp"

namespace couponcore::sqlite {

void Db::fail(int rc, std::string_view what) const {
  std::string msg = "sqlite: " + std::string(what) + ": " + sqlite3_errstr(rc);
  if (db_) msg += std::string(" (") + sqlite3_errmsg(db_) + ")";
  const int primary = rc & 0xff;
  if (primary == SQLITE_CONSTRAINT) throw Error(ErrorCode::kConflict, msg);
  if (primary == SQLITE_BUSY || primary == SQLITE_LOCKED || primary == SQLITE_IOERR ||
      primary == SQLITE_FULL || primary == SQLITE_CANTOPEN || primary == SQLITE_READONLY) {
    throw Error(ErrorCode::kUnavailable, msg);
  }
  throw Error(ErrorCode::kInternal, msg);
}

Db::Db(const std::string& path, bool synchronous_full) {
  const int flags = SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX;
  int rc = sqlite3_open_v2(path.c_str(), &db_, flags, nullptr);
  if (rc != SQLITE_OK) {
    std::string msg = "sqlite: cannot open " + path + ": " + sqlite3_errstr(rc);
    sqlite3_close_v2(db_);
    db_ = nullptr;
    throw Error(ErrorCode::kUnavailable, msg);
  }
  sqlite3_busy_timeout(db_, 5000);
  if (path != ":memory:") exec("PRAGMA journal_mode=WAL");
  exec(synchronous_full ? "PRAGMA synchronous=FULL" : "PRAGMA synchronous=NORMAL");
  exec("PRAGMA foreign_keys=ON");
}

Db::~Db() { sqlite3_close_v2(db_); }

void Db::exec(const char* sql) {
  char* err = nullptr;
  int rc = sqlite3_exec(db_, sql, nullptr, nullptr, &err);
  if (rc != SQLITE_OK) {
    std::string what = err ? err : sql;
    sqlite3_free(err);
    fail(rc, what);
  }
}

void Db::migrate(const std::vector<Migration>& migrations) {
  exec(
      "CREATE TABLE IF NOT EXISTS schema_migrations ("
      " component TEXT NOT NULL, version INTEGER NOT NULL, applied_at_us INTEGER NOT NULL,"
      " PRIMARY KEY (component, version))");
  for (const Migration& m : migrations) {
    Tx tx(*this);
    Stmt q(*this, "SELECT 1 FROM schema_migrations WHERE component = ? AND version = ?");
    q.bind(1, std::string_view(m.component)).bind(2, int64_t{m.version});
    if (q.step()) continue;  // applied already; tx rolls back nothing
    exec(m.sql);
    Stmt ins(*this,
             "INSERT INTO schema_migrations(component, version, applied_at_us)"
             " VALUES (?, ?, CAST(strftime('%s','now') AS INTEGER) * 1000000)");
    ins.bind(1, std::string_view(m.component)).bind(2, int64_t{m.version}).run();
    tx.commit();
  }
}

Stmt::Stmt(Db& db, std::string_view sql) : db_(db) {
  int rc = sqlite3_prepare_v3(db.raw(), sql.data(), static_cast<int>(sql.size()),
                              SQLITE_PREPARE_PERSISTENT, &s_, nullptr);
  if (rc != SQLITE_OK) db.fail(rc, "prepare");
}

Stmt::~Stmt() { sqlite3_finalize(s_); }

Stmt& Stmt::bind(int index, int64_t v) {
  int rc = sqlite3_bind_int64(s_, index, v);
  if (rc != SQLITE_OK) db_.fail(rc, "bind");
  return *this;
}

Stmt& Stmt::bind(int index, std::string_view v) {
  int rc = sqlite3_bind_text(s_, index, v.data(), static_cast<int>(v.size()), SQLITE_TRANSIENT);
  if (rc != SQLITE_OK) db_.fail(rc, "bind");
  return *this;
}

Stmt& Stmt::bind(int index, const std::optional<int64_t>& v) {
  return v ? bind(index, *v) : bind_null(index);
}

Stmt& Stmt::bind_null(int index) {
  int rc = sqlite3_bind_null(s_, index);
  if (rc != SQLITE_OK) db_.fail(rc, "bind");
  return *this;
}

bool Stmt::step() {
  int rc = sqlite3_step(s_);
  if (rc == SQLITE_ROW) return true;
  if (rc == SQLITE_DONE) return false;
  sqlite3_reset(s_);
  db_.fail(rc, "step");
}

void Stmt::reset() {
  sqlite3_reset(s_);
  sqlite3_clear_bindings(s_);
}

std::string Stmt::text(int col) const {
  const unsigned char* p = sqlite3_column_text(s_, col);
  int n = sqlite3_column_bytes(s_, col);
  return p ? std::string(reinterpret_cast<const char*>(p), static_cast<std::size_t>(n)) : std::string();
}

Tx::Tx(Db& db) : db_(db) { db_.exec("BEGIN IMMEDIATE"); }

Tx::~Tx() {
  if (!done_) sqlite3_exec(db_.raw(), "ROLLBACK", nullptr, nullptr, nullptr);
}

void Tx::commit() {
  db_.exec("COMMIT");
  done_ = true;
}

}  // namespace couponcore::sqlite
