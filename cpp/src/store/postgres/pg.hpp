// A thin RAII layer over libpq: a connection that reconnects, results, text-format parameters
// (including bigint[] / int[] / text[] arrays for set-based `unnest` statements), transactions,
// COPY FROM STDIN, and versioned migrations with per-component registration.
//
// Entry points:
//   pg::Conn conn(url_or_conninfo);         connects (libpq URL or key=value conninfo)
//   conn.exec(sql)                           one or more statements, no parameters
//   conn.exec(sql, pg::Params().add(1).add("x"))    one statement, $1.. parameters
//   conn.exec_prepared("name", sql, params)  prepared once per physical connection
//   pg::Tx tx(conn); ... tx.commit();        BEGIN, ROLLBACK unless committed
//   conn.copy_in("COPY t FROM STDIN", rows)  text-format COPY
//   pg::migrate(conn, list) / pg::migrate_registered(conn)
//
// Errors. Every libpq status is checked; a failure throws pg::PgError, a couponcore::Error whose
// code says what the caller may do, and whose sqlstate() says exactly what happened:
//   connection lost / cannot connect / server shutting down (class 08, 57P0x) -> kUnavailable
//   deadlock 40P01, serialization failure 40001 (retry the transaction)       -> kUnavailable
//   unique violation 23505 and other integrity violations (class 23)          -> kConflict
//   data exceptions (class 22)                                                -> kInvalidArgument
//   anything else                                                             -> kInternal
// After a lost connection the next exec() reconnects by itself, but never inside a transaction:
// a Tx begun on a connection that was lost refuses to commit (kUnavailable), because the
// server rolled it back.
//
// Not thread-safe: one Conn per thread (or behind the owner's mutex).
#pragma once

#include <libpq-fe.h>

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_set>
#include <vector>

#include "couponcore/error.hpp"

namespace couponcore::pg {

class PgError : public Error {
 public:
  PgError(ErrorCode code, const std::string& message, std::string sqlstate, bool connection_lost)
      : Error(code, message), sqlstate_(std::move(sqlstate)), connection_lost_(connection_lost) {}
  // Five-character SQLSTATE, or empty when the server did not send one (connection failures).
  const std::string& sqlstate() const noexcept { return sqlstate_; }
  // True when the connection is gone; the statement's outcome may be unknown (e.g. COMMIT).
  bool connection_lost() const noexcept { return connection_lost_; }
  // Deadlock, serialization failure or a lost connection: retrying the transaction is correct.
  bool retryable() const noexcept;

 private:
  std::string sqlstate_;
  bool connection_lost_;
};

// The mapping described at the top, for callers that classify SQLSTATEs themselves.
ErrorCode error_code_for_sqlstate(std::string_view sqlstate) noexcept;
bool is_retryable_sqlstate(std::string_view sqlstate) noexcept;  // 40P01, 40001, class 08, 57P0x

// A read that is safe to repeat: a connection that died while idle (a server restart) is only
// noticed when used, so the read is tried once more (the Conn reconnects on its next exec).
template <typename Fn>
auto read_once_more(Fn&& fn) -> decltype(fn()) {
  try {
    return fn();
  } catch (const PgError& e) {
    if (!e.connection_lost()) throw;
  }
  return fn();
}

// Parameters in text format. NULL is a missing value. Arrays are rendered as PostgreSQL array
// literals, so one statement can carry a whole batch: `unnest($1::bigint[], $2::text[])`.
class Params {
 public:
  Params& add(int64_t v);
  Params& add(int32_t v) { return add(static_cast<int64_t>(v)); }
  Params& add(uint32_t v) { return add(static_cast<int64_t>(v)); }
  Params& add(std::string_view v);
  Params& add(const char* v) { return add(std::string_view(v)); }
  Params& add(const std::string& v) { return add(std::string_view(v)); }
  Params& add(const std::optional<int64_t>& v);
  Params& add(bool v);
  Params& add_null();
  Params& add_array(const std::vector<int64_t>& values);
  Params& add_array(const std::vector<uint32_t>& values);
  Params& add_array(const std::vector<std::string>& values);  // every element non-NULL
  // Text elements where an empty string stands for NULL (optional ids).
  Params& add_array_empty_as_null(const std::vector<std::string>& values);

  int size() const { return static_cast<int>(values_.size()); }
  // Pointers into this object: valid until the next add().
  std::vector<const char*> pointers() const;

 private:
  std::vector<std::string> values_;
  std::vector<bool> nulls_;
};

// One PGresult; move-only.
class Result {
 public:
  Result() = default;
  explicit Result(PGresult* r) : r_(r) {}
  ~Result() { PQclear(r_); }
  Result(Result&& o) noexcept : r_(o.r_) { o.r_ = nullptr; }
  Result& operator=(Result&& o) noexcept;
  Result(const Result&) = delete;
  Result& operator=(const Result&) = delete;

