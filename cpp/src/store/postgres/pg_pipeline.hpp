// libpq pipeline mode for the wallet store: several statements, and several transaction
// segments, in one network round trip.
//
//   Pipeline p(conn, &prepared);
//   int a = p.add("wallet_lock", sql, params);   // prepared on first use per connection
//   p.sync();                                     // ends a segment (an implicit transaction
//                                                 // unless the segment has BEGIN)
//   PipelineResults r = p.run();                  // flush, read everything, leave pipeline mode
//   r.ok(a) ? r.result(a) : ...; r.first_error()  // errors are collected, not thrown
//
// The statements of a pipeline run on the server one after the other, as if sent one by one;
// after an error the rest of its segment is skipped (reported as aborted) until the next sync.
// A lost connection is thrown as pg::PgError (kUnavailable, connection_lost) after dropping
// the connection; errors the server reports are returned, so the caller can tell a unique
// violation from a deadlock.
//
// Works on pg::Conn::raw(): the caller makes sure the connection is up (ensure_connected)
// before building a pipeline, and never lets pg::Conn reconnect in the middle of its
// transaction (it compares pg::Conn::generation()).
#pragma once

#include <optional>
#include <string>
#include <unordered_set>
#include <vector>

#include "store/postgres/pg.hpp"

namespace couponcore::wallet {

struct PipelineError {
  std::string sqlstate;
  std::string constraint;  // PG_DIAG_CONSTRAINT_NAME, for integrity violations
  std::string message;
};

class PipelineResults {
 public:
  bool ok(int i) const { return !errors_[static_cast<std::size_t>(i)]; }
  pg::Result& result(int i) { return results_[static_cast<std::size_t>(i)]; }
  const std::optional<PipelineError>& error(int i) const { return errors_[static_cast<std::size_t>(i)]; }
  // The first statement that failed (later ones of its segment were skipped), if any.
  const PipelineError* first_error() const;
  // Throws the first error as pg::PgError (code by pg::error_code_for_sqlstate).
  void throw_if_error() const;

 private:
  friend class Pipeline;
  std::vector<pg::Result> results_;
  std::vector<std::optional<PipelineError>> errors_;  // aborted statements carry sqlstate ""
};

class Pipeline {
 public:
  // prepared: names prepared on the current physical connection (the caller clears it when
  // pg::Conn::generation() changes).
  Pipeline(pg::Conn& conn, std::unordered_set<std::string>* prepared);
  ~Pipeline();
  Pipeline(const Pipeline&) = delete;
  Pipeline& operator=(const Pipeline&) = delete;

  // Statements without parameters (BEGIN, COMMIT) pass an empty name and Params.
  int add(const std::string& name, const std::string& sql, const pg::Params& params);
  void sync();
  PipelineResults run();

 private:
  [[noreturn]] void lost(const char* what);
  struct Pending {
    bool is_sync = false;
    bool is_prepare = false;
    int index = -1;    // into results (statements only)
    std::string name;  // prepares only
  };

  pg::Conn& conn_;
  PGconn* raw_;
  std::unordered_set<std::string>* prepared_;
  std::vector<Pending> pending_;
  int statements_ = 0;
  bool active_ = false;
};

}  // namespace couponcore::wallet
