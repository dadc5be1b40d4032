// The embedded event log and its consumer groups: see sqlite_events.hpp.
#include "store/sqlite/sqlite_events.hpp"

#include <algorithm>
#include <chrono>
#include <thread>

#include "couponcore/engine.hpp"
#include "couponcore/error.hpp"
#include "events/event_sql.hpp"

namespace couponcore::sqlite_events {

const std::vector<sqlite::Migration>& migrations() {
  static const std::vector<sqlite::Migration> all = {
      {"events", 1,
       "CREATE TABLE IF NOT EXISTS events ("
       " seq INTEGER PRIMARY KEY AUTOINCREMENT,"
       " event_id TEXT NOT NULL UNIQUE,"
       " type TEXT NOT NULL,"
       " subject TEXT NOT NULL,"
       " partner_id INTEGER NOT NULL,"
       " time_us INTEGER NOT NULL,"
       " traceparent TEXT,"
       " data TEXT NOT NULL);"
       "CREATE INDEX IF NOT EXISTS events_type ON events(type, seq);"
       "CREATE TABLE IF NOT EXISTS event_positions ("
       " grp TEXT NOT NULL, type TEXT NOT NULL, last_seq INTEGER NOT NULL, PRIMARY KEY (grp, type));"
       "CREATE TABLE IF NOT EXISTS event_pending ("
       " grp TEXT NOT NULL, seq INTEGER NOT NULL, consumer TEXT NOT NULL,"
       " delivered_at_us INTEGER NOT NULL, deliveries INTEGER NOT NULL, PRIMARY KEY (grp, seq));"
       "CREATE TABLE IF NOT EXISTS event_dead_letters ("
       " id INTEGER PRIMARY KEY AUTOINCREMENT, grp TEXT NOT NULL, event_id TEXT NOT NULL, type TEXT NOT NULL,"
       " reason TEXT NOT NULL, event TEXT NOT NULL, at_us INTEGER NOT NULL);"
       "CREATE INDEX IF NOT EXISTS event_dead_letters_grp ON event_dead_letters(grp, id);"},
  };
  return all;
}

IssuedWriter::IssuedWriter(sqlite::Db& db)
    : stmt_(db,
            "INSERT OR IGNORE INTO events (event_id, type, subject, partner_id, time_us, traceparent, data)"
            " VALUES (?, ?, ?, ?, ?, ?, ?)") {}

void IssuedWriter::write(const Grant& g, int64_t partner_id, int64_t quantity, std::optional<int64_t> valid_until_us) {
  rows_.clear();
  events::append_issued_rows(g, partner_id, quantity, valid_until_us, rows_);
  for (const events::Row& r : rows_) {
    stmt_.bind(1, std::string_view(r.id)).bind(2, std::string_view(r.type)).bind(3, std::string_view(r.subject));
    stmt_.bind(4, r.partner_id).bind(5, r.time_us);
    if (r.traceparent.empty()) {
      stmt_.bind_null(6);
    } else {
      stmt_.bind(6, std::string_view(r.traceparent));
    }
    stmt_.bind(7, std::string_view(r.data)).run();
  }
}

namespace {
constexpr const char* kOneCoupon = "(SELECT c.*, ?2 AS tp FROM coupons c WHERE c.id = ?1) r";
}  // namespace

void write_coupon_events(sqlite::Db& db, std::initializer_list<std::string_view> types, int64_t coupon_id,
                         const std::string& traceparent) {
  sqlite::Stmt s(db, events::coupon_events_sql(events::Dialect::kSqlite, types, kOneCoupon));
  s.bind(1, coupon_id);
  if (traceparent.empty()) {
    s.bind_null(2);
  } else {
    s.bind(2, std::string_view(traceparent));
  }
  s.run();
}

void write_points_events(sqlite::Db& db, const std::vector<std::pair<int64_t, std::string>>& entries) {
  sqlite::Stmt s(db, events::points_events_sql(events::Dialect::kSqlite, "(SELECT ?1 AS id, ?2 AS tp) t"));
  for (const auto& [id, traceparent] : entries) {
    s.bind(1, id);
    if (traceparent.empty()) {
      s.bind_null(2);
    } else {
      s.bind(2, std::string_view(traceparent));
    }
    s.run();
  }
}

Savepoint::Savepoint(sqlite::Db& db) : db_(db) { db_.exec("SAVEPOINT cc_event"); }

Savepoint::~Savepoint() {
  if (done_) return;
  try {
    db_.exec("ROLLBACK TO cc_event");
    db_.exec("RELEASE cc_event");
  } catch (const Error&) {
  }
}

void Savepoint::release() {
  db_.exec("RELEASE cc_event");
  done_ = true;
}

events::Row row_from(const sqlite::Stmt& s, int c) {
  events::Row r;
  r.seq = s.i64(c);
  r.id = s.text(c + 1);
  r.type = s.text(c + 2);
  r.subject = s.text(c + 3);
  r.partner_id = s.i64(c + 4);
  r.time_us = s.i64(c + 5);
  r.traceparent = s.is_null(c + 6) ? std::string() : s.text(c + 6);
  r.data = s.text(c + 7);
  return r;
}

namespace {

constexpr const char* kRowColumns = "e.seq, e.event_id, e.type, e.subject, e.partner_id, e.time_us, e.traceparent, e.data";

EventMessage message_of(const events::Row& r, bool redelivered) {
  EventMessage m;
  m.type = r.type;
  m.id = r.id;
  m.entry_id = std::to_string(r.seq);
  m.sequence = r.seq;
  m.json = events::cloudevent_json(r);
  m.redelivered = redelivered;
  return m;
}

std::string in_list(const std::vector<std::string>& types) {
  std::string s = "(";
  for (std::size_t i = 0; i < types.size(); ++i) s += (i ? ",'" : "'") + types[i] + "'";  // catalogue names only
  return s + ")";
}

class SqliteReader final : public EventReader {
 public:
  SqliteReader(sqlite::Db& db, std::mutex& mu, std::string group, std::string consumer, std::vector<std::string> types,
               int64_t claim_idle_ms)
      : db_(db), mu_(mu), group_(std::move(group)), consumer_(std::move(consumer)), types_(std::move(types)),
        claim_idle_ms_(claim_idle_ms) {}

