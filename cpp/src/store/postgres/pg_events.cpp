// The PostgreSQL outbox: see pg_events.hpp.
#include "store/postgres/pg_events.hpp"

#include "events/event_sql.hpp"

namespace couponcore::pgevents {

const std::vector<pg::Migration>& migrations() {
  static const std::vector<pg::Migration> all = {
      {"events", 1,
       "CREATE TABLE event_outbox ("
       " seq bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,"
       " event_id text NOT NULL UNIQUE,"
       " type text NOT NULL,"
       " subject text NOT NULL,"
       " partner_id bigint NOT NULL,"
       " time_us bigint NOT NULL,"
       " traceparent text,"
       " data text NOT NULL,"
       " created_at_us bigint NOT NULL DEFAULT (extract(epoch from clock_timestamp()) * 1000000)::bigint);"},
  };
  return all;
}

namespace {
const pg::MigrationRegistrar kRegisterEventMigrations("events", &migrations);
}  // namespace

std::string issued_events_sql() { return events::issued_events_sql(events::Dialect::kPostgres, "src r"); }

void write_issued(pg::Conn& conn, const std::vector<Grant>& grants) {
  static const std::string sql =
      "WITH src AS (SELECT c.id, c.campaign_id, c.seq, c.user_id, c.user_ordinal, c.request_id,"
      "  c.issued_at_us, c.valid_until_us, t.tp"
      "  FROM unnest($1::bigint[], $2::int[], $3::text[]) AS t(campaign_id, seq, tp)"
      "  JOIN coupons c ON c.campaign_id = t.campaign_id AND c.seq = t.seq) " +
      issued_events_sql();
  std::vector<int64_t> campaign(grants.size());
  std::vector<uint32_t> seq(grants.size());
  std::vector<std::string> tp(grants.size());
  for (std::size_t i = 0; i < grants.size(); ++i) {
    campaign[i] = grants[i].campaign_id;
    seq[i] = grants[i].seq;
    tp[i] = grants[i].traceparent;
  }
  conn.exec_prepared("cc_outbox_issued", sql,
                     pg::Params().add_array(campaign).add_array(seq).add_array_empty_as_null(tp));
}

Backlog backlog(pg::Conn& conn) {
  pg::Result r = conn.exec(
      "SELECT count(*), coalesce((extract(epoch from clock_timestamp()) * 1000000)::bigint - min(created_at_us), 0)"
      " FROM event_outbox");
  return Backlog{r.i64(0, 0), r.i64(0, 1) / 1000};
}

std::vector<events::Row> read_batch(pg::Conn& conn, std::size_t limit) {
  pg::Result r = conn.exec_prepared(
      "cc_outbox_read",
      "SELECT seq, event_id, type, subject, partner_id, time_us, coalesce(traceparent, ''), data"
      " FROM event_outbox ORDER BY seq LIMIT $1",
      pg::Params().add(static_cast<int64_t>(limit)));
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
  return out;
}

int64_t delete_rows(pg::Conn& conn, const std::vector<int64_t>& seqs) {
  if (seqs.empty()) return 0;
  pg::Result r = conn.exec_prepared("cc_outbox_delete",
                                    "WITH d AS (DELETE FROM event_outbox WHERE seq = ANY($1::bigint[]) RETURNING 1)"
                                    " SELECT count(*) FROM d",
                                    pg::Params().add_array(seqs));
  return r.i64(0, 0);
}

}  // namespace couponcore::pgevents
