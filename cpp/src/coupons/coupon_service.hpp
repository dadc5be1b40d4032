// The coupon lifecycle over a CouponStore, shared by both deployments: input checks (limits,
// typed errors, nothing changed), partner scoping, and the read-decide-update loop of
// coupons/rules.hpp. Thread-safe if the store is.
//
// use() tries the one-statement path first: a campaign's terms never change, so they are cached
// here (bounded), and with them the discount is known before the coupon is read. The
// conditional UPDATE itself checks state, owner and validity; if it matches, the use is done in
// one round trip. If not (used, another user's, expired, unknown, a repeat), the full
// read-decide-update loop gives the exact answer. Both paths apply the same rules.
//
//   use / cancel_use / get / list_for_user / counts     partner-scoped (kNotFound otherwise)
//   expire(now_us, chunk_rows, chunks_max)              the expiry job, all partners
#pragma once

#include <cstdint>
#include <mutex>
#include <optional>
#include <string>
#include <unordered_map>

#include "coupons/coupon_store.hpp"

namespace couponcore {

class CouponService {
 public:
  explicit CouponService(CouponStore& store) : store_(store) {}

  UseResult use(int64_t partner_id, const UseRequest& request, int64_t now_us);
  Coupon cancel_use(int64_t partner_id, int64_t coupon_id, const std::string& order_id, int64_t now_us,
                    const std::string& traceparent = {});
  Coupon get(int64_t partner_id, int64_t coupon_id, int64_t now_us);
  CouponPage list_for_user(int64_t partner_id, const CouponQuery& query, int64_t now_us);
  CouponCounts counts(int64_t partner_id, int64_t campaign_id, int64_t now_us);
  ExpireReport expire(int64_t now_us, int64_t chunk_rows, int64_t chunks_max);

 private:
  CouponRow load_visible(int64_t partner_id, int64_t coupon_id);
  std::optional<CouponTerms> terms(int64_t campaign_id);

  static constexpr std::size_t kTermsCachedMax = 10'000;  // campaigns; cleared wholesale when full

  CouponStore& store_;
  std::mutex terms_mu_;
  std::unordered_map<int64_t, CouponTerms> terms_;  // only campaigns that exist: immutable
};

void check_use_request(const UseRequest& request);
void check_coupon_query(const CouponQuery& query);

}  // namespace couponcore
