// The PostgreSQL outbox: see pg_events.hpp.
#include "store/postgres/pg_events.hpp"

#include <algorithm>

#include "events/event_sql.hpp"

namespace couponcore::pgevents {

const std::vector<pg::Migration>& migrations() {
  static const std::vector<pg::Migration> all = {
      {"events", 1,
       "CREATE TABLE event_outbox ("
       " seq bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,"
       " event_id text NOT NULL,"
       " type text NOT NULL,"
       " subject text NOT NULL,"
       " partner_id bigint NOT NULL,"
       " time_us bigint NOT NULL,"
       " traceparent text,"
       " data text NOT NULL,"
       " created_at_us bigint NOT NULL DEFAULT (extract(epoch from clock_timestamp()) * 1000000)::bigint);"},
      // The key prefix of the engine whose change wrote the row: each prefix relays its own
      // rows. Every session of a production engine or worker sets it (conninfo_for_prefix);
      // NULL (rows from before this migration, or a session without the setting) is relayed by
      // the relay of any prefix, as before.
      {"events", 2,
       "ALTER TABLE event_outbox ADD COLUMN key_prefix text;"
       " ALTER TABLE event_outbox ALTER COLUMN key_prefix"
       " SET DEFAULT nullif(current_setting('couponcore.key_prefix', true), '');"},  // kPrefixSetting
  };
  return all;
}

namespace {
const pg::MigrationRegistrar kRegisterEventMigrations("events", &migrations);
}  // namespace

std::string conninfo_for_prefix(const std::string& postgres_url, std::string_view key_prefix) {
  return pg::conninfo_with_setting(postgres_url, kPrefixSetting, key_prefix);
}

std::string issued_events_sql() { return events::issued_events_sql(events::Dialect::kPostgres, "src r"); }

std::string sold_out_events_sql(std::string_view source) {
  return events::sold_out_events_sql(events::Dialect::kPostgres, source);
}

void copy_rows(pg::Conn& conn, const std::vector<events::Row>& rows) {
  if (rows.empty()) return;
  std::string data;
  data.reserve(rows.size() * 320);
  for (const events::Row& r : rows) {
    pg::append_copy_text(data, r.id);
    data.push_back('\t');
    pg::append_copy_text(data, r.type);
    data.push_back('\t');
    pg::append_copy_text(data, r.subject);
    data.push_back('\t');
    pg::append_copy_int(data, r.partner_id);
    data.push_back('\t');
    pg::append_copy_int(data, r.time_us);
    data.push_back('\t');
    if (r.traceparent.empty()) {
      data.append("\\N");
    } else {
      pg::append_copy_text(data, r.traceparent);
    }
    data.push_back('\t');
    pg::append_copy_text(data, r.data);
    data.push_back('\n');
  }
  conn.copy_in("COPY event_outbox (event_id, type, subject, partner_id, time_us, traceparent, data) FROM STDIN", data);
}

Backlog backlog(pg::Conn& conn, std::string_view key_prefix) {
  pg::Result r = conn.exec(
      "SELECT count(*), coalesce((extract(epoch from clock_timestamp()) * 1000000)::bigint - min(created_at_us), 0),"
      " (SELECT coalesce(last_value, 0) FROM pg_sequences WHERE schemaname = current_schema()"
      "  AND sequencename = 'event_outbox_seq_seq')"
      " FROM event_outbox WHERE key_prefix = $1 OR key_prefix IS NULL",
      pg::Params().add(key_prefix));
  return Backlog{r.i64(0, 0), r.i64(0, 1) / 1000, r.opt_i64(0, 2).value_or(0)};
}

std::vector<events::Row> take_batch(pg::Conn& conn, std::string_view key_prefix, std::size_t limit) {
  pg::Result r = conn.exec_prepared(
      "cc_outbox_take",
      "DELETE FROM event_outbox WHERE seq IN"
      " (SELECT seq FROM event_outbox WHERE key_prefix = $2 OR key_prefix IS NULL ORDER BY seq LIMIT $1)"
      " RETURNING seq, event_id, type, subject, partner_id, time_us, coalesce(traceparent, ''), data",
      pg::Params().add(static_cast<int64_t>(limit)).add(key_prefix));
  std::vector<events::Row> out(static_cast<std::size_t>(r.rows()));
  for (int i = 0; i < r.rows(); ++i) {
    events::Row& e = out[static_cast<std::size_t>(i)];
    e.seq = r.i64(i, 0);
    e.id = std::string(r.text(i, 1));
    e.type = std::string(r.text(i, 2));
    e.subject = std::string(r.text(i, 3));
    e.partner_id = r.i64(i, 4);
    e.time_us = r.i64(i, 5);
    e.traceparent = std::string(r.text(i, 6));
    e.data = std::string(r.text(i, 7));
  }
  std::sort(out.begin(), out.end(), [](const events::Row& a, const events::Row& b) { return a.seq < b.seq; });
  return out;
}

}  // namespace couponcore::pgevents
