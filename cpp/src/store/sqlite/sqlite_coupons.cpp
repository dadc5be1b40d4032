// The coupon lifecycle on SQLite; see sqlite_coupons.hpp. The SQL mirrors
// postgres/pg_coupons.cpp statement for statement.
#include "store/sqlite/sqlite_coupons.hpp"

#include <algorithm>
#include <string>

#include "store/sqlite/sqlite_events.hpp"

namespace couponcore {

namespace {

constexpr const char* kCouponColumns =
    "k.id, k.campaign_id, k.seq, k.user_id, k.state, k.issued_at_us, k.valid_until_us,"
    " k.used_order_id, k.used_at_us, k.used_amount, k.discount_amount";

Coupon coupon_from(const sqlite::Stmt& s) {
  Coupon c;
  c.id = s.i64(0);
  c.campaign_id = s.i64(1);
  c.seq = static_cast<uint32_t>(s.i64(2));
  c.user_id = s.text(3);
  c.state = static_cast<CouponState>(s.i64(4));
  c.issued_at_us = s.i64(5);
  c.valid_until_us = s.opt_i64(6);
  if (!s.is_null(7)) c.used_order_id = s.text(7);
  c.used_at_us = s.opt_i64(8);
  c.order_amount = s.opt_i64(9);
  c.discount_amount = s.opt_i64(10);
  return c;
}

// The read-time expiry rule, in SQL: ?1 is now_us.
constexpr const char* kStateFilter[] = {
    " AND k.state = 0 AND (k.valid_until_us IS NULL OR k.valid_until_us > ?1)",       // issued
    " AND k.state = 1",                                                                // used
    " AND (k.state = 2 OR (k.state = 0 AND k.valid_until_us <= ?1))",                 // expired
};

}  // namespace

namespace sqlite_coupons {

std::optional<CouponRow> load(sqlite::Db& db, int64_t coupon_id) {
  sqlite::Stmt s(db, std::string("SELECT ") + kCouponColumns +
                         ", k.cancelled_order_id, c.partner_id, c.discount_kind, c.discount_value,"
                         " c.discount_max, c.min_order_amount, c.valid_until_us, c.valid_days"
                         " FROM coupons k JOIN campaigns c ON c.id = k.campaign_id WHERE k.id = ?");
  s.bind(1, coupon_id);
  if (!s.step()) return std::nullopt;
  CouponRow row;
  row.coupon = coupon_from(s);
  if (!s.is_null(11)) row.cancelled_order_id = s.text(11);
  row.terms.partner_id = s.i64(12);
  row.terms.discount_kind = static_cast<DiscountKind>(s.i64(13));
  row.terms.discount_value = s.i64(14);
  row.terms.discount_max = s.opt_i64(15);
  row.terms.min_order_amount = s.i64(16);
  row.terms.valid_until_us = s.opt_i64(17);
  if (auto d = s.opt_i64(18)) row.terms.valid_days = static_cast<int32_t>(*d);
  return row;
}

bool mark_used(sqlite::Db& db, const UseRequest& r, int64_t discount_amount, int64_t now_us, bool events) {
  std::optional<sqlite_events::Savepoint> sp;
  if (events) sp.emplace(db);
  sqlite::Stmt s(db,
                 "UPDATE coupons SET state = 1, used_order_id = ?1, used_at_us = ?2, used_amount = ?3,"
                 " discount_amount = ?4, state_changed_at_us = ?2"
                 " WHERE id = ?5 AND state = 0 AND user_id = ?6 AND (valid_until_us IS NULL OR valid_until_us > ?2)");
  s.bind(1, std::string_view(r.order_id)).bind(2, now_us).bind(3, r.order_amount).bind(4, discount_amount);
  s.bind(5, r.coupon_id).bind(6, std::string_view(r.user_id));
  s.run();
  const bool done = db.changes() == 1;
  if (sp) {
    if (done) sqlite_events::write_coupon_events(db, {"coupon.used"}, r.coupon_id, r.traceparent);
    sp->release();
  }
  return done;
}

bool mark_cancelled(sqlite::Db& db, int64_t coupon_id, const std::string& order_id, int64_t now_us,
                    const std::string& traceparent, bool events) {
  std::optional<sqlite_events::Savepoint> sp;
  if (events) sp.emplace(db);
  sqlite::Stmt s(db,
                 "UPDATE coupons SET"
                 " state = CASE WHEN valid_until_us IS NULL OR valid_until_us > ?1 THEN 0 ELSE 2 END,"
                 " cancelled_order_id = used_order_id, used_order_id = NULL, used_at_us = NULL,"
                 " used_amount = NULL, discount_amount = NULL, state_changed_at_us = ?1"
                 " WHERE id = ?2 AND state = 1 AND used_order_id = ?3");
  s.bind(1, now_us).bind(2, coupon_id).bind(3, std::string_view(order_id));
  s.run();
  const bool done = db.changes() == 1;
  if (sp) {
    if (done) {
      // Cancelled after its validity passed, the coupon is expired at once: both events.
      sqlite_events::write_coupon_events(db, {"coupon.use_cancelled", "coupon.expired"}, coupon_id, traceparent);
    }
    sp->release();
  }
  return done;
}

}  // namespace sqlite_coupons

std::optional<CouponRow> SqliteCouponStore::load(int64_t coupon_id) {
  std::lock_guard lock(store_.mutex());
  return sqlite_coupons::load(store_.db(), coupon_id);
}

bool SqliteCouponStore::mark_used(const UseRequest& r, int64_t discount_amount, int64_t now_us) {
  std::lock_guard lock(store_.mutex());
  return sqlite_coupons::mark_used(store_.db(), r, discount_amount, now_us, store_.events());
}

bool SqliteCouponStore::mark_cancelled(int64_t coupon_id, const std::string& order_id, int64_t now_us,
                                       const std::string& traceparent) {
  std::lock_guard lock(store_.mutex());
  return sqlite_coupons::mark_cancelled(store_.db(), coupon_id, order_id, now_us, traceparent, store_.events());
}

std::optional<int64_t> SqliteCouponStore::campaign_partner(int64_t campaign_id) {
  std::lock_guard lock(store_.mutex());
  sqlite::Stmt s(store_.db(), "SELECT partner_id FROM campaigns WHERE id = ?");
  s.bind(1, campaign_id);
  if (!s.step()) return std::nullopt;
  return s.i64(0);
}

std::optional<CouponTerms> SqliteCouponStore::campaign_terms(int64_t campaign_id) {
  std::lock_guard lock(store_.mutex());
  sqlite::Stmt s(store_.db(),
                 "SELECT partner_id, discount_kind, discount_value, discount_max, min_order_amount,"
                 " valid_until_us, valid_days FROM campaigns WHERE id = ?");
  s.bind(1, campaign_id);
  if (!s.step()) return std::nullopt;
  CouponTerms t;
  t.partner_id = s.i64(0);
  t.discount_kind = static_cast<DiscountKind>(s.i64(1));
  t.discount_value = s.i64(2);
  t.discount_max = s.opt_i64(3);
  t.min_order_amount = s.i64(4);
  t.valid_until_us = s.opt_i64(5);
  if (auto d = s.opt_i64(6)) t.valid_days = static_cast<int32_t>(*d);
  return t;
}

CouponPage SqliteCouponStore::list_for_user(int64_t partner_id, const CouponQuery& q, int64_t now_us) {
  std::string sql = std::string("SELECT ") + kCouponColumns +
                    " FROM coupons k JOIN campaigns c ON c.id = k.campaign_id"
                    " WHERE k.user_id = ?2 AND c.partner_id = ?3 AND k.id > ?4";
  if (q.state) sql += kStateFilter[static_cast<int>(*q.state)];
  sql += " ORDER BY k.id LIMIT ?5";
  std::lock_guard lock(store_.mutex());
  sqlite::Stmt s(store_.db(), sql);
  s.bind(1, now_us).bind(2, std::string_view(q.user_id)).bind(3, partner_id).bind(4, q.after_coupon_id);
  s.bind(5, int64_t{q.limit} + 1);  // one more tells whether a next page exists
  CouponPage page;
  while (s.step()) {
    if (static_cast<int64_t>(page.items.size()) == q.limit) {
      page.next_cursor = page.items.back().id;
      break;
    }
    Coupon c = coupon_from(s);
    c.state = effective_state(c.state, c.valid_until_us, now_us);
    page.items.push_back(std::move(c));
  }
  s.reset();
  return page;
}

CouponCounts SqliteCouponStore::counts(int64_t campaign_id, int64_t now_us) {
  std::lock_guard lock(store_.mutex());
  sqlite::Stmt s(store_.db(),
                 "SELECT"
                 " coalesce(sum(CASE WHEN state = 0 AND (valid_until_us IS NULL OR valid_until_us > ?1) THEN 1 ELSE 0 END), 0),"
                 " coalesce(sum(CASE WHEN state = 1 THEN 1 ELSE 0 END), 0),"
                 " coalesce(sum(CASE WHEN state = 2 OR (state = 0 AND valid_until_us <= ?1) THEN 1 ELSE 0 END), 0),"
                 " count(*) FROM coupons WHERE campaign_id = ?2");
  s.bind(1, now_us).bind(2, campaign_id);
  CouponCounts c;
  if (s.step()) {
    c.issued = s.i64(0);
    c.used = s.i64(1);
    c.expired = s.i64(2);
    c.total = s.i64(3);
  }
  s.reset();
  return c;
}

int64_t SqliteCouponStore::expire_chunk(int64_t now_us, int64_t chunk_rows) {
  std::lock_guard lock(store_.mutex());
  sqlite::Db& db = store_.db();
  sqlite::Tx tx(db);
  sqlite::Stmt s(db,
                 "UPDATE coupons SET state = 2, state_changed_at_us = ?1 WHERE id IN"
                 " (SELECT id FROM coupons WHERE state = 0 AND valid_until_us <= ?1 LIMIT ?2) RETURNING id");
  s.bind(1, now_us).bind(2, chunk_rows);
  std::vector<int64_t> ids;
  while (s.step()) ids.push_back(s.i64(0));
  s.reset();
  if (store_.events()) {
    std::sort(ids.begin(), ids.end());
    for (int64_t id : ids) sqlite_events::write_coupon_events(db, {"coupon.expired"}, id, "");
  }
  tx.commit();
  return static_cast<int64_t>(ids.size());
}

}  // namespace couponcore