  std::vector<EventMessage> read(int64_t batch, int64_t block_ms) override {
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(block_ms);
    for (;;) {
      std::vector<EventMessage> out = read_once(batch);
      if (!out.empty() || std::chrono::steady_clock::now() >= deadline) return out;
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
  }

  int64_t ack(const std::vector<EventMessage>& events) override { return ack_seqs(db_, mu_, group_, events); }

  static int64_t ack_seqs(sqlite::Db& db, std::mutex& mu, const std::string& group,
                          const std::vector<EventMessage>& events) {
    std::lock_guard lock(mu);
    sqlite::Tx tx(db);
    sqlite::Stmt d(db, "DELETE FROM event_pending WHERE grp = ? AND seq = ?");
    int64_t n = 0;
    for (const EventMessage& m : events) {
      d.bind(1, std::string_view(group)).bind(2, m.sequence).run();
      n += db.changes();
    }
    tx.commit();
    return n;
  }

 private:
  // Pending rows (this consumer's, or claimable), as messages, in seq order.
  std::vector<EventMessage> take_pending(const char* where, int64_t batch, int64_t now) {
    sqlite::Stmt s(db_, std::string("SELECT ") + kRowColumns +
                            " FROM event_pending p JOIN events e ON e.seq = p.seq WHERE p.grp = ?1 AND " + where +
                            " AND e.type IN " + in_list(types_) + " ORDER BY e.seq LIMIT ?4");
    s.bind(1, std::string_view(group_)).bind(2, std::string_view(consumer_)).bind(3, now - claim_idle_ms_ * 1000);
    s.bind(4, batch);
    std::vector<EventMessage> out;
    while (s.step()) out.push_back(message_of(row_from(s), true));
    sqlite::Stmt u(db_,
                   "UPDATE event_pending SET consumer = ?, delivered_at_us = ?, deliveries = deliveries + 1"
                   " WHERE grp = ? AND seq = ?");
    for (const EventMessage& m : out) {
      u.bind(1, std::string_view(consumer_)).bind(2, now).bind(3, std::string_view(group_)).bind(4, m.sequence).run();
    }
    return out;
  }

  std::vector<EventMessage> read_once(int64_t batch) {
    std::lock_guard lock(mu_);
    sqlite::Tx tx(db_);
    const int64_t now = now_us();
    std::vector<EventMessage> out;
    std::vector<int64_t> full_last;
    auto note_full = [&](std::size_t before) {
      if (static_cast<int64_t>(out.size() - before) < batch) return;
      int64_t top = 0;
      for (std::size_t k = before; k < out.size(); ++k) top = std::max(top, out[k].sequence);
      full_last.push_back(top);
    };
    if (history_) {
      out = take_pending("p.consumer = ?2 AND ?3 = ?3", batch, now);
      note_full(0);
      if (out.empty()) history_ = false;
    }
    if (out.empty() && now - last_claim_us_ >= 1'000'000) {
      last_claim_us_ = now;
      out = take_pending("p.consumer <> ?2 AND p.delivered_at_us <= ?3", batch, now);
    }
    if (out.empty()) {
      sqlite::Stmt pos(db_, "SELECT last_seq FROM event_positions WHERE grp = ? AND type = ?");
      sqlite::Stmt set(db_,
                       "INSERT INTO event_positions (grp, type, last_seq) VALUES (?1, ?2, ?3)"
                       " ON CONFLICT (grp, type) DO UPDATE SET last_seq = excluded.last_seq");
      sqlite::Stmt next(db_, std::string("SELECT ") + kRowColumns +
                                 " FROM events e WHERE e.type = ? AND e.seq > ? ORDER BY e.seq LIMIT ?");
      sqlite::Stmt pend(db_,
                        "INSERT OR REPLACE INTO event_pending (grp, seq, consumer, delivered_at_us, deliveries)"
                        " VALUES (?, ?, ?, ?, 1)");
      for (const std::string& type : types_) {
        pos.bind(1, std::string_view(group_)).bind(2, std::string_view(type));
        const int64_t last = pos.step() ? pos.i64(0) : 0;
        pos.reset();
        next.bind(1, std::string_view(type)).bind(2, last).bind(3, batch);
        const std::size_t before = out.size();
        while (next.step()) out.push_back(message_of(row_from(next), false));
        next.reset();
        if (out.size() == before) continue;
        note_full(before);
        set.bind(1, std::string_view(group_)).bind(2, std::string_view(type)).bind(3, out.back().sequence).run();
        for (std::size_t k = before; k < out.size(); ++k) {
          pend.bind(1, std::string_view(group_)).bind(2, out[k].sequence).bind(3, std::string_view(consumer_));
          pend.bind(4, now).run();
        }
      }
    }
    tx.commit();
    return events::release_in_order(std::move(out), full_last, held_);
  }

  sqlite::Db& db_;
  std::mutex& mu_;
  const std::string group_, consumer_;
  const std::vector<std::string> types_;
  const int64_t claim_idle_ms_;
  bool history_ = true;
  int64_t last_claim_us_ = 0;
  std::vector<EventMessage> held_;  // delivered, waiting for lower sequences (release_in_order)
};

class SqliteHub final : public EventHub {
 public:
  SqliteHub(sqlite::Db& db, std::mutex& mu) : db_(db), mu_(mu) {}

