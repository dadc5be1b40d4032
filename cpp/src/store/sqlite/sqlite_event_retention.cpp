// Retention of the embedded event log: see sqlite_events.hpp (prune) and docs/events.md.
//
// An event is acknowledged by a group when the group's position in its type is at or past its
// seq (it was read) and it is not among the group's pending events. Which events are old is
// decided in seq order: the log's seq follows commit order and an event's time is its change's,
// so "older than the cut" is taken as "below the first seq whose time is at or after the cut"
// (an event written late with an old time waits for a later run). Seqs are AUTOINCREMENT: a
// deleted seq is never reused, so groups' positions stay meaningful.
#include <algorithm>
#include <limits>

#include "couponcore/engine.hpp"
#include "couponcore/error.hpp"
#include "events/event.hpp"
#include "store/sqlite/sqlite_events.hpp"

namespace couponcore::sqlite_events {

namespace {

// The first seq whose time is at or after `time_us` (the next seq when there is none).
int64_t first_seq_since(sqlite::Db& db, int64_t time_us) {
  sqlite::Stmt s(db, "SELECT seq FROM events WHERE time_us >= ? ORDER BY seq LIMIT 1");
  s.bind(1, time_us);
  if (s.step()) return s.i64(0);
  sqlite::Stmt next(db, "SELECT coalesce(max(seq), 0) + 1 FROM events");
  next.step();
  return next.i64(0);
}

// The highest seq of `type` every group reading it has read (0: no group reads it).
int64_t read_by_every_group(sqlite::Db& db, std::string_view type) {
  sqlite::Stmt s(db, "SELECT coalesce(min(last_seq), 0) FROM event_positions WHERE type = ?");
  s.bind(1, type);
  s.step();
  return s.i64(0);
}

}  // namespace

EventPruneResult prune(sqlite::Db& db, std::mutex& mu, int64_t retention_ms, int64_t hard_cap_ms, int64_t chunk_rows,
                       int64_t chunks_max) {
  if (retention_ms < 0) throw Error(ErrorCode::kInvalidArgument, "retention must be >= 0");
  if (hard_cap_ms < 0) throw Error(ErrorCode::kInvalidArgument, "hard cap must be >= 0 (0: none)");
  if (hard_cap_ms > 0 && hard_cap_ms < retention_ms) {
    throw Error(ErrorCode::kInvalidArgument, "hard cap must be at least the retention");
  }
  if (chunk_rows < 1 || chunk_rows > 100'000) throw Error(ErrorCode::kInvalidArgument, "chunk_rows must be 1..100000");
  if (chunks_max < 1) throw Error(ErrorCode::kInvalidArgument, "chunks_max must be >= 1");
  EventPruneResult out;
  const int64_t now = now_us();
  int64_t old_below = 0, capped_below = 0;  // seqs below these are past the retention / the hard cap
  {
    std::lock_guard lock(mu);
    old_below = first_seq_since(db, now - retention_ms * 1000);
    if (hard_cap_ms > 0) capped_below = first_seq_since(db, now - hard_cap_ms * 1000);
  }
  // One chunk: a DELETE of up to chunk_rows rows of `pick` (a SELECT of seqs with ?1 = type,
  // ?2 = below), in a transaction of its own; past the hard cap the groups' pending rows below
  // go too. Returns the rows deleted.
  auto chunk = [&](const std::string& pick, std::string_view type, int64_t below, bool past_cap) {
    std::lock_guard lock(mu);
    sqlite::Tx tx(db);
    sqlite::Stmt d(db, "DELETE FROM events WHERE seq IN (" + pick + " ORDER BY seq LIMIT ?3)");
    d.bind(1, type).bind(2, below).bind(3, chunk_rows).run();
    const int64_t n = db.changes();
    if (past_cap) {
      sqlite::Stmt p(db, "DELETE FROM event_pending WHERE seq < ?");
      p.bind(1, below).run();
    }
    tx.commit();
    out.chunks++;
    return n;
  };
  const std::string acknowledged =
      "SELECT seq FROM events WHERE type = ?1 AND seq < ?2 AND seq NOT IN (SELECT seq FROM event_pending)";
  for (std::string_view type : events::kTypes) {
    int64_t below = 0;
    {
      std::lock_guard lock(mu);
      below = std::min(old_below, read_by_every_group(db, type) + 1);
    }
    while (below > 1) {
      if (out.chunks >= chunks_max) {
        out.more = true;
        return out;
      }
      const int64_t n = chunk(acknowledged, type, below, false);
      out.deleted += n;
      if (n < chunk_rows) break;
    }
  }
  const std::string past_cap = "SELECT seq FROM events WHERE ?1 = ?1 AND seq < ?2";  // ?1: unused ("")
  while (capped_below > 1) {
    if (out.chunks >= chunks_max) {
      out.more = true;
      return out;
    }
    const int64_t n = chunk(past_cap, "", capped_below, true);
    out.deleted += n;
    out.deleted_unacknowledged += n;
    if (n < chunk_rows) break;
  }
  return out;
}

}  // namespace couponcore::sqlite_events
