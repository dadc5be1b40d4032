// libpq pipeline mode for the wallet store (see pg_pipeline.hpp).
//
// Reading results follows libpq's contract: every queued command yields its results followed by
// a NULL; a sync yields one PGRES_PIPELINE_SYNC (no NULL); a command skipped after an error
// yields PGRES_PIPELINE_ABORTED then NULL. Everything queued is read before run() returns, so
// the connection leaves pipeline mode idle.
#include "store/postgres/pg_pipeline.hpp"

namespace couponcore::wallet {

namespace {

std::string trimmed(const char* m) {
  std::string s = m ? m : "";
  while (!s.empty() && (s.back() == '\n' || s.back() == ' ')) s.pop_back();
  return s;
}

PipelineError error_of(PGresult* r) {
  const char* state = PQresultErrorField(r, PG_DIAG_SQLSTATE);
  const char* constraint = PQresultErrorField(r, PG_DIAG_CONSTRAINT_NAME);
  return PipelineError{state ? state : "", constraint ? constraint : "", trimmed(PQresultErrorMessage(r))};
}

}  // namespace

const PipelineError* PipelineResults::first_error() const {
  for (const auto& e : errors_) {
    if (e && !e->sqlstate.empty()) return &*e;
  }
  for (const auto& e : errors_) {
    if (e) return &*e;
  }
  return nullptr;
}

void PipelineResults::throw_if_error() const {
  const PipelineError* e = first_error();
  if (!e) return;
  ErrorCode code = e->sqlstate.empty() ? ErrorCode::kInternal : pg::error_code_for_sqlstate(e->sqlstate);
  throw pg::PgError(code, "postgres: " + e->message, e->sqlstate, false);
}

Pipeline::Pipeline(pg::Conn& conn, std::unordered_set<std::string>* prepared)
    : conn_(conn), raw_(conn.raw()), prepared_(prepared) {
  if (!raw_ || PQstatus(raw_) != CONNECTION_OK) lost("pipeline");
  if (PQenterPipelineMode(raw_) != 1) lost("enter pipeline mode");
  active_ = true;
}

Pipeline::~Pipeline() {
  // run() not reached (an exception while queueing): drop the connection rather than leave
  // it in pipeline mode with unread results. The next batch reconnects.
  if (active_) conn_.disconnect();
}

void Pipeline::lost(const char* what) {
  std::string msg = std::string("postgres: ") + what + ": connection lost";
  if (raw_) msg += ": " + trimmed(PQerrorMessage(raw_));
  active_ = false;
  conn_.disconnect();
  throw pg::PgError(ErrorCode::kUnavailable, msg, "08006", true);
}

int Pipeline::add(const std::string& name, const std::string& sql, const pg::Params& params) {
  const int index = statements_++;
  if (name.empty()) {
    if (PQsendQueryParams(raw_, sql.c_str(), 0, nullptr, nullptr, nullptr, nullptr, 0) != 1) lost("send");
    pending_.push_back(Pending{false, false, index, {}});
    return index;
  }
  if (!prepared_->count(name)) {
    if (PQsendPrepare(raw_, name.c_str(), sql.c_str(), params.size(), nullptr) != 1) lost("prepare");
    pending_.push_back(Pending{false, true, -1, name});
    prepared_->insert(name);  // run() forgets it again if the server refuses
  }
  std::vector<const char*> values = params.pointers();
  if (PQsendQueryPrepared(raw_, name.c_str(), params.size(), values.data(), nullptr, nullptr, 0) != 1) {
    lost("send");
  }
  pending_.push_back(Pending{false, false, index, {}});
  return index;
}

void Pipeline::sync() {
  if (PQpipelineSync(raw_) != 1) lost("sync");
  pending_.push_back(Pending{true, false, -1, {}});
}

PipelineResults Pipeline::run() {
  PipelineResults out;
  out.results_.resize(static_cast<std::size_t>(statements_));
  out.errors_.resize(static_cast<std::size_t>(statements_));
  if (PQflush(raw_) != 0) lost("flush");
  for (const Pending& p : pending_) {
    if (p.is_sync) {
      PGresult* r = PQgetResult(raw_);
      if (!r) lost("read");
      const bool is_sync = PQresultStatus(r) == PGRES_PIPELINE_SYNC;
      PQclear(r);
      if (!is_sync) lost("pipeline out of step");
      continue;
    }
    PGresult* first = PQgetResult(raw_);
    if (!first) lost("read");
    // Drain to the NULL that ends this command.
    while (PGresult* extra = PQgetResult(raw_)) PQclear(extra);
    const ExecStatusType st = PQresultStatus(first);
    if (p.is_prepare) {
      if (st != PGRES_COMMAND_OK) prepared_->erase(p.name);  // its execute fails too
      PQclear(first);
      continue;
    }
    const auto i = static_cast<std::size_t>(p.index);
    if (st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK) {
      out.results_[i] = pg::Result(first);
    } else if (st == PGRES_PIPELINE_ABORTED) {
      out.errors_[i] = PipelineError{"", "", "skipped after an earlier error in the pipeline"};
      PQclear(first);
    } else {
      out.errors_[i] = error_of(first);
      PQclear(first);
      if (PQstatus(raw_) != CONNECTION_OK) lost("read");
    }
  }
  active_ = false;
  if (PQexitPipelineMode(raw_) != 1) {
    conn_.disconnect();
    throw pg::PgError(ErrorCode::kUnavailable, "postgres: could not leave pipeline mode", "08006", true);
  }
  return out;
}

}  // namespace couponcore::wallet
