// The coupon lifecycle on PostgreSQL; see pg_coupons.hpp. The SQL mirrors
// store/sqlite_coupons.cpp statement for statement.
#include "store/postgres/pg_coupons.hpp"

#include <string>

#include "couponcore/error.hpp"
#include "events/event_sql.hpp"

namespace couponcore {

namespace {

constexpr const char* kCouponColumns =
    "k.id, k.campaign_id, k.seq, k.user_id, k.state, k.issued_at_us, k.valid_until_us,"
    " k.used_order_id, k.used_at_us, k.used_amount, k.discount_amount";

Coupon coupon_from(const pg::Result& r, int row) {
  Coupon c;
  c.id = r.i64(row, 0);
  c.campaign_id = r.i64(row, 1);
  c.seq = static_cast<uint32_t>(r.i64(row, 2));
  c.user_id = std::string(r.text(row, 3));
  c.state = static_cast<CouponState>(r.i64(row, 4));
  c.issued_at_us = r.i64(row, 5);
  c.valid_until_us = r.opt_i64(row, 6);
  if (!r.is_null(row, 7)) c.used_order_id = std::string(r.text(row, 7));
  c.used_at_us = r.opt_i64(row, 8);
  c.order_amount = r.opt_i64(row, 9);
  c.discount_amount = r.opt_i64(row, 10);
  return c;
}

// The read-time expiry rule, in SQL: $1 is now_us. Indexed by CouponState.
constexpr const char* kStateFilter[] = {
    " AND k.state = 0 AND (k.valid_until_us IS NULL OR k.valid_until_us > $1)",
    " AND k.state = 1",
    " AND (k.state = 2 OR (k.state = 0 AND k.valid_until_us <= $1))",
};
constexpr const char* kListNames[] = {"lc_coupons_list_issued", "lc_coupons_list_used", "lc_coupons_list_expired"};

}  // namespace

namespace pgcoupons {

const char* const kLoadSql =
    "SELECT k.id, k.campaign_id, k.seq, k.user_id, k.state, k.issued_at_us, k.valid_until_us,"
    " k.used_order_id, k.used_at_us, k.used_amount, k.discount_amount"
    ", k.cancelled_order_id, c.partner_id, c.discount_kind, c.discount_value, c.discount_max,"
    " c.min_order_amount, c.valid_until_us, c.valid_days"
    " FROM coupons k JOIN campaigns c ON c.id = k.campaign_id";

// `WITH p AS (tp), u AS (<update> RETURNING *)`, the events of the updated rows when asked
// (events/event_sql.hpp: in the same statement, after the change), then the rows changed.
std::string with_events(const char* tp_param, const char* update, std::initializer_list<std::string_view> types,
                        bool events) {
  std::string sql = std::string("WITH p AS (SELECT ") + tp_param + "::text AS tp), u AS (" + update + " RETURNING *)";
  if (events) {
    sql += ", ev AS (" + events::coupon_events_sql(events::Dialect::kPostgres, types, "(SELECT u.*, p.tp FROM u, p) r") + ")";
  }
  return sql + " SELECT count(*) FROM u";
}

const std::string& mark_used_sql(bool events) {
  static const char* update =
      "UPDATE coupons SET state = 1, used_order_id = $1, used_at_us = $2, used_amount = $3,"
      " discount_amount = $4, state_changed_at_us = $2"
      " WHERE id = $5 AND state = 0 AND user_id = $6 AND (valid_until_us IS NULL OR valid_until_us > $2)";
  static const std::string with = with_events("$7", update, {"coupon.used"}, true);
  static const std::string without = with_events("$7", update, {"coupon.used"}, false);
  return events ? with : without;
}

const std::string& mark_cancelled_sql(bool events) {
  static const char* update =
      "UPDATE coupons SET"
      " state = CASE WHEN valid_until_us IS NULL OR valid_until_us > $1 THEN 0 ELSE 2 END,"
      " cancelled_order_id = used_order_id, used_order_id = NULL, used_at_us = NULL,"
      " used_amount = NULL, discount_amount = NULL, state_changed_at_us = $1"
      " WHERE id = $2 AND state = 1 AND used_order_id = $3";
  static const std::string with = with_events("$4", update, {"coupon.use_cancelled", "coupon.expired"}, true);
  static const std::string without = with_events("$4", update, {"coupon.use_cancelled", "coupon.expired"}, false);
  return events ? with : without;
}

int64_t changed(const pg::Result& r) { return r.i64(0, 0); }

CouponRow row_from(const pg::Result& r, int i) {
  CouponRow row;
  row.coupon = coupon_from(r, i);
  if (!r.is_null(i, 11)) row.cancelled_order_id = std::string(r.text(i, 11));
  row.terms.partner_id = r.i64(i, 12);
  row.terms.discount_kind = static_cast<DiscountKind>(r.i64(i, 13));
  row.terms.discount_value = r.i64(i, 14);
  row.terms.discount_max = r.opt_i64(i, 15);
  row.terms.min_order_amount = r.i64(i, 16);
  row.terms.valid_until_us = r.opt_i64(i, 17);
  if (auto d = r.opt_i64(i, 18)) row.terms.valid_days = static_cast<int32_t>(*d);
  return row;
}

// A traceparent parameter: NULL for none.
void add_traceparent(pg::Params& p, const std::string& traceparent) {
  if (traceparent.empty()) {
    p.add_null();
  } else {
    p.add(traceparent);
  }
}

pg::Params mark_used_params(const UseRequest& r, int64_t discount_amount, int64_t now_us) {
  pg::Params p;
  p.add(r.order_id).add(now_us).add(r.order_amount).add(discount_amount).add(r.coupon_id).add(r.user_id);
  add_traceparent(p, r.traceparent);
  return p;
}

pg::Params mark_cancelled_params(int64_t coupon_id, const std::string& order_id, int64_t now_us,
                                 const std::string& traceparent) {
  pg::Params p;
  p.add(now_us).add(coupon_id).add(order_id);
  add_traceparent(p, traceparent);
  return p;
}

}  // namespace pgcoupons

std::optional<CouponRow> PgCouponStore::load(int64_t coupon_id) {
  auto conn = pool_.acquire();
  pg::Result r = conn->exec_prepared("lc_coupon_load", std::string(pgcoupons::kLoadSql) + " WHERE k.id = $1",
                                     pg::Params().add(coupon_id));
  if (r.rows() == 0) return std::nullopt;
  return pgcoupons::row_from(r, 0);
}

bool PgCouponStore::grant_pending(int64_t partner_id, int64_t coupon_id) {
  const int64_t campaign_id = campaign_of_coupon(coupon_id);
  const uint32_t seq = seq_of_coupon(coupon_id);
  int64_t quantity = 0;
  {
    auto conn = pool_.acquire();
    pg::Result r = conn->exec_prepared("lc_campaign_owner_quantity",
                                       "SELECT partner_id, quantity FROM campaigns WHERE id = $1",
                                       pg::Params().add(campaign_id));
    if (r.rows() == 0 || r.i64(0, 0) != partner_id) return false;  // not the caller's: not found
    quantity = r.i64(0, 1);
  }
  if (options_.grant_pending) return options_.grant_pending(campaign_id, seq);
  return pgcoupons::grant_may_be_pending(seq, quantity);
}

bool PgCouponStore::mark_used(const UseRequest& r, int64_t discount_amount, int64_t now_us) {
  auto conn = pool_.acquire();
  pg::Result res = conn->exec_prepared(options_.events ? "lc_coupon_use_ev" : "lc_coupon_use",
                                       pgcoupons::mark_used_sql(options_.events),
                                       pgcoupons::mark_used_params(r, discount_amount, now_us));
  return pgcoupons::changed(res) == 1;
}

bool PgCouponStore::mark_cancelled(int64_t coupon_id, const std::string& order_id, int64_t now_us,
                                   const std::string& traceparent) {
  auto conn = pool_.acquire();
  pg::Result res = conn->exec_prepared(options_.events ? "lc_coupon_cancel_ev" : "lc_coupon_cancel",
                                       pgcoupons::mark_cancelled_sql(options_.events),
                                       pgcoupons::mark_cancelled_params(coupon_id, order_id, now_us, traceparent));
  return pgcoupons::changed(res) == 1;
}

std::optional<int64_t> PgCouponStore::campaign_partner(int64_t campaign_id) {
  auto conn = pool_.acquire();
  pg::Result r = conn->exec_prepared("lc_campaign_partner", "SELECT partner_id FROM campaigns WHERE id = $1",
                                     pg::Params().add(campaign_id));
  if (r.rows() == 0) return std::nullopt;
  return r.i64(0, 0);
}

std::optional<CouponTerms> PgCouponStore::campaign_terms(int64_t campaign_id) {
  auto conn = pool_.acquire();
  pg::Result r = conn->exec_prepared(
      "lc_campaign_terms",
      "SELECT partner_id, discount_kind, discount_value, discount_max, min_order_amount,"
      " valid_until_us, valid_days FROM campaigns WHERE id = $1",
      pg::Params().add(campaign_id));
  if (r.rows() == 0) return std::nullopt;
  CouponTerms t;
  t.partner_id = r.i64(0, 0);
  t.discount_kind = static_cast<DiscountKind>(r.i64(0, 1));
  t.discount_value = r.i64(0, 2);
  t.discount_max = r.opt_i64(0, 3);
  t.min_order_amount = r.i64(0, 4);
  t.valid_until_us = r.opt_i64(0, 5);
  if (auto d = r.opt_i64(0, 6)) t.valid_days = static_cast<int32_t>(*d);
  return t;
}

CouponPage PgCouponStore::list_for_user(int64_t partner_id, const CouponQuery& q, int64_t now_us) {
  std::string sql = std::string("SELECT ") + kCouponColumns +
                    " FROM coupons k JOIN campaigns c ON c.id = k.campaign_id"
                    " WHERE $1::bigint IS NOT NULL AND k.user_id = $2 AND c.partner_id = $3 AND k.id > $4";
  if (q.state) sql += kStateFilter[static_cast<int>(*q.state)];
  sql += " ORDER BY k.id LIMIT $5";
  const std::string name = q.state ? kListNames[static_cast<int>(*q.state)] : "lc_coupons_list_all";
  auto conn = pool_.acquire();
  pg::Result r = conn->exec_prepared(
      name, sql,
      pg::Params().add(now_us).add(q.user_id).add(partner_id).add(q.after_coupon_id).add(int64_t{q.limit} + 1));
  CouponPage page;
  for (int i = 0; i < r.rows(); ++i) {
    if (static_cast<int64_t>(page.items.size()) == q.limit) {
      page.next_cursor = page.items.back().id;
      break;
    }
    Coupon c = coupon_from(r, i);
    c.state = effective_state(c.state, c.valid_until_us, now_us);
    page.items.push_back(std::move(c));
  }
  return page;
}

CouponCounts PgCouponStore::counts(int64_t campaign_id, int64_t now_us) {
  auto conn = pool_.acquire();
  pg::Result r = conn->exec_prepared(
      "lc_coupon_counts",
      "SELECT"
      " count(*) FILTER (WHERE state = 0 AND (valid_until_us IS NULL OR valid_until_us > $1)),"
      " count(*) FILTER (WHERE state = 1),"
      " count(*) FILTER (WHERE state = 2 OR (state = 0 AND valid_until_us <= $1)),"
      " count(*) FROM coupons WHERE campaign_id = $2",
      pg::Params().add(now_us).add(campaign_id));
  CouponCounts c;
  c.issued = r.i64(0, 0);
  c.used = r.i64(0, 1);
  c.expired = r.i64(0, 2);
  c.total = r.i64(0, 3);
  return c;
}

int64_t PgCouponStore::expire_chunk(int64_t now_us, int64_t chunk_rows) {
  auto conn = pool_.acquire();
  static const char* update =
      "UPDATE coupons SET state = 2, state_changed_at_us = $1 WHERE id IN"
      " (SELECT id FROM coupons WHERE state = 0 AND valid_until_us <= $1"
      "  ORDER BY valid_until_us LIMIT $2 FOR UPDATE SKIP LOCKED)"
      " AND state = 0";
  static const std::string with = pgcoupons::with_events("NULL", update, {"coupon.expired"}, true);
  static const std::string without = pgcoupons::with_events("NULL", update, {"coupon.expired"}, false);
  pg::Result r = conn->exec_prepared(options_.events ? "lc_coupons_expire_chunk_ev" : "lc_coupons_expire_chunk",
                                     options_.events ? with : without, pg::Params().add(now_us).add(chunk_rows));
  return pgcoupons::changed(r);
}

bool PgCouponStore::set_campaign_state(int64_t partner_id, int64_t campaign_id, CampaignState state) {
  auto conn = pool_.acquire();
  pg::Result r = conn->exec_prepared("lc_campaign_set_state",
                                     "UPDATE campaigns SET state = $1 WHERE id = $2 AND partner_id = $3",
                                     pg::Params().add(static_cast<int64_t>(state)).add(campaign_id).add(partner_id));
  return r.affected() == 1;
}

bool PgCouponStore::set_campaign_quantity(int64_t partner_id, int64_t campaign_id, int64_t quantity) {
  // One statement: the count and the update see the same snapshot, and the campaign row lock
  // orders it against other quantity changes. (Rows arriving from the writer meanwhile are the
  // gate's business: the caller checked the gate's count first.)
  {
    auto conn = pool_.acquire();
    pg::Result r = conn->exec_prepared(
      "lc_campaign_set_quantity",
      "WITH owner AS (SELECT id FROM campaigns WHERE id = $2 AND partner_id = $3),"
      " held AS (SELECT count(*) AS n FROM coupons WHERE campaign_id = $2)"
      " UPDATE campaigns SET quantity = $1 FROM owner, held"
      " WHERE campaigns.id = owner.id AND $1 >= held.n"
      " RETURNING (SELECT n FROM held)",
      pg::Params().add(quantity).add(campaign_id).add(partner_id));
    if (r.rows() == 1) return true;
  }
  std::optional<int64_t> owner = campaign_partner(campaign_id);  // after the lease ends: pools of 1 work
  if (!owner || *owner != partner_id) return false;
  throw_conflict("campaign " + std::to_string(campaign_id) + ": quantity " + std::to_string(quantity) +
                 " is below the coupons already issued");
}

std::optional<PgCouponStore::CampaignRules> PgCouponStore::lock_campaign_rules(pg::Conn& conn, int64_t partner_id,
                                                                              int64_t campaign_id) {
  pg::Result r = conn.exec_prepared("lc_campaign_lock",
                                    "SELECT state, quantity, rate_limit_per_user, rate_limit_per_partner, rate_window_ms"
                                    " FROM campaigns WHERE id = $1 AND partner_id = $2 FOR UPDATE",
                                    pg::Params().add(campaign_id).add(partner_id));
  if (r.rows() == 0) return std::nullopt;
  return CampaignRules{static_cast<CampaignState>(r.i64(0, 0)), r.i64(0, 1), static_cast<int32_t>(r.i64(0, 2)),
                       static_cast<int32_t>(r.i64(0, 3)), static_cast<int32_t>(r.i64(0, 4))};
}

void PgCouponStore::write_campaign_rules(pg::Conn& conn, int64_t campaign_id, const CampaignRules& rules) {
  conn.exec_prepared("lc_campaign_write_rules",
                     "UPDATE campaigns SET state = $1, quantity = $2, rate_limit_per_user = $3,"
                     " rate_limit_per_partner = $4, rate_window_ms = $5 WHERE id = $6",
                     pg::Params()
                         .add(static_cast<int64_t>(rules.state))
                         .add(rules.quantity)
                         .add(int64_t{rules.rate_limit_per_user})
                         .add(int64_t{rules.rate_limit_per_partner})
                         .add(int64_t{rules.rate_window_ms})
                         .add(campaign_id));
}

}  // namespace couponcore
