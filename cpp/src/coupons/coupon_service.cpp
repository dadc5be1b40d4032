// The coupon lifecycle over a CouponStore; see coupon_service.hpp and coupons/rules.hpp.
#include "coupons/coupon_service.hpp"

#include "couponcore/error.hpp"
#include "couponcore/limits.hpp"

namespace couponcore {

namespace {

// Each lost race means another call changed the coupon; after it the state is used (or
// cancelled back), so a second decision settles it. Bounded so a pathological ping-pong of
// use/cancel cannot spin us.
constexpr int kRaceAttemptsMax = 4;

void check_coupon_id(int64_t coupon_id) {
  if (coupon_id <= 0 || seq_of_coupon(coupon_id) == 0 || campaign_of_coupon(coupon_id) > limits::kCampaignIdMax) {
    throw_invalid("coupon_id " + std::to_string(coupon_id) + " is not a coupon id");
  }
}

void check_campaign_id(int64_t campaign_id) {
  if (campaign_id <= 0 || campaign_id > limits::kCampaignIdMax) {
    throw_invalid("campaign_id " + std::to_string(campaign_id) + " is not a campaign id");
  }
}

}  // namespace

void check_use_request(const UseRequest& r) {
  check_coupon_id(r.coupon_id);
  limits::check_user_id(r.user_id);
  limits::check_order_id(r.order_id);
  if (r.order_amount <= 0 || r.order_amount > limits::kAmountMax) {
    throw_invalid("order_amount must be 1.." + std::to_string(limits::kAmountMax) + " (minor units), got " +
                  std::to_string(r.order_amount));
  }
}

void check_coupon_query(const CouponQuery& q) {
  limits::check_user_id(q.user_id);
  if (q.limit < 1 || q.limit > limits::kCouponPageMax) {
    throw_invalid("limit must be 1.." + std::to_string(limits::kCouponPageMax) + ", got " + std::to_string(q.limit));
  }
  if (q.after_coupon_id < 0) throw_invalid("cursor must not be negative");
}

CouponRow CouponService::load_visible(int64_t partner_id, int64_t coupon_id) {
  std::optional<CouponRow> row = store_.load(coupon_id);
  if (!row) {
    if (store_.grant_pending(partner_id, coupon_id)) throw_coupon_pending(coupon_id);
    throw_coupon_not_found(coupon_id);
  }
  if (row->terms.partner_id != partner_id) throw_coupon_not_found(coupon_id);
  return std::move(*row);
}

std::optional<CouponTerms> CouponService::terms(int64_t campaign_id) {
  {
    std::lock_guard lock(terms_mu_);
    if (auto it = terms_.find(campaign_id); it != terms_.end()) return it->second;
  }
  std::optional<CouponTerms> t = store_.campaign_terms(campaign_id);
  if (!t) return std::nullopt;  // not cached: the campaign may be created later
  std::lock_guard lock(terms_mu_);
  if (terms_.size() >= kTermsCachedMax) terms_.clear();
  terms_.emplace(campaign_id, *t);
  return t;
}

UseResult CouponService::use(int64_t partner_id, const UseRequest& request, int64_t now_us) {
  check_use_request(request);
  UseResult r;
  r.coupon_id = request.coupon_id;
  r.campaign_id = campaign_of_coupon(request.coupon_id);
  r.user_id = request.user_id;
  r.order_id = request.order_id;
  r.order_amount = request.order_amount;
  r.used_at_us = now_us;
  // The one-statement path: the same decision as decide_use's "proceed", with the coupon's own
  // conditions checked by the UPDATE's WHERE.
  std::optional<CouponTerms> t = terms(r.campaign_id);
  if (t && t->partner_id == partner_id && request.order_amount >= t->min_order_amount) {
    r.discount_amount = discount_for(*t, request.order_amount);
    r.payable_amount = request.order_amount - r.discount_amount;
    if (store_.mark_used(request, r.discount_amount, now_us)) return r;
  }
  for (int attempt = 0; attempt < kRaceAttemptsMax; ++attempt) {
    CouponRow row = load_visible(partner_id, request.coupon_id);
    UseDecision d = decide_use(row, partner_id, request, now_us);
    if (d.decision == Decision::kReplay) return d.replay;
    if (store_.mark_used(request, d.discount_amount, now_us)) {
      r.discount_amount = d.discount_amount;
      r.payable_amount = request.order_amount - d.discount_amount;
      return r;
    }
  }
  throw_conflict("coupon " + std::to_string(request.coupon_id) + " changed concurrently; retry");
}

Coupon CouponService::cancel_use(int64_t partner_id, int64_t coupon_id, const std::string& order_id, int64_t now_us,
                                 const std::string& traceparent) {
  check_coupon_id(coupon_id);
  limits::check_order_id(order_id);
  for (int attempt = 0; attempt < kRaceAttemptsMax; ++attempt) {
    CouponRow row = load_visible(partner_id, coupon_id);
    CancelDecision d = decide_cancel(row, partner_id, order_id, now_us);
    if (d.decision == Decision::kReplay) return visible_coupon(row, now_us);
    if (store_.mark_cancelled(coupon_id, order_id, now_us, traceparent)) {
      return visible_coupon(load_visible(partner_id, coupon_id), now_us);
    }
  }
  throw_conflict("coupon " + std::to_string(coupon_id) + " changed concurrently; retry");
}

Coupon CouponService::get(int64_t partner_id, int64_t coupon_id, int64_t now_us) {
  check_coupon_id(coupon_id);
  return visible_coupon(load_visible(partner_id, coupon_id), now_us);
}

CouponPage CouponService::list_for_user(int64_t partner_id, const CouponQuery& query, int64_t now_us) {
  check_coupon_query(query);
  return store_.list_for_user(partner_id, query, now_us);
}

CouponCounts CouponService::counts(int64_t partner_id, int64_t campaign_id, int64_t now_us) {
  check_campaign_id(campaign_id);
  std::optional<int64_t> owner = store_.campaign_partner(campaign_id);
  if (!owner || *owner != partner_id) throw_not_found("campaign " + std::to_string(campaign_id) + " not found");
  return store_.counts(campaign_id, now_us);
}

ExpireReport CouponService::expire(int64_t now_us, int64_t chunk_rows, int64_t chunks_max) {
  if (chunk_rows < 1 || chunk_rows > limits::kExpireChunkRowsMax) {
    throw_invalid("chunk_rows must be 1.." + std::to_string(limits::kExpireChunkRowsMax));
  }
  if (chunks_max < 1 || chunks_max > limits::kExpireChunksMax) {
    throw_invalid("chunks_max must be 1.." + std::to_string(limits::kExpireChunksMax));
  }
  if (now_us < 0) throw_invalid("now must not be before 1970");
  ExpireReport report;
  while (report.chunks < chunks_max) {
    const int64_t n = store_.expire_chunk(now_us, chunk_rows);
    ++report.chunks;
    report.expired += n;
    if (n < chunk_rows) return report;
  }
  report.more = true;  // the last chunk was full: there may be more
  return report;
}

}  // namespace couponcore
