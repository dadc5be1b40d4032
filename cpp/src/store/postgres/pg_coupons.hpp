// The coupon lifecycle on PostgreSQL (CouponStore, see coupons/coupon_store.hpp), and the
// store half of the campaign rules for the production engine. Schema: migration "coupons"
// version 2 (postgres/migrations.cpp).
//
// use and cancel are each ONE conditional UPDATE in autocommit (WHERE state = ... re-checks
// what the rules decided on), so two concurrent checkouts of one coupon cannot both win: the
// row lock makes the second UPDATE wait, re-evaluate its WHERE on the new row version, and
// match nothing. The expiry job takes chunk_rows rows per statement with FOR UPDATE SKIP LOCKED:
// a chunk never waits on a checkout that holds a coupon, and each chunk is its own short
// transaction.
//
// Grants still in the grant log: the production engine acknowledges ISSUED before the writer
// has inserted the row, so a missing row is not proof that a coupon does not exist.
// grant_pending() decides: with Options::grant_pending (the engine's view: "is seq <= the gate's
// issued count for this campaign?") it is exact; without it, a missing row of an existing
// campaign of the caller's partner with 1 <= seq <= quantity is reported as pending
// (kUnavailable, "retry"), which may be too cautious but is never a wrong answer.
#pragma once

#include <functional>

#include "coupons/coupon_store.hpp"
#include "couponcore/types.hpp"
#include "store/postgres/conn_pool.hpp"

namespace couponcore {

class PgCouponStore final : public CouponStore {
 public:
  struct Options {
    // True if the gate granted (campaign_id, seq): the row is on its way. Called only for
    // campaigns of the caller's partner. May throw (e.g. kUnavailable when Redis is down).
    std::function<bool(int64_t campaign_id, uint32_t seq)> grant_pending;
    bool events = true;  // write the coupon events with each change (docs/events.md)
  };

  PgCouponStore(pg::ConnPool& pool, Options options) : pool_(pool), options_(std::move(options)) {}

  std::optional<CouponRow> load(int64_t coupon_id) override;
  bool grant_pending(int64_t partner_id, int64_t coupon_id) override;
  bool mark_used(const UseRequest& request, int64_t discount_amount, int64_t now_us) override;
  bool mark_cancelled(int64_t coupon_id, const std::string& order_id, int64_t now_us,
                      const std::string& traceparent) override;
  std::optional<int64_t> campaign_partner(int64_t campaign_id) override;
  std::optional<CouponTerms> campaign_terms(int64_t campaign_id) override;
  CouponPage list_for_user(int64_t partner_id, const CouponQuery& query, int64_t now_us) override;
  CouponCounts counts(int64_t campaign_id, int64_t now_us) override;
  int64_t expire_chunk(int64_t now_us, int64_t chunk_rows) override;

  // The store half of the campaign rules (the Redis gate is the other half). Both are
  // partner-scoped: false when there is no such campaign for partner_id. set_campaign_quantity
  // throws kConflict (nothing changed) below the rows the store holds; the caller must also
  // check the gate's count, which includes grants not yet written.
  bool set_campaign_state(int64_t partner_id, int64_t campaign_id, CampaignState state);
  bool set_campaign_quantity(int64_t partner_id, int64_t campaign_id, int64_t quantity);

  // The same inside a caller's transaction, for an engine that must change the gate between
  // the lock and the commit: the row lock (FOR UPDATE) serialises rule changes of one campaign
  // across processes. nullopt: no such campaign for partner_id.
  struct CampaignRules {
    CampaignState state = CampaignState::kActive;
    int64_t quantity = 0;
    int32_t rate_limit_per_user = 0;
    int32_t rate_limit_per_partner = 0;
    int32_t rate_window_ms = 1000;  // the rate limits: docs/rate-limits.md
    bool operator==(const CampaignRules&) const = default;
  };
  static std::optional<CampaignRules> lock_campaign_rules(pg::Conn& conn, int64_t partner_id, int64_t campaign_id);
  static void write_campaign_rules(pg::Conn& conn, int64_t campaign_id, const CampaignRules& rules);

 private:
  pg::ConnPool& pool_;
  Options options_;
};

// The coupon statements on a connection the caller owns, for a checkout that uses a coupon
// inside the wallet batch's transaction (wallet/pg_wallet_store.cpp): the same SQL as the
// store's own use and cancel, so both paths apply the same conditional updates.
namespace pgcoupons {
// "SELECT <CouponRow columns> FROM coupons k JOIN campaigns c ..."; append a WHERE (and a lock).
extern const char* const kLoadSql;
// The conditional UPDATEs, one statement each, answering one row: the rows changed (changed()).
// events: the statement also writes the coupon's events (events/event_sql.hpp) after the change.
const std::string& mark_used_sql(bool events);       // parameters: mark_used_params
const std::string& mark_cancelled_sql(bool events);  // parameters: mark_cancelled_params
int64_t changed(const pg::Result& r);
std::string with_events(const char* tp_param, const char* update, std::initializer_list<std::string_view> types,
                        bool events);
CouponRow row_from(const pg::Result& r, int row);
pg::Params mark_used_params(const UseRequest& request, int64_t discount_amount, int64_t now_us);
pg::Params mark_cancelled_params(int64_t coupon_id, const std::string& order_id, int64_t now_us,
                                 const std::string& traceparent);
// Without the gate's view: a missing row of an existing campaign (of the caller's partner) with
// 1 <= seq <= quantity may still be in the grant log (too cautious at worst, never wrong).
inline bool grant_may_be_pending(uint32_t seq, int64_t quantity) { return seq >= 1 && seq <= quantity; }
}  // namespace pgcoupons

}  // namespace couponcore
