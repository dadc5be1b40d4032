// The transactional outbox on PostgreSQL (docs/events.md): the table `event_outbox` (migration
// ("events", 1)) and the statements that fill it in the transaction of each change. Every
// statement inserts the outbox rows AFTER the change it reports and in its transaction, while
// the changed rows are locked, so that for one subject the outbox seq follows the order of the
// changes; the relay (events/relay.hpp) publishes in seq order.
//
// Grants (pgstore::write_grants): coupon.issued for every row actually inserted (the COPY path
// inserts all; the set-based fallback reports through the statement's own RETURNING, so a
// redelivered grant makes no second event), and campaign.sold_out from the transaction whose
// grants complete the campaign's quantity in the store (coupon_store.cpp, count_written: after
// every coupon.issued of the campaign, shards and concurrent writers included).
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "couponcore/types.hpp"
#include "events/event.hpp"
#include "store/postgres/pg.hpp"

namespace couponcore::pgevents {

const std::vector<pg::Migration>& migrations();

// Outbox rows belong to a key prefix (column key_prefix, migration ("events", 2)): the relay of
// a prefix publishes only its own (and rows without one: NULL), so engines with different
// prefixes can share a database.
// The column's default is the session's setting `couponcore.key_prefix`, which every
// connection of a production engine or worker sets through its conninfo: the postgres url as a
// conninfo with that setting.
inline constexpr std::string_view kPrefixSetting = "couponcore.key_prefix";
std::string conninfo_for_prefix(const std::string& postgres_url, std::string_view key_prefix);

// INSERT INTO event_outbox ... for the coupon rows of a CTE named `src` with the columns
// id, campaign_id, seq, user_id, user_ordinal, request_id, issued_at_us, valid_until_us, tp
// (tp: the grant's traceparent or NULL): coupon.issued per row. Put inside a WITH, after `src`.
std::string issued_events_sql();
// INSERT INTO event_outbox ... campaign.sold_out for each row of `source` (a FROM item named r
// with campaign_id, id, user_id, issued_at_us, tp: a campaign just completed and its last coupon).
std::string sold_out_events_sql(std::string_view source);

// In the caller's transaction: COPY of rows built by events::append_issued_rows (the writer's
// COPY path: every grant of the batch was inserted).
void copy_rows(pg::Conn& conn, const std::vector<events::Row>& rows);

// The outbox read by the relay and its backlog.
struct Backlog {
  int64_t rows = 0;
  int64_t oldest_age_ms = 0;  // 0: empty
  int64_t written = 0;        // the outbox sequence's last value: events written so far
};
Backlog backlog(pg::Conn& conn, std::string_view key_prefix);  // rows and age: this prefix's
// In the caller's transaction: deletes the prefix's first `limit` rows (seq order) and returns them, in
// seq order. The relay publishes them, then commits: a failure before the commit rolls the
// DELETE back and the rows are published again (at-least-once).
std::vector<events::Row> take_batch(pg::Conn& conn, std::string_view key_prefix, std::size_t limit);

}  // namespace couponcore::pgevents
