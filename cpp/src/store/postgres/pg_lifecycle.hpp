// Everything the production engine needs for the coupon lifecycle, campaign-rule storage,
// partners and authentication on PostgreSQL, in one object, so that wiring it into an engine
// is a member and a handful of one-line forwarders (see EmbeddedEngine for the same shape on
// SQLite):
//
//   PgLifecycle life(postgres_url, {.grant_pending = ..., .auth = ..., .shared_key_cache = ...});
//   life.coupons.use(partner_id, request, now_us());      // CouponService
//   life.partners.authenticate(api_key);                   // auth::PartnerService
//   life.coupon_store.set_campaign_state(...);             // after the Redis gate agreed
//
// The schema comes from couponcore::migrate() (components "coupons" and "auth").
#pragma once

#include <string>

#include "auth/partner_service.hpp"
#include "coupons/coupon_service.hpp"
#include "store/postgres/conn_pool.hpp"
#include "store/postgres/pg_coupons.hpp"
#include "store/postgres/pg_partners.hpp"

namespace couponcore {

struct PgLifecycleOptions {
  std::size_t conns_max = 8;  // the pool for lifecycle calls (1..pg::ConnPool::kConnsMax)
  int64_t acquire_wait_ms = 5000;
  int64_t statement_timeout_ms = 10'000;
  PgCouponStore::Options coupons;          // grant_pending: the engine's view of the grant log
  AuthOptions auth;
  auth::SharedKeyCache* shared_key_cache = nullptr;  // Redis, owned by the engine; may be null
};

class PgLifecycle {
 public:
  PgLifecycle(const std::string& postgres_url, const PgLifecycleOptions& options)
      : pool(postgres_url, options.conns_max, conn_options(options), options.acquire_wait_ms),
        coupon_store(pool, options.coupons),
        partner_store(pool),
        coupons(coupon_store),
        partners(partner_store, options.auth, options.shared_key_cache) {}

  pg::ConnPool pool;
  PgCouponStore coupon_store;
  PgPartnerStore partner_store;
  CouponService coupons;
  auth::PartnerService partners;

 private:
  static pg::ConnOptions conn_options(const PgLifecycleOptions& o) {
    pg::ConnOptions c;
    c.application_name = "couponcore-lifecycle";
    c.statement_timeout_ms = o.statement_timeout_ms;
    return c;
  }
};

}  // namespace couponcore