  int rows() const { return r_ ? PQntuples(r_) : 0; }
  int cols() const { return r_ ? PQnfields(r_) : 0; }
  bool is_null(int row, int col) const { return PQgetisnull(r_, row, col) != 0; }
  std::string_view text(int row, int col) const;
  int64_t i64(int row, int col) const;  // throws kInternal if not an integer
  std::optional<int64_t> opt_i64(int row, int col) const;
  bool boolean(int row, int col) const;  // 't' / 'f'
  // Rows touched by INSERT/UPDATE/DELETE (PQcmdTuples), 0 when not applicable.
  int64_t affected() const;
  PGresult* raw() const { return r_; }

 private:
  PGresult* r_ = nullptr;
};

struct ConnOptions {
  int connect_timeout_s = 5;            // libpq connect_timeout (the URL may override it)
  std::string application_name = "couponcore";
  // Server-side statement_timeout applied after each connect; 0 = the server's default.
  int64_t statement_timeout_ms = 0;
  bool connect_now = true;              // false: the first exec() connects
};

// `conninfo` (a libpq URL or key=value string) as a key=value string that also sets the
// server parameter `name` to `value` for every session it opens (libpq `options`, "-c
// name=value", after the conninfo's own options). InvalidArgument if libpq cannot parse it.
std::string conninfo_with_setting(const std::string& conninfo, std::string_view name, std::string_view value);

// COPY text-format fields: an integer; text with backslash, tab, newline and CR escaped.
void append_copy_int(std::string& out, int64_t v);
void append_copy_text(std::string& out, std::string_view v);

class Conn {
 public:
  explicit Conn(std::string conninfo, ConnOptions options = {});
  ~Conn();
  Conn(const Conn&) = delete;
  Conn& operator=(const Conn&) = delete;

  // Connects if there is no healthy connection; throws PgError (kUnavailable) if it cannot.
  void ensure_connected();
  // Drops the connection; the next exec() connects again.
  void disconnect();
  bool connected() const { return conn_ && PQstatus(conn_) == CONNECTION_OK; }
  // Increases on every successful (re)connect: a transaction begun on generation g is void if
  // the generation changed.
  uint64_t generation() const { return generation_; }

  Result exec(std::string_view sql);  // may hold several statements
  Result exec(std::string_view sql, const Params& params);
  // Prepares `sql` under `name` on first use per physical connection, then executes it.
  Result exec_prepared(const std::string& name, std::string_view sql, const Params& params);
  // COPY ... FROM STDIN with `data` in the COPY text format; returns rows copied.
  int64_t copy_in(std::string_view copy_sql, std::string_view data);

  PGconn* raw() { return conn_; }  // for pipeline mode and other advanced use; may be null
  const std::string& conninfo() const { return conninfo_; }

 private:
  Result check(PGresult* r, std::string_view what);
  [[noreturn]] void fail_connection(std::string_view what);

  friend class Tx;
  std::string conninfo_;
  ConnOptions options_;
  PGconn* conn_ = nullptr;
  uint64_t generation_ = 0;
  bool in_tx_ = false;  // set by Tx: a lost connection is not silently replaced mid-transaction
  std::unordered_set<std::string> prepared_;
};

// BEGIN on construction (or the given statement, e.g. "BEGIN ISOLATION LEVEL SERIALIZABLE"),
// ROLLBACK on destruction unless commit() ran. commit() throws kUnavailable if the connection
// was replaced since BEGIN. A PgError from COMMIT with connection_lost() means the outcome is
// unknown: make the transaction's effects idempotent and retry.
class Tx {
 public:
  explicit Tx(Conn& conn, std::string_view begin_sql = "BEGIN");
  ~Tx();
  Tx(const Tx&) = delete;
  Tx& operator=(const Tx&) = delete;
  void commit();

 private:
  Conn& conn_;
  uint64_t generation_;
  bool done_ = false;
};

// Versioned migrations. Each component ("coupons", "wallet", ...) has its own version
// sequence, recorded in schema_migrations(component, version, applied_at_us).
struct Migration {
  const char* component;
  int version;
  const char* sql;  // may hold several statements; runs in the migration's transaction
};

// Applies, in one transaction under an advisory lock (so concurrent migrators queue), every
// migration of `migrations` not yet recorded. Returns how many were applied.
int migrate(Conn& conn, const std::vector<Migration>& migrations);

// A component registers its list once, from its own file:
//   static const pg::MigrationRegistrar kWalletMigrations("wallet", &wallet_migrations);
// migrate_registered() applies every registered list in component-name order.
// Note: a registrar in a static library runs only if its object file is linked, so place it
// in the same .cpp as something the program calls (the component's open function).
using MigrationListFn = const std::vector<Migration>& (*)();
class MigrationRegistrar {
 public:
  MigrationRegistrar(const char* component, MigrationListFn list);
};
void register_migrations(const char* component, MigrationListFn list);
int migrate_registered(Conn& conn);
std::vector<std::string> registered_components();

}  // namespace couponcore::pg
