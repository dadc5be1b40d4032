// What the coupon service needs from a database: read one coupon with its campaign's terms,
// two conditional updates (use, cancel), the queries, and one expiry chunk. Implemented on
// SQLite (store/sqlite_coupons.cpp) and PostgreSQL (postgres/pg_coupons.cpp). The rules
// (coupons/rules.hpp) and the read-decide-update loop (coupons/coupon_service.cpp) are shared.
#pragma once

#include <cstdint>
#include <optional>
#include <string>

#include "coupons/rules.hpp"
#include "couponcore/coupons.hpp"

namespace couponcore {

class CouponStore {
 public:
  virtual ~CouponStore() = default;

  virtual std::optional<CouponRow> load(int64_t coupon_id) = 0;
  // For a coupon the store does not hold: true if its grant exists but has not reached the
  // store yet (production: still in the grant log), so the caller is told to retry. Must only
  // say true for partner_id's own campaigns.
  virtual bool grant_pending(int64_t partner_id, int64_t coupon_id) = 0;

  // One conditional statement each. mark_used: state issued -> used WHERE still issued, held by
  // request.user_id and valid at now_us. mark_cancelled: used by order_id -> issued (or expired
  // if validity passed at now_us). False when the row no longer matches (a concurrent call won).
  // The change's events carry the call's checked traceparent (request.traceparent, traceparent;
  // "" = none).
  virtual bool mark_used(const UseRequest& request, int64_t discount_amount, int64_t now_us) = 0;
  virtual bool mark_cancelled(int64_t coupon_id, const std::string& order_id, int64_t now_us,
                              const std::string& traceparent) = 0;

  // The owner of a campaign, or nullopt if there is none.
  virtual std::optional<int64_t> campaign_partner(int64_t campaign_id) = 0;
  // A campaign's coupon terms (immutable once created), or nullopt if there is none.
  virtual std::optional<CouponTerms> campaign_terms(int64_t campaign_id) = 0;
  // Queries apply the read-time expiry rule at now_us.
  virtual CouponPage list_for_user(int64_t partner_id, const CouponQuery& query, int64_t now_us) = 0;
  virtual CouponCounts counts(int64_t campaign_id, int64_t now_us) = 0;
  // Marks at most chunk_rows coupons with valid_until_us <= now_us expired, in one short
  // transaction; returns how many.
  virtual int64_t expire_chunk(int64_t now_us, int64_t chunk_rows) = 0;
};

}  // namespace couponcore
