// The coupon lifecycle below the engine, embedded side: discount math (pure functions), a cancel
// after the validity passed driven through the SQLite store with an explicit clock (the engine
// uses the system clock), and the upgrade of an old SQLite file. These use store-level internals,
// so they stay out of the shared suite.
// Use / cancel / idempotency, concurrent uses, expiry, queries and campaign rules through the
// Engine API run on both deployments in engine_behaviour_test.cpp. PostgreSQL store:
// pg_lifecycle_test.cpp.
#include <gtest/gtest.h>

#include <functional>

#include "coupons/coupon_service.hpp"
#include "coupons/rules.hpp"
#include "couponcore/engine.hpp"
#include "couponcore/error.hpp"
#include "couponcore/limits.hpp"
#include "store/sqlite/sqlite.hpp"
#include "store/sqlite/sqlite_coupons.hpp"
#include "test_util.hpp"

using namespace couponcore;

namespace {

constexpr int64_t kHourUs = 3'600'000'000;
constexpr int64_t kDayUs = 24 * kHourUs;

using testutil::code_of;

// ---- discount math ---------------------------------------------------------------------------

TEST(DiscountMath, FixedPercentCapAndNeverAboveTheOrder) {
  CouponTerms t;
  EXPECT_EQ(discount_for(t, 5000), 0);  // no discount kind
  t.discount_kind = DiscountKind::kFixed;
  t.discount_value = 3000;
  EXPECT_EQ(discount_for(t, 10'000), 3000);
  EXPECT_EQ(discount_for(t, 2000), 2000);  // never more than the order
  t.discount_kind = DiscountKind::kPercent;
  t.discount_value = 15;
  EXPECT_EQ(discount_for(t, 10'000), 1500);
  EXPECT_EQ(discount_for(t, 999), 149);  // 149.85 rounded down
  t.discount_max = 1000;
  EXPECT_EQ(discount_for(t, 10'000), 1000);  // capped
  EXPECT_EQ(discount_for(t, 5000), 750);     // under the cap
  t.discount_value = 100;
  t.discount_max.reset();
  EXPECT_EQ(discount_for(t, 4321), 4321);
  EXPECT_EQ(discount_for(t, limits::kAmountMax), limits::kAmountMax);  // no overflow at the limit
}

TEST(DiscountMath, ValidityFromAbsoluteOrRelativeRule) {
  CouponTerms t;
  EXPECT_FALSE(coupon_valid_until_us(t, 1000).has_value());
  t.valid_days = 7;
  EXPECT_EQ(coupon_valid_until_us(t, 1000), 1000 + 7 * kDayUs);
  t.valid_days.reset();
  t.valid_until_us = 555;
  EXPECT_EQ(coupon_valid_until_us(t, 1000), 555);
  EXPECT_EQ(effective_state(CouponState::kIssued, 555, 554), CouponState::kIssued);
  EXPECT_EQ(effective_state(CouponState::kIssued, 555, 555), CouponState::kExpired);  // exclusive
  EXPECT_EQ(effective_state(CouponState::kUsed, 555, 999), CouponState::kUsed);
}

// ---- expiry with an explicit clock ----------------------------------------------------------

// Cancel after the validity passed: the use is undone, the coupon comes back expired. The store
// is driven with an explicit clock here (the engine uses the system clock).
TEST(LifecycleClock, CancelAfterValidityPassedGivesExpired) {
  std::string path = testutil::temp_path("lifecycle-clock") + ".db";
  {
    SqliteStore store(path, false);
    SqliteCouponStore coupons(store);
    CouponService svc(coupons);
    CampaignSpec s;
    s.name = "c";
    s.quantity = 5;
    s.valid_days = 1;
    const int64_t t0 = 1'700'000'000'000'000;
    Campaign c = store.insert_campaign(s, t0);
    store.write_grants({Grant{c.id, 1, "kim", 1, "", t0}});
    const int64_t id = make_coupon_id(c.id, 1);
    EXPECT_EQ(svc.use(0, {id, "kim", "o", 100}, t0 + kHourUs).discount_amount, 0);
    Coupon k = svc.cancel_use(0, id, "o", t0 + 2 * kDayUs);
    EXPECT_EQ(k.state, CouponState::kExpired);
    EXPECT_EQ(svc.cancel_use(0, id, "o", t0 + 2 * kDayUs).state, CouponState::kExpired);  // repeat
    EXPECT_EQ(code_of([&] { svc.use(0, {id, "kim", "o2", 100}, t0 + 2 * kDayUs); }), ErrorCode::kConflict);
    EXPECT_EQ(svc.get(0, id, t0 + kHourUs).state, CouponState::kExpired);  // stored as expired now
  }
  testutil::remove_db(path);
}

}  // namespace

namespace {

// A file written before the lifecycle existed ("coupons" version 1 only) is upgraded on open:
// its coupons become issued, with the validity their campaign's rule gives them.
TEST(LifecycleMigration, VersionOneFilesAreUpgradedWithTheirValidity) {
  const std::string path = testutil::temp_path("lifecycle-v1") + ".db";
  const int64_t issued_at = 1'700'000'000'000'000;
  {
    sqlite::Db db(path, false);
    db.migrate({{"coupons", 1,
                 "CREATE TABLE campaigns (id INTEGER PRIMARY KEY, partner_id INTEGER NOT NULL DEFAULT 0,"
                 " name TEXT NOT NULL, quantity INTEGER NOT NULL, per_user_limit INTEGER NOT NULL,"
                 " starts_at_us INTEGER, ends_at_us INTEGER, state INTEGER NOT NULL DEFAULT 0,"
                 " discount_kind INTEGER NOT NULL DEFAULT 0, discount_value INTEGER NOT NULL DEFAULT 0,"
                 " discount_max INTEGER, min_order_amount INTEGER NOT NULL DEFAULT 0, valid_until_us INTEGER,"
                 " valid_days INTEGER, created_at_us INTEGER NOT NULL);"
                 "CREATE TABLE coupons (id INTEGER PRIMARY KEY, campaign_id INTEGER NOT NULL, seq INTEGER NOT NULL,"
                 " user_id TEXT NOT NULL, user_ordinal INTEGER NOT NULL, request_id TEXT,"
                 " issued_at_us INTEGER NOT NULL, UNIQUE (campaign_id, seq));"}});
    db.exec("INSERT INTO campaigns (id, name, quantity, per_user_limit, valid_days, created_at_us)"
            " VALUES (1, 'old', 5, 1, 2, 0), (2, 'forever', 5, 1, NULL, 0)");
    const std::string insert = "INSERT INTO coupons VALUES (" + std::to_string(make_coupon_id(1, 1)) +
                               ", 1, 1, 'u', 1, NULL, " + std::to_string(issued_at) + "), (" +
                               std::to_string(make_coupon_id(2, 1)) + ", 2, 1, 'u', 1, NULL, " +
                               std::to_string(issued_at) + ")";
    db.exec(insert.c_str());
  }
  {
    auto e = open_embedded(EmbeddedOptions{path, false, {}});
    Coupon a = e->get_coupon(0, make_coupon_id(1, 1));
    EXPECT_EQ(a.valid_until_us, issued_at + 2 * kDayUs);
    EXPECT_EQ(a.state, CouponState::kExpired);  // 2023 + 2 days is long past
    Coupon b = e->get_coupon(0, make_coupon_id(2, 1));
    EXPECT_FALSE(b.valid_until_us.has_value());
    EXPECT_EQ(b.state, CouponState::kIssued);
    EXPECT_EQ(e->use_coupon(0, {b.id, "u", "o", 100}).discount_amount, 0);
  }
  testutil::remove_db(path);
}

}  // namespace
