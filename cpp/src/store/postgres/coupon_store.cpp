// Campaign and grant statements for PostgreSQL: see coupon_store.hpp.
#include "store/postgres/coupon_store.hpp"

#include "util/assert.hpp"

#include <algorithm>
#include <charconv>
#include <map>
#include <tuple>

#include "couponcore/error.hpp"
#include "couponcore/limits.hpp"
#include "store/postgres/pg_events.hpp"

namespace couponcore::pgstore {

namespace {

constexpr const char* kCampaignColumns =
    "id, partner_id, name, quantity, per_user_limit, starts_at_us, ends_at_us, state,"
    " discount_kind, discount_value, discount_max, min_order_amount, valid_until_us, valid_days,"
    " created_at_us, shards, rate_limit_per_user, rate_limit_per_partner, rate_window_ms";

Campaign campaign_from_row(const pg::Result& r, int row) {
  Campaign c;
  c.id = r.i64(row, 0);
  c.spec.partner_id = r.i64(row, 1);
  c.spec.name = std::string(r.text(row, 2));
  c.spec.quantity = r.i64(row, 3);
  c.spec.per_user_limit = static_cast<int32_t>(r.i64(row, 4));
  c.spec.starts_at_us = r.opt_i64(row, 5);
  c.spec.ends_at_us = r.opt_i64(row, 6);
  c.state = static_cast<CampaignState>(r.i64(row, 7));
  c.spec.discount_kind = static_cast<DiscountKind>(r.i64(row, 8));
  c.spec.discount_value = r.i64(row, 9);
  c.spec.discount_max = r.opt_i64(row, 10);
  c.spec.min_order_amount = r.i64(row, 11);
  c.spec.valid_until_us = r.opt_i64(row, 12);
  if (auto d = r.opt_i64(row, 13)) c.spec.valid_days = static_cast<int32_t>(*d);
  c.created_at_us = r.i64(row, 14);
  c.spec.shards = static_cast<int32_t>(r.i64(row, 15));
  c.spec.rate_limit_per_user = static_cast<int32_t>(r.i64(row, 16));
  c.spec.rate_limit_per_partner = static_cast<int32_t>(r.i64(row, 17));
  c.spec.rate_window_ms = static_cast<int32_t>(r.i64(row, 18));
  return c;
}

// The batch statement. Column 1: the input index of a grant that conflicts with a different
// row, -1 for the summary row (first), -2 for a campaign's row; column 2 (summary and campaign
// rows): rows inserted; column 3 (campaign rows): the campaign. With events, the
// same statement writes the outbox rows of the rows it inserted (pg_events.hpp): a redelivered
// grant inserts nothing, so it makes no second event.
const std::string& insert_grants_sql(bool events) {
  static const std::string head =
      "WITH input AS ("
      "  SELECT * FROM unnest($1::bigint[], $2::int[], $3::text[], $4::int[], $5::text[], $6::bigint[], $7::text[])"
      "    WITH ORDINALITY AS t(campaign_id, seq, user_id, user_ordinal, request_id, issued_at_us, tp, i)),"
      " ins AS ("
      "  INSERT INTO coupons (id, campaign_id, seq, user_id, user_ordinal, request_id, issued_at_us, valid_until_us)"
      "  SELECT (g.campaign_id << 32) | g.seq, g.campaign_id, g.seq, g.user_id, g.user_ordinal, g.request_id,"
      "         g.issued_at_us, coalesce(c.valid_until_us, g.issued_at_us + c.valid_days::bigint * 86400000000)"
      "  FROM input g LEFT JOIN campaigns c ON c.id = g.campaign_id ORDER BY g.i"
      "  ON CONFLICT DO NOTHING"
      "  RETURNING id, campaign_id, seq, user_id, user_ordinal, request_id, issued_at_us, valid_until_us)";
  static const std::string tail =
      " SELECT -1, (SELECT count(*) FROM ins), 0"
      " UNION ALL"
      " SELECT -2, count(*), campaign_id FROM ins GROUP BY campaign_id"
      " UNION ALL"
      " SELECT i.i - 1, 0, 0 FROM input i"
      " WHERE NOT EXISTS (SELECT 1 FROM ins WHERE ins.campaign_id = i.campaign_id AND ins.seq = i.seq"
      "                   AND ins.user_id = i.user_id AND ins.user_ordinal = i.user_ordinal)"
      "   AND NOT EXISTS (SELECT 1 FROM coupons c WHERE c.campaign_id = i.campaign_id AND c.seq = i.seq"
      "                   AND c.user_id = i.user_id AND c.user_ordinal = i.user_ordinal)";
  static const std::string plain = head + tail;
  static const std::string with_events =
      head +
      ", src AS (SELECT ins.*, i.tp FROM ins JOIN input i ON i.campaign_id = ins.campaign_id AND i.seq = ins.seq),"
      " ev AS (" + pgevents::issued_events_sql() + ")" + tail;
  return events ? with_events : plain;
}
const char* insert_grants_name(bool events) { return events ? "cc_insert_grants_ev" : "cc_insert_grants"; }

// The grants a transaction inserted, per campaign: how many, and the latest of them (issued_at_us,
// then seq), whose coupon a campaign.sold_out names.
struct Written {
  int64_t n = 0;
  const Grant* last = nullptr;
};
using WrittenByCampaign = std::map<int64_t, Written>;  // ordered: rows are locked in campaign order

void note(WrittenByCampaign& w, const Grant& g, int64_t inserted) {
  Written& x = w[g.campaign_id];
  x.n += inserted;
  if (x.last == nullptr || std::tie(g.issued_at_us, g.seq) > std::tie(x.last->issued_at_us, x.last->seq)) x.last = &g;
}

// The transaction's last statement before COMMIT: raises each campaign's count of written grants
// (campaign_written) and, with events, writes campaign.sold_out for each campaign whose count this
// transaction took from below its quantity to it or past it. The upsert keeps the campaign's row
// locked until COMMIT, so the writers of one campaign pass here one at a time: the one that
// completes the quantity sees every other writer's grants committed, and its campaign.sold_out
// takes an outbox seq after every coupon.issued of the campaign (shards and concurrent writers
// included). Exactly one per quantity reached: the counts only grow, one transaction at a time.
void count_written(pg::Conn& conn, const WrittenByCampaign& w, bool events) {
  std::vector<int64_t> campaign, n, coupon, issued_at;
  std::vector<std::string> user, tp;
  for (const auto& [id, x] : w) {
    if (x.n == 0) continue;
    campaign.push_back(id);
    n.push_back(x.n);
    coupon.push_back(make_coupon_id(id, x.last->seq));
    user.push_back(x.last->user_id);
    issued_at.push_back(x.last->issued_at_us);
    tp.push_back(x.last->traceparent);
  }
  if (campaign.empty()) return;
  static const std::string head =
      "WITH b AS (SELECT * FROM unnest($1::bigint[], $2::bigint[], $3::bigint[], $4::text[], $5::bigint[], $6::text[])"
      "  AS t(campaign_id, n, id, user_id, issued_at_us, tp)) ";
  static const std::string upsert =
      "INSERT INTO campaign_written AS p (campaign_id, written) SELECT campaign_id, n FROM b ORDER BY campaign_id"
      " ON CONFLICT (campaign_id) DO UPDATE SET written = p.written + excluded.written";
  static const std::string plain = head + upsert;
  static const std::string with_events =
      head + ", w AS (" + upsert + " RETURNING p.campaign_id, p.written) " +
      pgevents::sold_out_events_sql(
          "(SELECT b.* FROM w JOIN b ON b.campaign_id = w.campaign_id JOIN campaigns c ON c.id = w.campaign_id"
          "  WHERE w.written - b.n < c.quantity AND w.written >= c.quantity) r");
  pg::Params p;
  p.add_array(campaign).add_array(n).add_array(coupon).add_array(user).add_array(issued_at).add_array_empty_as_null(tp);
  conn.exec_prepared(events ? "cc_count_written_ev" : "cc_count_written", events ? with_events : plain, p);
}

// Which of the given grants have no identical row (checked in a fresh snapshot).
constexpr const char* kAbsentSql =
    "SELECT t.i - 1 FROM unnest($1::bigint[], $2::int[], $3::text[], $4::int[])"
    "  WITH ORDINALITY AS t(campaign_id, seq, user_id, user_ordinal, i)"
    " WHERE NOT EXISTS (SELECT 1 FROM coupons c WHERE c.campaign_id = t.campaign_id AND c.seq = t.seq"
    "                   AND c.user_id = t.user_id AND c.user_ordinal = t.user_ordinal)";

// The fast path's statements: the validity rules of a batch's campaigns, then COPY (text format).
constexpr const char* kGrantRulesSql =
    "SELECT id, valid_until_us, valid_days, partner_id, quantity FROM campaigns WHERE id = ANY($1::bigint[])";
constexpr const char* kCopyGrantsSql =
    "COPY coupons (id, campaign_id, seq, user_id, user_ordinal, request_id, issued_at_us, valid_until_us)"
    " FROM STDIN";
constexpr int64_t kMicrosPerDay = 86'400'000'000;

using pg::append_copy_int;
using pg::append_copy_text;

// Writes the batch with COPY inside the caller's transaction and returns the rows written, or
// nullopt when the fast path does not apply (a campaign without a row, a validity that does not
// fit in 64 bits): the set-based statement then decides those cases, as it always has.
// valid_until_us is computed here exactly as insert_grants_sql() computes it.
std::optional<int64_t> copy_grants(pg::Conn& conn, const std::vector<Grant>& grants, bool events) {
  std::vector<int64_t> ids;
  for (const Grant& g : grants) {
    if (ids.empty() || ids.back() != g.campaign_id) ids.push_back(g.campaign_id);
  }
  std::sort(ids.begin(), ids.end());
  ids.erase(std::unique(ids.begin(), ids.end()), ids.end());
  struct Rule {
    int64_t id;
    std::optional<int64_t> until, days;
    int64_t partner_id, quantity;
  };
  std::vector<Rule> rules;
  pg::Result r = conn.exec_prepared("cc_grant_rules", kGrantRulesSql, pg::Params().add_array(ids));
  for (int row = 0; row < r.rows(); ++row) rules.push_back({r.i64(row, 0), r.opt_i64(row, 1), r.opt_i64(row, 2), r.i64(row, 3), r.i64(row, 4)});
  if (rules.size() != ids.size()) return std::nullopt;
  std::sort(rules.begin(), rules.end(), [](const Rule& a, const Rule& b) { return a.id < b.id; });

  std::string data;
  data.reserve(grants.size() * 96);
  std::vector<events::Row> outbox;
  if (events) outbox.reserve(grants.size());
  for (const Grant& g : grants) {
    const Rule& rule = *std::lower_bound(rules.begin(), rules.end(), g.campaign_id,
                                         [](const Rule& a, int64_t id) { return a.id < id; });
    std::optional<int64_t> valid_until = rule.until;
    if (!valid_until && rule.days) {
      int64_t span = 0, until = 0;
      if (__builtin_mul_overflow(*rule.days, kMicrosPerDay, &span) ||
          __builtin_add_overflow(g.issued_at_us, span, &until)) {
        return std::nullopt;
      }
      valid_until = until;
    }
    if (events) events::append_issued_rows(g, rule.partner_id, /*quantity=*/0, valid_until, outbox);
    append_copy_int(data, (g.campaign_id << 32) | static_cast<int64_t>(g.seq));
    data.push_back('\t');
    append_copy_int(data, g.campaign_id);
    data.push_back('\t');
    append_copy_int(data, g.seq);
    data.push_back('\t');
    append_copy_text(data, g.user_id);
    data.push_back('\t');
    append_copy_int(data, g.user_ordinal);
    data.push_back('\t');
    if (g.request_id.empty()) {
      data.append("\\N");
    } else {
      append_copy_text(data, g.request_id);
    }
    data.push_back('\t');
    append_copy_int(data, g.issued_at_us);
    data.push_back('\t');
    if (valid_until) {
      append_copy_int(data, *valid_until);
    } else {
      data.append("\\N");
    }
    data.push_back('\n');
  }
  const int64_t n = conn.copy_in(kCopyGrantsSql, data);
  if (events) pgevents::copy_rows(conn, outbox);  // after the rows, in their transaction
  return n;
}

pg::Params grant_params(const std::vector<Grant>& grants, bool full) {
  std::vector<int64_t> campaign(grants.size()), issued_at(grants.size());
  std::vector<uint32_t> seq(grants.size()), ordinal(grants.size());
  std::vector<std::string> user(grants.size()), request(grants.size()), tp(grants.size());
  for (std::size_t i = 0; i < grants.size(); ++i) {
    campaign[i] = grants[i].campaign_id;
    seq[i] = grants[i].seq;
    user[i] = grants[i].user_id;
    ordinal[i] = grants[i].user_ordinal;
    request[i] = grants[i].request_id;
    issued_at[i] = grants[i].issued_at_us;
    tp[i] = grants[i].traceparent;
  }
  pg::Params p;
  p.add_array(campaign).add_array(seq).add_array(user).add_array(ordinal);
  if (full) p.add_array_empty_as_null(request).add_array(issued_at).add_array_empty_as_null(tp);
  return p;
}

bool data_error(const pg::PgError& e) {
  if (e.retryable()) return false;
  return e.code() == ErrorCode::kConflict || e.code() == ErrorCode::kInvalidArgument;
}

const char* kConflictReason =
    "conflict: another grant already holds this (campaign_id, seq) or (campaign_id, user_id, user_ordinal)";

// Returns the indexes (into `grants`) among `candidates` that have no identical row.
std::vector<std::size_t> still_absent(pg::Conn& conn, const std::vector<Grant>& grants,
                                      const std::vector<std::size_t>& candidates) {
  std::vector<Grant> sub;
  for (std::size_t i : candidates) sub.push_back(grants[i]);
  pg::Result r = conn.exec(kAbsentSql, grant_params(sub, false));
  std::vector<std::size_t> out;
  for (int row = 0; row < r.rows(); ++row) out.push_back(candidates[static_cast<std::size_t>(r.i64(row, 0))]);
  return out;
}

WriteOutcome write_row_by_row(pg::Conn& conn, const std::vector<Grant>& grants, bool events) {
  WriteOutcome out;
  std::vector<std::size_t> conflicts;
  WrittenByCampaign written;
  pg::Tx tx(conn);
  for (std::size_t i = 0; i < grants.size(); ++i) {
    conn.exec("SAVEPOINT g");
    try {
      pg::Result r = conn.exec_prepared(insert_grants_name(events), insert_grants_sql(events), grant_params({grants[i]}, true));
      conn.exec("RELEASE SAVEPOINT g");
      const int64_t inserted = r.i64(0, 1);
      out.inserted += inserted;
      if (inserted > 0) note(written, grants[i], inserted);
      bool conflict = false;
      for (int row = 1; row < r.rows(); ++row) conflict = conflict || r.i64(row, 0) >= 0;
      if (conflict) {
        conflicts.push_back(i);
      } else if (inserted == 0) {
        out.already_present++;
      }
    } catch (const pg::PgError& e) {
      if (!data_error(e)) throw;
      conn.exec("ROLLBACK TO SAVEPOINT g");
      out.failed.emplace_back(i, e.what());
    }
  }
  count_written(conn, written, events);
  tx.commit();
  if (!conflicts.empty()) {
    std::vector<std::size_t> absent = still_absent(conn, grants, conflicts);
    out.already_present += static_cast<int64_t>(conflicts.size() - absent.size());
    for (std::size_t i : absent) out.failed.emplace_back(i, kConflictReason);
  }
  return out;
}

}  // namespace

Campaign insert_campaign(pg::Conn& conn, const CampaignSpec& spec, int64_t now_us) {
  pg::Params p;
  p.add(spec.partner_id).add(spec.name).add(spec.quantity).add(int64_t{spec.per_user_limit});
  p.add(spec.starts_at_us).add(spec.ends_at_us).add(static_cast<int64_t>(spec.discount_kind));
  p.add(spec.discount_value).add(spec.discount_max).add(spec.min_order_amount).add(spec.valid_until_us);
  if (spec.valid_days) {
    p.add(int64_t{*spec.valid_days});
  } else {
    p.add_null();
  }
  p.add(now_us).add(int64_t{spec.shards}).add(int64_t{spec.rate_limit_per_user});
  p.add(int64_t{spec.rate_limit_per_partner}).add(int64_t{spec.rate_window_ms});
  pg::Result r = conn.exec(
      "INSERT INTO campaigns(partner_id, name, quantity, per_user_limit, starts_at_us, ends_at_us,"
      " discount_kind, discount_value, discount_max, min_order_amount, valid_until_us, valid_days,"
      " created_at_us, shards, rate_limit_per_user, rate_limit_per_partner, rate_window_ms)"
      " VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12,$13,$14,$15,$16,$17) RETURNING id",
      p);
  Campaign c;
  c.id = r.i64(0, 0);
  if (c.id > limits::kCampaignIdMax) throw Error(ErrorCode::kInternal, "campaign ids exhausted");
  c.spec = spec;
  c.created_at_us = now_us;
  return c;
}

std::optional<Campaign> find_campaign(pg::Conn& conn, int64_t campaign_id) {
  pg::Result r = conn.exec(std::string("SELECT ") + kCampaignColumns + " FROM campaigns WHERE id = $1",
                           pg::Params().add(campaign_id));
  if (r.rows() == 0) return std::nullopt;
  return campaign_from_row(r, 0);
}

std::vector<Campaign> list_campaigns(pg::Conn& conn, int64_t partner_id) {
  pg::Result r = conn.exec(
      std::string("SELECT ") + kCampaignColumns + " FROM campaigns WHERE partner_id = $1 ORDER BY id",
      pg::Params().add(partner_id));
  std::vector<Campaign> out;
  for (int i = 0; i < r.rows(); ++i) out.push_back(campaign_from_row(r, i));
  return out;
}

CampaignStats stats(pg::Conn& conn, int64_t campaign_id) {
  pg::Result r = conn.exec(
      "SELECT count(*), count(DISTINCT user_id), coalesce(min(seq),0), coalesce(max(seq),0)"
      " FROM coupons WHERE campaign_id = $1",
      pg::Params().add(campaign_id));
  CampaignStats st;
  st.rows = r.i64(0, 0);
  st.distinct_users = r.i64(0, 1);
  st.min_seq = r.i64(0, 2);
  st.max_seq = r.i64(0, 3);
  return st;
}

Holdings holdings(pg::Conn& conn, int64_t campaign_id) {
  Holdings h;
  pg::Result m = conn.exec("SELECT coalesce(max(seq),0) FROM coupons WHERE campaign_id = $1",
                           pg::Params().add(campaign_id));
  h.max_seq = m.i64(0, 0);
  pg::Result r = conn.exec("SELECT user_id, count(*) FROM coupons WHERE campaign_id = $1 GROUP BY user_id",
                           pg::Params().add(campaign_id));
  h.holders.reserve(static_cast<std::size_t>(r.rows()));
  for (int i = 0; i < r.rows(); ++i) h.holders.emplace_back(std::string(r.text(i, 0)), r.i64(i, 1));
  return h;
}

WriteOutcome write_grants(pg::Conn& conn, const std::vector<Grant>& grants, bool events) {
  WriteOutcome out;
  if (grants.empty()) return out;
  // Fast path: COPY, the bulk-load protocol, in one transaction. COPY has no ON CONFLICT: a
  // batch holding a grant whose row is already there (a redelivery after a crash or a lost
  // commit reply) fails whole with a unique violation and is rolled back; the set-based
  // statement below then sorts out each grant, as it does for a batch with a bad row.
  try {
    pg::Tx tx(conn);
    if (std::optional<int64_t> n = copy_grants(conn, grants, events)) {
      WrittenByCampaign written;
      for (const Grant& g : grants) note(written, g, 1);
      count_written(conn, written, events);
      tx.commit();
      CC_ASSERT(*n == static_cast<int64_t>(grants.size()),
                "COPY wrote " + std::to_string(*n) + " rows for " + std::to_string(grants.size()) + " grants");
      out.inserted = *n;
      return out;
    }
  } catch (const pg::PgError& e) {
    if (!data_error(e)) throw;
  }
  std::vector<std::size_t> conflicts;
  try {
    pg::Tx tx(conn);
    pg::Result r = conn.exec_prepared(insert_grants_name(events), insert_grants_sql(events), grant_params(grants, true));
    std::map<int64_t, int64_t> inserted;  // per campaign
    for (int row = 0; row < r.rows(); ++row) {
      const int64_t idx = r.i64(row, 0);
      if (idx == -1) {
        out.inserted = r.i64(row, 1);
      } else if (idx == -2) {
        inserted[r.i64(row, 2)] = r.i64(row, 1);
      } else {
        conflicts.push_back(static_cast<std::size_t>(idx));
      }
    }
    // The latest grant of each campaign among those the batch holds (inserted now, or already there).
    std::vector<bool> conflicting(grants.size(), false);
    for (std::size_t i : conflicts) conflicting[i] = true;
    WrittenByCampaign written;
    for (std::size_t i = 0; i < grants.size(); ++i) {
      if (!conflicting[i] && inserted.count(grants[i].campaign_id)) note(written, grants[i], 0);
    }
    for (auto& [id, x] : written) x.n = inserted[id];
    count_written(conn, written, events);
    tx.commit();
  } catch (const pg::PgError& e) {
    if (!data_error(e)) throw;
    return write_row_by_row(conn, grants, events);
  }
  if (!conflicts.empty()) {
    // The statement's snapshot may predate a concurrent writer's commit of the same grant:
    // look again before calling anything a conflict.
    std::vector<std::size_t> absent = still_absent(conn, grants, conflicts);
    for (std::size_t i : absent) out.failed.emplace_back(i, kConflictReason);
  }
  out.already_present = static_cast<int64_t>(grants.size()) - out.inserted - static_cast<int64_t>(out.failed.size());
  CC_ASSERT(out.already_present >= 0, "the insert reported more rows than grants");
  return out;
}

std::vector<int64_t> seqs_with_row(pg::Conn& conn, int64_t campaign_id, const std::vector<int64_t>& seqs) {
  std::vector<int64_t> out;
  if (seqs.empty()) return out;
  pg::Result r = conn.exec("SELECT seq FROM coupons WHERE campaign_id = $1 AND seq = ANY($2::bigint[])",
                           pg::Params().add(campaign_id).add_array(seqs));
  for (int i = 0; i < r.rows(); ++i) out.push_back(r.i64(i, 0));
  return out;
}

std::vector<int64_t> seqs_without_row(pg::Conn& conn, int64_t campaign_id, int64_t n) {
  std::vector<int64_t> out;
  if (n <= 0) return out;
  pg::Result c = conn.exec("SELECT count(*) FROM coupons WHERE campaign_id = $1 AND seq BETWEEN 1 AND $2",
                           pg::Params().add(campaign_id).add(n));
  if (c.i64(0, 0) >= n) return out;  // no gap: the usual case, without walking 1..n
  pg::Result r = conn.exec(
      "SELECT s FROM generate_series(1, $2::bigint) s"
      " WHERE NOT EXISTS (SELECT 1 FROM coupons c WHERE c.campaign_id = $1 AND c.seq = s)",
      pg::Params().add(campaign_id).add(n));
  out.reserve(static_cast<std::size_t>(r.rows()));
  for (int i = 0; i < r.rows(); ++i) out.push_back(r.i64(i, 0));
  return out;
}

GrantPlaces grant_places(pg::Conn& conn, int64_t campaign_id, int64_t seq, const std::string& user_id,
                         int64_t user_ordinal) {
  pg::Result r = conn.exec(
      "SELECT seq, user_id, user_ordinal FROM coupons WHERE campaign_id = $1"
      " AND (seq = $2 OR (user_id = $3 AND user_ordinal = $4))",
      pg::Params().add(campaign_id).add(seq).add(user_id).add(user_ordinal));
  GrantPlaces p;
  for (int i = 0; i < r.rows(); ++i) {
    const bool same_seq = r.i64(i, 0) == seq;
    const bool same_ordinal = r.text(i, 1) == user_id && r.i64(i, 2) == user_ordinal;
    p.seq_taken = p.seq_taken || same_seq;
    p.ordinal_taken = p.ordinal_taken || same_ordinal;
    p.identical = p.identical || (same_seq && same_ordinal);
  }
  return p;
}

std::pair<int64_t, std::vector<int64_t>> missing_seqs(pg::Conn& conn, int64_t campaign_id, int64_t issued,
                                                      std::size_t sample_max) {
  std::pair<int64_t, std::vector<int64_t>> out{0, {}};
  if (issued <= 0) return out;
  pg::Result c = conn.exec("SELECT $2::bigint - count(*) FROM coupons WHERE campaign_id = $1 AND seq BETWEEN 1 AND $2",
                           pg::Params().add(campaign_id).add(issued));
  out.first = c.i64(0, 0);
  if (out.first == 0 || sample_max == 0) return out;
  // generate_series yields in order and LIMIT stops it early: no sort of 1..issued.
  pg::Result r = conn.exec(
      "SELECT s FROM generate_series(1, $2::bigint) s"
      " WHERE NOT EXISTS (SELECT 1 FROM coupons c WHERE c.campaign_id = $1 AND c.seq = s) LIMIT $3",
      pg::Params().add(campaign_id).add(issued).add(static_cast<int64_t>(sample_max)));
  for (int i = 0; i < r.rows(); ++i) out.second.push_back(r.i64(i, 0));
  return out;
}

}  // namespace couponcore::pgstore
