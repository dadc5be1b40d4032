// The coupon store on PostgreSQL: campaigns and grants (the coupons table) through a pg::Conn.
// Plain functions over a connection the caller owns, so the engine's control connection and
// each writer's connection use the same code.
//
// write_grants is the writer's insert, one transaction per batch. It first tries COPY (the
// bulk-load protocol; each coupon's valid_until_us computed from its campaign's rule, read in the
// same transaction). COPY has no ON CONFLICT, so a batch with a grant already written (a
// redelivery) fails whole and is rolled back; it then takes the set-based statement
//   INSERT INTO coupons SELECT ... FROM unnest($1::bigint[], ...) ON CONFLICT DO NOTHING
// (which also fixes each coupon's valid_until_us from its campaign's validity rule, joined in the
// same statement) and reports which grants conflict with a *different* row already holding their
// (campaign_id, seq) or (campaign_id, user_id, user_ordinal). A redelivered grant finds its
// identical row and is not a conflict: redelivery is idempotent. If the statement fails on
// the data (a foreign key, a check: a poison entry), the batch is retried row by row under
// savepoints so that one bad grant fails alone. Connection failures, deadlocks and
// serialization failures are thrown (pg::PgError, retryable()) for the caller to back off.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "couponcore/engine.hpp"
#include "couponcore/types.hpp"
#include "store/postgres/pg.hpp"

namespace couponcore::pgstore {

Campaign insert_campaign(pg::Conn& conn, const CampaignSpec& spec, int64_t now_us);
std::optional<Campaign> find_campaign(pg::Conn& conn, int64_t campaign_id);
std::vector<Campaign> list_campaigns(pg::Conn& conn, int64_t partner_id);
CampaignStats stats(pg::Conn& conn, int64_t campaign_id);

// Coupons held per user, and the highest seq: what the gate needs to be rebuilt from the store.
struct Holdings {
  int64_t max_seq = 0;
  std::vector<std::pair<std::string, int64_t>> holders;
};
Holdings holdings(pg::Conn& conn, int64_t campaign_id);

struct WriteOutcome {
  int64_t inserted = 0;         // new rows
  int64_t already_present = 0;  // identical rows found (redeliveries)
  // Grants that could not be written, by index into the input, with the reason.
  std::vector<std::pair<std::size_t, std::string>> failed;
};
// One transaction. Throws pg::PgError only for failures of the database, not of the data.
// events: also write the outbox rows of the inserted grants (pg_events.hpp), in the same
// transaction.
WriteOutcome write_grants(pg::Conn& conn, const std::vector<Grant>& grants, bool events = true);

// Which of `seqs` have a row (the rest do not).
std::vector<int64_t> seqs_with_row(pg::Conn& conn, int64_t campaign_id, const std::vector<int64_t>& seqs);
// Every seq in 1..n with no row, ascending (a mirror restore's free seqs, before the log's).
std::vector<int64_t> seqs_without_row(pg::Conn& conn, int64_t campaign_id, int64_t n);

// What the store holds of one grant's places: a row with its (campaign, seq), one with its
// (campaign, user, ordinal), and whether one row is the grant itself.
struct GrantPlaces {
  bool seq_taken = false;
  bool ordinal_taken = false;
  bool identical = false;
};
GrantPlaces grant_places(pg::Conn& conn, int64_t campaign_id, int64_t seq, const std::string& user_id,
                         int64_t user_ordinal);

// Seqs in 1..issued with no row; the first `sample_max` of them, and how many.
std::pair<int64_t, std::vector<int64_t>> missing_seqs(pg::Conn& conn, int64_t campaign_id, int64_t issued,
                                                      std::size_t sample_max);

}  // namespace couponcore::pgstore
