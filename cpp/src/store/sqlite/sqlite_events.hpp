// Domain events on SQLite (docs/events.md): the table `events` is the embedded deployment's
// event log itself (migration ("events", 1)), written in the transaction of each change; each
// consumer group's position per type and its pending events live in tables of the same file,
// so reading and acknowledging are transactions there too. The seq is AUTOINCREMENT and SQLite
// has one writer at a time: the log's order is the commit order.
#pragma once

#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "couponcore/events.hpp"
#include "couponcore/types.hpp"
#include "events/event.hpp"
#include "store/sqlite/sqlite.hpp"

namespace couponcore::sqlite_events {

const std::vector<sqlite::Migration>& migrations();

// In the caller's transaction, after the grant's coupon row was inserted: coupon.issued, and
// campaign.sold_out when its seq is the campaign's quantity (events::append_issued_rows).
// INSERT OR IGNORE: one event per id.
class IssuedWriter {
 public:
  explicit IssuedWriter(sqlite::Db& db);
  void write(const Grant& g, int64_t partner_id, int64_t quantity, std::optional<int64_t> valid_until_us);

 private:
  sqlite::Stmt stmt_;
  std::vector<events::Row> rows_;
};

// In the caller's transaction (or savepoint), after the change: the coupon events `types`
// (events/event_sql.hpp) of one coupon, those its row's state reports.
void write_coupon_events(sqlite::Db& db, std::initializer_list<std::string_view> types, int64_t coupon_id,
                         const std::string& traceparent);

// In the caller's transaction, after the entries were inserted: the points events of these
// wallet entries (ids, each with its operation's traceparent, "" = none), in id order.
void write_points_events(sqlite::Db& db, const std::vector<std::pair<int64_t, std::string>>& entries);

// A savepoint: a transaction of its own outside one, nested inside one (a checkout's coupon
// is changed inside the wallet batch's BEGIN IMMEDIATE). Rolled back unless released.
class Savepoint {
 public:
  explicit Savepoint(sqlite::Db& db);
  ~Savepoint();
  Savepoint(const Savepoint&) = delete;
  Savepoint& operator=(const Savepoint&) = delete;
  void release();

 private:
  sqlite::Db& db_;
  bool done_ = false;
};

// Reads a row of `events` (columns seq, event_id, type, subject, partner_id, time_us,
// traceparent, data starting at column `first`).
events::Row row_from(const sqlite::Stmt& s, int first = 0);

// EventHub::prune on the log (sqlite_event_retention.cpp): each chunk a transaction of its own
// under `mu`, so that the committer waits for one chunk at most.
EventPruneResult prune(sqlite::Db& db, std::mutex& mu, int64_t retention_ms, int64_t hard_cap_ms, int64_t chunk_rows,
                       int64_t chunks_max);

// The embedded consumer API over the store's connection and lock.
std::unique_ptr<EventHub> make_hub(sqlite::Db& db, std::mutex& mu);

}  // namespace couponcore::sqlite_events
