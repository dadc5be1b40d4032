// The coupon lifecycle rules; see rules.hpp.
#include "coupons/rules.hpp"

#include <algorithm>
#include <cassert>

#include "couponcore/error.hpp"
#include "couponcore/limits.hpp"

namespace couponcore {

namespace {
constexpr int64_t kUsPerDay = 86'400'000'000;
}  // namespace

CouponTerms terms_of(const CampaignSpec& spec) {
  CouponTerms t;
  t.partner_id = spec.partner_id;
  t.discount_kind = spec.discount_kind;
  t.discount_value = spec.discount_value;
  t.discount_max = spec.discount_max;
  t.min_order_amount = spec.min_order_amount;
  t.valid_until_us = spec.valid_until_us;
  t.valid_days = spec.valid_days;
  return t;
}

int64_t discount_for(const CouponTerms& t, int64_t order_amount) {
  assert(order_amount >= 0 && order_amount <= limits::kAmountMax);
  int64_t discount = 0;
  switch (t.discount_kind) {
    case DiscountKind::kNone:
      break;
    case DiscountKind::kFixed:
      discount = t.discount_value;
      break;
    case DiscountKind::kPercent:
      // order <= 10^12 and percent <= 100: the product stays below 2^63. Rounded down, in the
      // merchant's favour, like the major platforms.
      assert(t.discount_value >= 0 && t.discount_value <= 100);
      discount = order_amount * t.discount_value / 100;
      if (t.discount_max) discount = std::min(discount, *t.discount_max);
      break;
  }
  return std::clamp<int64_t>(discount, 0, order_amount);
}

std::optional<int64_t> coupon_valid_until_us(const CouponTerms& t, int64_t issued_at_us) {
  if (t.valid_until_us) return t.valid_until_us;
  if (t.valid_days) return issued_at_us + int64_t{*t.valid_days} * kUsPerDay;
  return std::nullopt;
}

CouponState effective_state(CouponState stored, const std::optional<int64_t>& valid_until_us, int64_t now_us) {
  if (stored == CouponState::kIssued && validity_passed(valid_until_us, now_us)) return CouponState::kExpired;
  return stored;
}

Coupon visible_coupon(const CouponRow& row, int64_t now_us) {
  Coupon c = row.coupon;
  c.state = effective_state(c.state, c.valid_until_us, now_us);
  return c;
}

void throw_coupon_not_found(int64_t coupon_id) {
  throw_not_found("coupon " + std::to_string(coupon_id) + " not found");
}

void throw_coupon_pending(int64_t coupon_id) {
  throw_unavailable("coupon " + std::to_string(coupon_id) +
                    " is not yet usable: its grant is still on its way to the store; retry shortly");
}

UseResult use_result_of(const Coupon& c) {
  assert(c.state == CouponState::kUsed && c.used_order_id && c.order_amount && c.discount_amount && c.used_at_us);
  UseResult r;
  r.coupon_id = c.id;
  r.campaign_id = c.campaign_id;
  r.user_id = c.user_id;
  r.order_id = *c.used_order_id;
  r.order_amount = *c.order_amount;
  r.discount_amount = *c.discount_amount;
  r.payable_amount = r.order_amount - r.discount_amount;
  r.used_at_us = *c.used_at_us;
  return r;
}

UseDecision decide_use(const CouponRow& row, int64_t partner_id, const UseRequest& req, int64_t now_us) {
  const Coupon& c = row.coupon;
  if (row.terms.partner_id != partner_id || c.user_id != req.user_id) throw_coupon_not_found(c.id);
  UseDecision d;
  if (c.state == CouponState::kUsed) {
    if (c.used_order_id != req.order_id) {
      throw_conflict("coupon " + std::to_string(c.id) + " is already used by another order");
    }
    if (c.order_amount != req.order_amount) {
      throw_conflict("coupon " + std::to_string(c.id) + " was used by order " + req.order_id +
                     " with order_amount " + std::to_string(c.order_amount.value_or(0)) +
                     "; a repeat must carry the same amount");
    }
    d.decision = Decision::kReplay;
    d.replay = use_result_of(c);
    return d;
  }
  if (c.state == CouponState::kExpired || validity_passed(c.valid_until_us, now_us)) {
    throw_conflict("coupon " + std::to_string(c.id) + " has expired");
  }
  if (req.order_amount < row.terms.min_order_amount) {
    throw_invalid("order_amount " + std::to_string(req.order_amount) + " is below the campaign's minimum order of " +
                  std::to_string(row.terms.min_order_amount));
  }
  d.discount_amount = discount_for(row.terms, req.order_amount);
  return d;
}

CancelDecision decide_cancel(const CouponRow& row, int64_t partner_id, const std::string& order_id, int64_t now_us) {
  const Coupon& c = row.coupon;
  if (row.terms.partner_id != partner_id) throw_coupon_not_found(c.id);
  CancelDecision d;
  if (c.state == CouponState::kUsed && c.used_order_id == order_id) {
    d.new_state = validity_passed(c.valid_until_us, now_us) ? CouponState::kExpired : CouponState::kIssued;
    return d;
  }
  if (row.cancelled_order_id == order_id) {
    d.decision = Decision::kReplay;  // this order's use was cancelled already
    return d;
  }
  if (c.state == CouponState::kUsed) {
    throw_conflict("coupon " + std::to_string(c.id) + " is used by another order");
  }
  throw_conflict("coupon " + std::to_string(c.id) + " is not used by order " + order_id);
}

}  // namespace couponcore
