// libpq layer: see pg.hpp for the design and the error mapping.
#include "store/postgres/pg.hpp"

#include <algorithm>
#include <charconv>
#include <cstdlib>
#include <map>
#include <mutex>

namespace couponcore::pg {

namespace {

constexpr std::size_t kArrayElementsMax = 1'000'000;  // one parameter carries at most this many

void silent_notice(void*, const char*) {}

bool starts_with(std::string_view s, std::string_view p) { return s.substr(0, p.size()) == p; }

std::string trim_message(const char* m) {
  std::string s = m ? m : "";
  while (!s.empty() && (s.back() == '\n' || s.back() == ' ')) s.pop_back();
  return s;
}

void append_quoted_element(std::string& out, std::string_view v) {
  out.push_back('"');
  for (char c : v) {
    if (c == '"' || c == '\\') out.push_back('\\');
    out.push_back(c);
  }
  out.push_back('"');
}

template <typename Int>
std::string int_array_literal(const std::vector<Int>& values) {
  if (values.size() > kArrayElementsMax) throw_invalid("array parameter over the element limit");
  std::string out;
  out.reserve(values.size() * 8 + 2);
  out.push_back('{');
  char buf[24];
  for (std::size_t i = 0; i < values.size(); ++i) {
    if (i) out.push_back(',');
    auto [end, ec] = std::to_chars(buf, buf + sizeof buf, values[i]);
    out.append(buf, end);
  }
  out.push_back('}');
  return out;
}

std::string text_array_literal(const std::vector<std::string>& values, bool empty_as_null) {
  if (values.size() > kArrayElementsMax) throw_invalid("array parameter over the element limit");
  std::size_t bytes = 2;
  for (const auto& v : values) bytes += v.size() + 3;
  std::string out;
  out.reserve(bytes);
  out.push_back('{');
  for (std::size_t i = 0; i < values.size(); ++i) {
    if (i) out.push_back(',');
    if (empty_as_null && values[i].empty()) {
      out.append("NULL");
    } else {
      append_quoted_element(out, values[i]);
    }
  }
  out.push_back('}');
  return out;
}

}  // namespace

// ---- errors ----------------------------------------------------------------------------------

bool is_retryable_sqlstate(std::string_view s) noexcept {
  return s == "40P01" || s == "40001" || starts_with(s, "08") || s == "57P01" || s == "57P02" ||
         s == "57P03";
}

ErrorCode error_code_for_sqlstate(std::string_view s) noexcept {
  if (is_retryable_sqlstate(s)) return ErrorCode::kUnavailable;
  if (s == "53300" || s == "53400" || s == "57014") return ErrorCode::kUnavailable;  // too many conns, cancel
  if (starts_with(s, "23")) return ErrorCode::kConflict;
  if (starts_with(s, "22")) return ErrorCode::kInvalidArgument;
  return ErrorCode::kInternal;
}

bool PgError::retryable() const noexcept { return connection_lost_ || is_retryable_sqlstate(sqlstate_); }

// ---- params ----------------------------------------------------------------------------------

Params& Params::add(int64_t v) {
  values_.push_back(std::to_string(v));
  nulls_.push_back(false);
  return *this;
}

Params& Params::add(std::string_view v) {
  values_.emplace_back(v);
  nulls_.push_back(false);
  return *this;
}

Params& Params::add(const std::optional<int64_t>& v) { return v ? add(*v) : add_null(); }

Params& Params::add(bool v) { return add(std::string_view(v ? "t" : "f")); }

Params& Params::add_null() {
  values_.emplace_back();
  nulls_.push_back(true);
  return *this;
}

Params& Params::add_array(const std::vector<int64_t>& values) {
  values_.push_back(int_array_literal(values));
  nulls_.push_back(false);
  return *this;
}

Params& Params::add_array(const std::vector<uint32_t>& values) {
  values_.push_back(int_array_literal(values));
  nulls_.push_back(false);
  return *this;
}

Params& Params::add_array(const std::vector<std::string>& values) {
  values_.push_back(text_array_literal(values, false));
  nulls_.push_back(false);
  return *this;
}

Params& Params::add_array_empty_as_null(const std::vector<std::string>& values) {
  values_.push_back(text_array_literal(values, true));
  nulls_.push_back(false);
  return *this;
}

std::vector<const char*> Params::pointers() const {
  std::vector<const char*> p(values_.size());
  for (std::size_t i = 0; i < values_.size(); ++i) p[i] = nulls_[i] ? nullptr : values_[i].c_str();
  return p;
}

// ---- results ---------------------------------------------------------------------------------

Result& Result::operator=(Result&& o) noexcept {
  if (this != &o) {
    PQclear(r_);
    r_ = o.r_;
    o.r_ = nullptr;
  }
  return *this;
}

std::string_view Result::text(int row, int col) const {
  return std::string_view(PQgetvalue(r_, row, col), static_cast<std::size_t>(PQgetlength(r_, row, col)));
}

int64_t Result::i64(int row, int col) const {
  std::string_view t = text(row, col);
  int64_t v = 0;
  auto [end, ec] = std::from_chars(t.data(), t.data() + t.size(), v);
  if (ec != std::errc() || end != t.data() + t.size()) {
    throw Error(ErrorCode::kInternal, "postgres: expected an integer, got '" + std::string(t) + "'");
  }
  return v;
}

std::optional<int64_t> Result::opt_i64(int row, int col) const {
  if (is_null(row, col)) return std::nullopt;
  return i64(row, col);
}

bool Result::boolean(int row, int col) const { return text(row, col) == "t"; }

int64_t Result::affected() const {
  const char* n = r_ ? PQcmdTuples(r_) : nullptr;
  if (!n || !*n) return 0;
  return std::strtoll(n, nullptr, 10);
}

// ---- connection ------------------------------------------------------------------------------

Conn::Conn(std::string conninfo, ConnOptions options) : conninfo_(std::move(conninfo)), options_(std::move(options)) {
  if (options_.connect_now) ensure_connected();
}

Conn::~Conn() { PQfinish(conn_); }

void Conn::disconnect() {
  PQfinish(conn_);
  conn_ = nullptr;
  prepared_.clear();
}

void Conn::ensure_connected() {
  if (connected()) return;
  if (in_tx_) {
    throw PgError(ErrorCode::kUnavailable, "postgres: connection lost during the transaction", "08006", true);
  }
  disconnect();
  // Our defaults come before the expanded URL so that the URL's own settings win.
  const std::string timeout = std::to_string(options_.connect_timeout_s);
  const char* keywords[] = {"connect_timeout", "application_name", "keepalives", "keepalives_idle",
                            "dbname", nullptr};
  const char* values[] = {timeout.c_str(), options_.application_name.c_str(), "1", "30",
                          conninfo_.c_str(), nullptr};
  conn_ = PQconnectdbParams(keywords, values, /*expand_dbname=*/1);
  if (!conn_) throw PgError(ErrorCode::kUnavailable, "postgres: out of memory while connecting", "", true);
  if (PQstatus(conn_) != CONNECTION_OK) {
    std::string msg = "postgres: cannot connect: " + trim_message(PQerrorMessage(conn_));
    disconnect();
    throw PgError(ErrorCode::kUnavailable, msg, "08001", true);
  }
  PQsetNoticeProcessor(conn_, silent_notice, nullptr);
  ++generation_;
  if (options_.statement_timeout_ms > 0) {
    exec("SET statement_timeout = " + std::to_string(options_.statement_timeout_ms));
  }
}

void Conn::fail_connection(std::string_view what) {
  std::string msg = "postgres: " + std::string(what) + ": connection lost";
  if (conn_) msg += ": " + trim_message(PQerrorMessage(conn_));
  disconnect();
  throw PgError(ErrorCode::kUnavailable, msg, "08006", true);
}

Result Conn::check(PGresult* raw, std::string_view what) {
  Result r(raw);
  if (!raw) fail_connection(what);
  const ExecStatusType st = PQresultStatus(raw);
  if (st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK || st == PGRES_EMPTY_QUERY ||
      st == PGRES_COPY_IN) {
    return r;
  }
  const char* state = PQresultErrorField(raw, PG_DIAG_SQLSTATE);
  std::string sqlstate = state ? state : "";
  std::string msg = "postgres: " + std::string(what) + ": " + trim_message(PQresultErrorMessage(raw));
  const bool lost = PQstatus(conn_) != CONNECTION_OK;
  ErrorCode code = lost ? ErrorCode::kUnavailable : error_code_for_sqlstate(sqlstate);
  if (sqlstate.empty() && !lost) code = ErrorCode::kInternal;
  if (lost) disconnect();
  throw PgError(code, msg, sqlstate.empty() && lost ? "08006" : sqlstate, lost);
}

Result Conn::exec(std::string_view sql) {
  ensure_connected();
  std::string s(sql);
  return check(PQexec(conn_, s.c_str()), "exec");
}

Result Conn::exec(std::string_view sql, const Params& params) {
  ensure_connected();
  std::string s(sql);
  std::vector<const char*> p = params.pointers();
  return check(PQexecParams(conn_, s.c_str(), params.size(), nullptr, p.data(), nullptr, nullptr, 0), "exec");
}

Result Conn::exec_prepared(const std::string& name, std::string_view sql, const Params& params) {
  ensure_connected();
  if (!prepared_.count(name)) {
    std::string s(sql);
    check(PQprepare(conn_, name.c_str(), s.c_str(), params.size(), nullptr), "prepare");
    prepared_.insert(name);
  }
  std::vector<const char*> p = params.pointers();
  return check(PQexecPrepared(conn_, name.c_str(), params.size(), p.data(), nullptr, nullptr, 0), "exec");
}

int64_t Conn::copy_in(std::string_view copy_sql, std::string_view data) {
  ensure_connected();
  std::string s(copy_sql);
  Result start = check(PQexec(conn_, s.c_str()), "copy");
  if (PQresultStatus(start.raw()) != PGRES_COPY_IN) {
    throw Error(ErrorCode::kInternal, "postgres: copy_in needs a COPY ... FROM STDIN statement");
  }
  constexpr std::size_t kChunkBytes = 1 << 20;
  for (std::size_t off = 0; off < data.size(); off += kChunkBytes) {
    const std::size_t n = std::min(kChunkBytes, data.size() - off);
    if (PQputCopyData(conn_, data.data() + off, static_cast<int>(n)) != 1) fail_connection("copy data");
  }
  if (PQputCopyEnd(conn_, nullptr) != 1) fail_connection("copy end");
  // Take the command's result, then drain until libpq reports the end of it, before looking at
  // the result: a failed COPY must leave the connection ready for the ROLLBACK.
  PGresult* end_raw = PQgetResult(conn_);
  while (PGresult* extra = PQgetResult(conn_)) PQclear(extra);
  Result end = check(end_raw, "copy");
  return end.affected();
}

// ---- transactions ----------------------------------------------------------------------------

Tx::Tx(Conn& conn, std::string_view begin_sql) : conn_(conn) {
  if (conn_.in_tx_) throw Error(ErrorCode::kInternal, "postgres: nested pg::Tx on one connection");
  conn_.exec(begin_sql);
  generation_ = conn_.generation();
  conn_.in_tx_ = true;
}

Tx::~Tx() {
  conn_.in_tx_ = false;
  if (done_ || !conn_.connected() || conn_.generation() != generation_) return;
  PGresult* r = PQexec(conn_.raw(), "ROLLBACK");
  PQclear(r);
}

void Tx::commit() {
  done_ = true;  // whatever COMMIT says, there is nothing left to roll back
  if (conn_.generation() != generation_ || !conn_.connected()) {
    conn_.in_tx_ = false;
    throw PgError(ErrorCode::kUnavailable, "postgres: connection lost during the transaction", "08006", true);
  }
  conn_.in_tx_ = false;
  conn_.exec("COMMIT");
}

// ---- COPY fields ------------------------------------------------------------------------------

std::string conninfo_with_setting(const std::string& conninfo, std::string_view name, std::string_view value) {
  char* err = nullptr;
  PQconninfoOption* parsed = PQconninfoParse(conninfo.c_str(), &err);
  if (!parsed) {
    const std::string msg = err ? trim_message(err) : "out of memory";
    PQfreemem(err);
    throw Error(ErrorCode::kInvalidArgument, "postgres url: " + msg);
  }
  // A key=value conninfo value: single-quoted, backslash and quote escaped.
  auto quoted = [](std::string_view v) {
    std::string q = "'";
    for (char c : v) {
      if (c == '\\' || c == '\'') q.push_back('\\');
      q.push_back(c);
    }
    return q + "'";
  };
  std::string out, options;
  for (const PQconninfoOption* o = parsed; o->keyword; ++o) {
    if (!o->val) continue;
    if (std::string_view(o->keyword) == "options") {
      options = o->val;
      continue;
    }
    out.append(o->keyword).append("=").append(quoted(o->val)).append(" ");
  }
  PQconninfoFree(parsed);
  // Within `options`, a space or backslash in a value is escaped with a backslash.
  std::string setting = "-c " + std::string(name) + "=";
  for (char c : value) {
    if (c == ' ' || c == '\\') setting.push_back('\\');
    setting.push_back(c);
  }
  options.append(options.empty() ? "" : " ").append(setting);
  return out.append("options=").append(quoted(options));
}

void append_copy_int(std::string& out, int64_t v) {
  char buf[24];
  auto [end, ec] = std::to_chars(buf, buf + sizeof buf, v);
  out.append(buf, end);
}

void append_copy_text(std::string& out, std::string_view v) {
  for (char c : v) {
    switch (c) {
      case '\\': out.append("\\\\"); break;
      case '\t': out.append("\\t"); break;
      case '\n': out.append("\\n"); break;
      case '\r': out.append("\\r"); break;
      default: out.push_back(c);
    }
  }
}

// ---- migrations ------------------------------------------------------------------------------

namespace {

constexpr int64_t kMigrationLockKey = 0x636f75706f6e;  // "coupon"

struct Registry {
  std::mutex mu;
  std::map<std::string, MigrationListFn> lists;
};

Registry& registry() {
  static Registry r;
  return r;
}

}  // namespace

int migrate(Conn& conn, const std::vector<Migration>& migrations) {
  Tx tx(conn);
  conn.exec("SELECT pg_advisory_xact_lock($1)", Params().add(kMigrationLockKey));
  conn.exec(
      "CREATE TABLE IF NOT EXISTS schema_migrations ("
      " component text NOT NULL, version integer NOT NULL, applied_at_us bigint NOT NULL,"
      " PRIMARY KEY (component, version))");
  int applied = 0;
  for (const Migration& m : migrations) {
    Result q = conn.exec("SELECT 1 FROM schema_migrations WHERE component = $1 AND version = $2",
                         Params().add(m.component).add(int64_t{m.version}));
    if (q.rows() > 0) continue;
    conn.exec(m.sql);
    conn.exec(
        "INSERT INTO schema_migrations(component, version, applied_at_us)"
        " VALUES ($1, $2, (extract(epoch from clock_timestamp()) * 1000000)::bigint)",
        Params().add(m.component).add(int64_t{m.version}));
    ++applied;
  }
  tx.commit();
  return applied;
}

void register_migrations(const char* component, MigrationListFn list) {
  Registry& r = registry();
  std::lock_guard lock(r.mu);
  r.lists[component] = list;
}

MigrationRegistrar::MigrationRegistrar(const char* component, MigrationListFn list) {
  register_migrations(component, list);
}

std::vector<std::string> registered_components() {
  Registry& r = registry();
  std::lock_guard lock(r.mu);
  std::vector<std::string> out;
  for (const auto& [name, fn] : r.lists) out.push_back(name);
  return out;
}

int migrate_registered(Conn& conn) {
  std::vector<Migration> all;
  {
    Registry& r = registry();
    std::lock_guard lock(r.mu);
    for (const auto& [name, fn] : r.lists) {
      const std::vector<Migration>& list = fn();
      all.insert(all.end(), list.begin(), list.end());
    }
  }
  return migrate(conn, all);
}

}  // namespace couponcore::pg
