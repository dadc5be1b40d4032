// The coupon lifecycle: what an issued coupon is, and the values of use / cancel / queries /
// expiry. The rules themselves live in cpp/src/coupons/rules.* (shared by both stores).
//
//   issued ──use(order)──► used ──cancel_use(order)──► issued   (or expired, if validity passed)
//   issued ──validity passes──► expired    (read-time check at once; expire_coupons() persists it)
//
// Amounts are integers in minor units (cents), 0..limits::kAmountMax. Times are microseconds
// since the Unix epoch (UTC). A coupon is usable while now_us < valid_until_us (exclusive);
// no valid_until_us means no expiry.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace couponcore {

enum class CouponState : uint8_t { kIssued = 0, kUsed = 1, kExpired = 2 };
const char* coupon_state_name(CouponState s) noexcept;  // "issued", "used", "expired"

struct Coupon {
  int64_t id = 0;  // campaign_id * 2^32 + seq
  int64_t campaign_id = 0;
  uint32_t seq = 0;
  std::string user_id;
  // The state as of the read: an issued coupon past its validity reads as kExpired even
  // before the expiry job has marked it.
  CouponState state = CouponState::kIssued;
  int64_t issued_at_us = 0;
  std::optional<int64_t> valid_until_us;
  // Set while used (cleared again by cancel_use):
  std::optional<std::string> used_order_id;
  std::optional<int64_t> used_at_us;
  std::optional<int64_t> order_amount;
  std::optional<int64_t> discount_amount;
};

struct UseRequest {
  int64_t coupon_id = 0;
  std::string user_id;   // must be the holder
  std::string order_id;  // the idempotency key: a repeat returns the first result
  int64_t order_amount = 0;  // 1..limits::kAmountMax
  std::string traceparent;  // W3C trace context of the call ("" = none); see docs/tracing.md
};

struct UseResult {
  int64_t coupon_id = 0;
  int64_t campaign_id = 0;
  std::string user_id;
  std::string order_id;
  int64_t order_amount = 0;
  int64_t discount_amount = 0;  // 0..order_amount
  int64_t payable_amount = 0;   // order_amount - discount_amount
  int64_t used_at_us = 0;
};

// A user's coupons, ordered by coupon id; keyset pagination: pass next_cursor back as
// after_coupon_id. The cursor is stable: new coupons and state changes never shift a page.
struct CouponQuery {
  std::string user_id;
  std::optional<CouponState> state;  // none: every state
  int64_t after_coupon_id = 0;       // 0: from the start
  int32_t limit = 50;                // 1..limits::kCouponPageMax
};

struct CouponPage {
  std::vector<Coupon> items;
  std::optional<int64_t> next_cursor;  // set when more coupons may follow
};

// A campaign's coupons by state (the read-time expiry rule applies).
struct CouponCounts {
  int64_t issued = 0;
  int64_t used = 0;
  int64_t expired = 0;
  int64_t total = 0;
};

struct ExpireReport {
  int64_t expired = 0;  // coupons marked expired by this call
  int64_t chunks = 0;   // transactions it took
  bool more = false;    // stopped at chunks_max after a full chunk: there may be more to mark
};

}  // namespace couponcore
