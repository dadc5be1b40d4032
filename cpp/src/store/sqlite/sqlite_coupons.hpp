// The coupon lifecycle on the embedded SQLite store (CouponStore, see coupons/coupon_store.hpp).
// Shares SqliteStore's connection and lock; every call is one short statement (the expiry job:
// one short transaction per chunk, the lock released between chunks so issuance interleaves).
// Schema: migration "coupons" version 2 in sqlite_store.cpp.
#pragma once

#include "coupons/coupon_store.hpp"
#include "store/sqlite/sqlite_store.hpp"

namespace couponcore {

class SqliteCouponStore final : public CouponStore {
 public:
  explicit SqliteCouponStore(SqliteStore& store) : store_(store) {}

  std::optional<CouponRow> load(int64_t coupon_id) override;
  // Embedded: an ISSUED answer is returned only after its grant committed, so a coupon the
  // store does not hold was never issued.
  bool grant_pending(int64_t, int64_t) override { return false; }
  bool mark_used(const UseRequest& request, int64_t discount_amount, int64_t now_us) override;
  bool mark_cancelled(int64_t coupon_id, const std::string& order_id, int64_t now_us,
                      const std::string& traceparent) override;
  std::optional<int64_t> campaign_partner(int64_t campaign_id) override;
  std::optional<CouponTerms> campaign_terms(int64_t campaign_id) override;
  CouponPage list_for_user(int64_t partner_id, const CouponQuery& query, int64_t now_us) override;
  CouponCounts counts(int64_t campaign_id, int64_t now_us) override;
  int64_t expire_chunk(int64_t now_us, int64_t chunk_rows) override;

 private:
  SqliteStore& store_;
};

// The same statements on a connection the caller owns, inside its transaction: a checkout uses
// them from the wallet batch's BEGIN IMMEDIATE (wallet/sqlite_wallet_store.cpp), so a coupon
// used at checkout goes through exactly the conditional updates above.
namespace sqlite_coupons {
std::optional<CouponRow> load(sqlite::Db& db, int64_t coupon_id);
// events: the coupon's event (sqlite_events.hpp) is written with the change, in a savepoint.
bool mark_used(sqlite::Db& db, const UseRequest& request, int64_t discount_amount, int64_t now_us, bool events);
bool mark_cancelled(sqlite::Db& db, int64_t coupon_id, const std::string& order_id, int64_t now_us,
                    const std::string& traceparent, bool events);
}  // namespace sqlite_coupons

}  // namespace couponcore