  std::unique_ptr<EventReader> open_reader(const std::string& group, const std::string& consumer,
                                           const std::vector<std::string>& types, int64_t claim_idle_ms) override {
    events::check_name("group", group);
    events::check_name("consumer", consumer);
    return std::make_unique<SqliteReader>(db_, mu_, group, consumer, events::check_types(types), claim_idle_ms);
  }

  int64_t ack(const std::string& group, const std::vector<EventMessage>& events) override {
    events::check_name("group", group);
    return SqliteReader::ack_seqs(db_, mu_, group, events);
  }

  void dead_letter(const std::string& group, const EventMessage& e, const std::string& reason) override {
    events::check_name("group", group);
    std::lock_guard lock(mu_);
    sqlite::Tx tx(db_);
    sqlite::Stmt s(db_,
                   "INSERT INTO event_dead_letters (grp, event_id, type, reason, event, at_us) VALUES (?,?,?,?,?,?)");
    s.bind(1, std::string_view(group)).bind(2, std::string_view(e.id)).bind(3, std::string_view(e.type));
    s.bind(4, std::string_view(reason)).bind(5, std::string_view(e.json)).bind(6, now_us()).run();
    sqlite::Stmt d(db_, "DELETE FROM event_pending WHERE grp = ? AND seq = ?");
    d.bind(1, std::string_view(group)).bind(2, e.sequence).run();
    tx.commit();
  }

  std::vector<EventDeadLetter> list_dead_letters(const std::string& group, int64_t limit) override {
    events::check_name("group", group);
    std::lock_guard lock(mu_);
    sqlite::Stmt s(db_,
                   "SELECT id, event_id, type, reason, event, at_us FROM event_dead_letters WHERE grp = ?"
                   " ORDER BY id LIMIT ?");
    s.bind(1, std::string_view(group)).bind(2, limit);
    std::vector<EventDeadLetter> out;
    while (s.step()) {
      out.push_back({std::to_string(s.i64(0)), group, s.text(1), s.text(2), s.text(3), s.text(4), s.i64(5)});
    }
    return out;
  }

  EventPruneResult prune(int64_t retention_ms, int64_t hard_cap_ms, int64_t chunk_rows, int64_t chunks_max) override {
    return sqlite_events::prune(db_, mu_, retention_ms, hard_cap_ms, chunk_rows, chunks_max);
  }

  EventStats stats() override {
    std::lock_guard lock(mu_);
    sqlite::Stmt s(db_, "SELECT coalesce((SELECT seq FROM sqlite_sequence WHERE name = 'events'), 0)");
    EventStats st;
    if (s.step()) st.written = s.i64(0);
    return st;
  }

 private:
  sqlite::Db& db_;
  std::mutex& mu_;
};

}  // namespace

std::unique_ptr<EventHub> make_hub(sqlite::Db& db, std::mutex& mu) { return std::make_unique<SqliteHub>(db, mu); }

}  // namespace couponcore::sqlite_events
