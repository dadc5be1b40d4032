// The coupon lifecycle rules, as pure functions both stores (SQLite, PostgreSQL) apply, so the
// two deployments give the same answers:
//
//   discount_for(terms, order_amount)      fixed: min(value, order); percent: floor(order * p /
//                                          100), capped by discount_max; never above the order
//   coupon_valid_until_us(terms, issued)   valid_until, or issued + valid_days; none = no expiry
//   effective_state(stored, valid_until, now)   the read-time expiry check
//   decide_use(row, request, now)          owner / state / validity / minimum order -> proceed
//                                          with a discount, or replay the first result, or throw
//   decide_cancel(row, order_id, now)      -> proceed to issued/expired, or replay, or throw
//
// A store loads a CouponRow, asks decide_*, and on kProceed runs ONE conditional UPDATE that
// re-checks the state it decided on (WHERE state = ...). If the UPDATE matches nothing, a
// concurrent call won; the store re-reads and decides again, which then yields the replay (same
// order) or kConflict. So a coupon is never used twice, whatever the interleaving.
#pragma once

#include <cstdint>
#include <optional>
#include <string>

#include "couponcore/coupons.hpp"
#include "couponcore/types.hpp"

namespace couponcore {

// The campaign terms that govern its coupons (immutable after creation).
struct CouponTerms {
  int64_t partner_id = 0;
  DiscountKind discount_kind = DiscountKind::kNone;
  int64_t discount_value = 0;
  std::optional<int64_t> discount_max;
  int64_t min_order_amount = 0;
  std::optional<int64_t> valid_until_us;
  std::optional<int32_t> valid_days;
};

CouponTerms terms_of(const CampaignSpec& spec);

int64_t discount_for(const CouponTerms& terms, int64_t order_amount);
std::optional<int64_t> coupon_valid_until_us(const CouponTerms& terms, int64_t issued_at_us);
inline std::optional<int64_t> coupon_valid_until_us(std::optional<int64_t> valid_until_us,
                                                    std::optional<int32_t> valid_days, int64_t issued_at_us) {
  CouponTerms t;
  t.valid_until_us = valid_until_us;
  t.valid_days = valid_days;
  return coupon_valid_until_us(t, issued_at_us);
}
inline bool validity_passed(const std::optional<int64_t>& valid_until_us, int64_t now_us) {
  return valid_until_us && *valid_until_us <= now_us;
}
CouponState effective_state(CouponState stored, const std::optional<int64_t>& valid_until_us, int64_t now_us);

// One coupon as a store reads it: the coupon as stored (state not yet adjusted for expiry), its
// campaign's terms, and the order whose use was last cancelled (for idempotent cancels).
struct CouponRow {
  Coupon coupon;
  CouponTerms terms;
  std::optional<std::string> cancelled_order_id;
};

// The coupon as callers see it (read-time expiry applied).
Coupon visible_coupon(const CouponRow& row, int64_t now_us);

enum class Decision { kProceed, kReplay };

struct UseDecision {
  Decision decision = Decision::kProceed;
  int64_t discount_amount = 0;  // kProceed
  UseResult replay;             // kReplay: the first result
};
// Throws: kNotFound (another partner's, another user's), kConflict (used by another order; same
// order with another amount; expired), kInvalidArgument (below the minimum order).
UseDecision decide_use(const CouponRow& row, int64_t partner_id, const UseRequest& request, int64_t now_us);
UseResult use_result_of(const Coupon& used);

struct CancelDecision {
  Decision decision = Decision::kProceed;
  CouponState new_state = CouponState::kIssued;  // kProceed: issued, or expired if validity passed
};
// Throws kNotFound (another partner's) or kConflict (not used by this order, nor cancelled by it).
CancelDecision decide_cancel(const CouponRow& row, int64_t partner_id, const std::string& order_id, int64_t now_us);

// The one message for an unknown coupon, another partner's and another user's.
[[noreturn]] void throw_coupon_not_found(int64_t coupon_id);
// For coupons the store does not hold yet although their grant exists (production: the grant
// is still in the grant log): kUnavailable, "not yet usable, retry".
[[noreturn]] void throw_coupon_pending(int64_t coupon_id);

inline int64_t campaign_of_coupon(int64_t coupon_id) { return coupon_id >> 32; }
inline uint32_t seq_of_coupon(int64_t coupon_id) { return static_cast<uint32_t>(coupon_id & 0xffffffff); }

}  // namespace couponcore
