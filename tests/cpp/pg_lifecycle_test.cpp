// The coupon lifecycle, campaign-rule storage, partners and authentication on PostgreSQL
// (postgres/pg_lifecycle.hpp), against a real server: the same rules as the embedded engine,
// plus what only PostgreSQL has -- many connections racing for one coupon, the expiry job
// skipping rows a checkout holds, the validity the writer's insert fixes for each grant, grants
// not yet written (kUnavailable, never a wrong answer). Campaigns and grants are inserted with
// SQL here, as the production engine's writer would.
//
// The server comes from COUPONCORE_TEST_POSTGRES_URL (or a throwaway database through
// COUPONCORE_TEST_POSTGRES_ADMIN_URL); unreachable -> the tests fail, never skip.
#include <gtest/gtest.h>

#include <atomic>
#include <thread>

#include "couponcore/error.hpp"
#include "couponcore/limits.hpp"
#include "store/postgres/coupon_store.hpp"
#include "store/postgres/pg_lifecycle.hpp"
#include "production_test_util.hpp"

using namespace couponcore;

namespace {

constexpr int64_t kDayUs = 86'400'000'000;

using testutil::code_of;

std::string unique(const std::string& stem) {
  static std::atomic<int> n{0};
  return stem + "-" + std::to_string(::getpid()) + "-" + std::to_string(now_us() % 1'000'000'000) + "-" +
         std::to_string(n++);
}

class PgLifecycleTest : public ::testing::Test {
 protected:
  void SetUp() override {
    url_ = testutil::postgres_url();
    conn_ = std::make_unique<pg::Conn>(url_);
    life_ = make_life();
  }
  std::unique_ptr<PgLifecycle> make_life(PgLifecycleOptions o = {}) { return std::make_unique<PgLifecycle>(url_, o); }

  int64_t campaign(int64_t partner_id, int64_t quantity, DiscountKind kind = DiscountKind::kFixed, int64_t value = 1000,
                   std::optional<int64_t> max = std::nullopt, int64_t min_order = 0,
                   std::optional<int64_t> valid_until = std::nullopt, std::optional<int64_t> valid_days = std::nullopt) {
    pg::Result r = conn_->exec(
        "INSERT INTO campaigns (partner_id, name, quantity, per_user_limit, discount_kind, discount_value,"
        " discount_max, min_order_amount, valid_until_us, valid_days, created_at_us)"
        " VALUES ($1, 'pg lifecycle', $2, 1, $3, $4, $5, $6, $7, $8, $9) RETURNING id",
        pg::Params().add(partner_id).add(quantity).add(static_cast<int64_t>(kind)).add(value).add(max).add(min_order)
            .add(valid_until).add(valid_days).add(now_us()));
    return r.i64(0, 0);
  }
  // What the writer does for one grant: the production insert (pgstore::write_grants).
  int64_t grant(int64_t campaign_id, uint32_t seq, const std::string& user, int64_t issued_at_us = 0) {
    if (issued_at_us == 0) issued_at_us = now_us();
    pgstore::WriteOutcome w = pgstore::write_grants(*conn_, {Grant{campaign_id, seq, user, 1, "", issued_at_us}});
    EXPECT_EQ(w.inserted, 1);
    EXPECT_TRUE(w.failed.empty());
    return make_coupon_id(campaign_id, seq);
  }
  UseResult use(int64_t partner, int64_t coupon, const std::string& user, const std::string& order, int64_t amount,
                int64_t now = 0) {
    return life_->coupons.use(partner, {coupon, user, order, amount}, now ? now : now_us());
  }

  std::string url_;
  std::unique_ptr<pg::Conn> conn_;
  std::unique_ptr<PgLifecycle> life_;
};

TEST_F(PgLifecycleTest, UseCancelRepeatAndDiscount) {
  int64_t c = campaign(0, 10, DiscountKind::kPercent, 10, /*max=*/5000, /*min_order=*/1000);
  const std::string user = unique("u");
  int64_t id = grant(c, 1, user);
  EXPECT_EQ(code_of([&] { use(0, id, user, "o1", 999); }), ErrorCode::kInvalidArgument);  // below minimum
  EXPECT_EQ(code_of([&] { use(0, id, "someone-else", "o1", 5000); }), ErrorCode::kNotFound);
  UseResult r = use(0, id, user, "o1", 80'000);
  EXPECT_EQ(r.discount_amount, 5000);
  EXPECT_EQ(r.payable_amount, 75'000);
  UseResult again = use(0, id, user, "o1", 80'000);
  EXPECT_EQ(again.used_at_us, r.used_at_us);
  EXPECT_EQ(code_of([&] { use(0, id, user, "o1", 70'000); }), ErrorCode::kConflict);
  EXPECT_EQ(code_of([&] { use(0, id, user, "o2", 80'000); }), ErrorCode::kConflict);
  Coupon k = life_->coupons.get(0, id, now_us());
  EXPECT_EQ(k.state, CouponState::kUsed);
  EXPECT_EQ(k.used_order_id, "o1");
  EXPECT_EQ(life_->coupons.cancel_use(0, id, "o1", now_us()).state, CouponState::kIssued);
  EXPECT_EQ(life_->coupons.cancel_use(0, id, "o1", now_us()).state, CouponState::kIssued);  // repeat
  EXPECT_EQ(code_of([&] { life_->coupons.cancel_use(0, id, "o9", now_us()); }), ErrorCode::kConflict);
  EXPECT_EQ(use(0, id, user, "o2", 2000).discount_amount, 200);
}

// Many connections (two "processes", each with its own pool) race for one coupon.
TEST_F(PgLifecycleTest, ManyConnectionsUseOneCouponExactlyOneWins) {
  PgLifecycleOptions o;
  o.conns_max = 8;
  auto other = make_life(o);
  auto mine = make_life(o);
  int64_t c = campaign(0, 5);
  const std::string user = unique("race");
  int64_t id = grant(c, 1, user);
  constexpr int kThreads = 32;
  std::atomic<int> wins{0}, conflicts{0}, other_errors{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      PgLifecycle& l = (t % 2) ? *other : *mine;
      try {
        l.coupons.use(0, {id, user, "order-" + std::to_string(t), 5000}, now_us());
        wins++;
      } catch (const Error& e) {
        (e.code() == ErrorCode::kConflict ? conflicts : other_errors)++;
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(wins.load(), 1);
  EXPECT_EQ(conflicts.load(), kThreads - 1);
  EXPECT_EQ(other_errors.load(), 0);
  EXPECT_EQ(conn_->exec("SELECT count(*) FROM coupons WHERE id = $1 AND state = 1", pg::Params().add(id)).i64(0, 0), 1);
}

TEST_F(PgLifecycleTest, ValidityIsFixedAtIssueByTheWriter) {
  const int64_t issued = 1'700'000'000'000'000;
  int64_t rel = campaign(0, 5, DiscountKind::kFixed, 100, std::nullopt, 0, std::nullopt, 7);
  int64_t abs = campaign(0, 5, DiscountKind::kFixed, 100, std::nullopt, 0, issued + 5);
  int64_t none = campaign(0, 5);
  const std::string user = unique("v");
  Coupon a = life_->coupons.get(0, grant(rel, 1, user, issued), issued);
  Coupon b = life_->coupons.get(0, grant(abs, 1, user, issued), issued);
  Coupon n = life_->coupons.get(0, grant(none, 1, user, issued), issued);
  EXPECT_EQ(a.valid_until_us, issued + 7 * kDayUs);
  EXPECT_EQ(b.valid_until_us, issued + 5);
  EXPECT_FALSE(n.valid_until_us.has_value());
  // A redelivered grant finds its row (the validity is part of nothing the writer compares).
  EXPECT_EQ(pgstore::write_grants(*conn_, {Grant{rel, 1, user, 1, "", issued}}).already_present, 1);
  // The read-time check: past its validity, an issued coupon reads expired and cannot be used.
  EXPECT_EQ(life_->coupons.get(0, b.id, issued + 5).state, CouponState::kExpired);
  EXPECT_EQ(code_of([&] { use(0, b.id, user, "o", 500, issued + 5); }), ErrorCode::kConflict);
  // Cancel after the validity passed: back to expired, not issued.
  use(0, a.id, user, "o", 500, issued + kDayUs);
  EXPECT_EQ(life_->coupons.cancel_use(0, a.id, "o", issued + 8 * kDayUs).state, CouponState::kExpired);
}

// The writer's insert takes COPY for a fresh batch and the set-based INSERT ... ON CONFLICT for a
// batch COPY refuses (a redelivery, a conflict, an unknown campaign): the outcome and the rows
// must not depend on which path wrote them.
TEST_F(PgLifecycleTest, WriteGrantsGivesTheSameRowsAndCountsOnEitherPath) {
  const int64_t issued = 1'700'000'000'000'000;
  const int64_t rel = campaign(0, 1000, DiscountKind::kFixed, 100, std::nullopt, 0, std::nullopt, 3);
  const int64_t none = campaign(0, 1000);
  const std::string u = unique("wg");
  auto batch = [&](uint32_t from, uint32_t to) {
    std::vector<Grant> g;
    for (uint32_t s = from; s <= to; ++s) {
      g.push_back(Grant{s % 2 ? rel : none, s, u + "-" + std::to_string(s), 1, s % 3 ? "" : "r-" + std::to_string(s),
                        issued + s});
    }
    return g;
  };
  auto check_rows = [&](uint32_t to) {
    pg::Result r = conn_->exec(
        "SELECT seq, campaign_id, user_id, request_id, issued_at_us, valid_until_us, state FROM coupons"
        " WHERE campaign_id IN ($1, $2) ORDER BY seq",
        pg::Params().add(rel).add(none));
    ASSERT_EQ(r.rows(), static_cast<int>(to));
    for (int i = 0; i < r.rows(); ++i) {
      const uint32_t s = static_cast<uint32_t>(i + 1);
      EXPECT_EQ(r.i64(i, 0), s);
      EXPECT_EQ(r.i64(i, 1), s % 2 ? rel : none);
      EXPECT_EQ(r.text(i, 2), u + "-" + std::to_string(s));
      if (s % 3) {
        EXPECT_TRUE(r.is_null(i, 3)) << s;
      } else {
        EXPECT_EQ(r.text(i, 3), "r-" + std::to_string(s));
      }
      EXPECT_EQ(r.i64(i, 4), issued + s);
      if (s % 2) {
        EXPECT_EQ(r.i64(i, 5), issued + s + 3 * kDayUs) << s;
      } else {
        EXPECT_TRUE(r.is_null(i, 5)) << s;
      }
      EXPECT_EQ(r.i64(i, 6), 0);
    }
  };
  // A fresh batch (COPY).
  pgstore::WriteOutcome w = pgstore::write_grants(*conn_, batch(1, 40));
  EXPECT_EQ(w.inserted, 40);
  EXPECT_EQ(w.already_present, 0);
  EXPECT_TRUE(w.failed.empty());
  check_rows(40);
  // A redelivery with new grants behind it: COPY refuses, the set-based statement sorts it out.
  w = pgstore::write_grants(*conn_, batch(1, 60));
  EXPECT_EQ(w.inserted, 20);
  EXPECT_EQ(w.already_present, 40);
  EXPECT_TRUE(w.failed.empty());
  check_rows(60);
  // A different grant on a taken seq fails alone; the rest of its batch lands.
  std::vector<Grant> mixed = batch(61, 70);
  mixed.insert(mixed.begin() + 3, Grant{none, 2, u + "-intruder", 1, "", issued});
  w = pgstore::write_grants(*conn_, mixed);
  EXPECT_EQ(w.inserted, 10);
  ASSERT_EQ(w.failed.size(), 1u);
  EXPECT_EQ(w.failed[0].first, 3u);
  check_rows(70);
  // A grant of a campaign without a row fails alone too.
  const int64_t ghost = none + 1'000'000;
  std::vector<Grant> orphan = batch(71, 75);
  orphan.push_back(Grant{ghost, 1, u + "-ghost", 1, "", issued});
  w = pgstore::write_grants(*conn_, orphan);
  EXPECT_EQ(w.inserted, 5);
  ASSERT_EQ(w.failed.size(), 1u);
  EXPECT_EQ(w.failed[0].first, 5u);
  check_rows(75);
  EXPECT_EQ(conn_->exec("SELECT count(*) FROM coupons WHERE campaign_id = $1", pg::Params().add(ghost)).i64(0, 0), 0);
}

TEST_F(PgLifecycleTest, ExpiryJobWorksInChunksAndSkipsLockedRows) {
  const int64_t issued = 1'600'000'000'000'000;  // long ago: every earlier test's coupons are later
  int64_t c = campaign(0, 100, DiscountKind::kFixed, 100, std::nullopt, 0, std::nullopt, 1);
  const std::string user = unique("x");
  for (uint32_t s = 1; s <= 25; ++s) grant(c, s, user + "-" + std::to_string(s), issued);
  const int64_t at = issued + 2 * kDayUs;  // only this campaign's coupons have lapsed by then
  // A checkout holds coupon 1 in an open transaction: the job must neither wait nor touch it.
  pg::Conn holder(url_);
  pg::Tx tx(holder);
  holder.exec("SELECT id FROM coupons WHERE id = $1 FOR UPDATE", pg::Params().add(make_coupon_id(c, 1)));
  const auto started = std::chrono::steady_clock::now();
  ExpireReport first = life_->coupons.expire(at, 10, 1);
  EXPECT_EQ(first.expired, 10);
  EXPECT_TRUE(first.more);
  ExpireReport rest = life_->coupons.expire(at, 10, 100);
  EXPECT_EQ(rest.expired, 14);  // 25 - 10 - the locked one
  EXPECT_FALSE(rest.more);
  EXPECT_LT(std::chrono::steady_clock::now() - started, std::chrono::seconds(2));
  tx.commit();
  EXPECT_EQ(life_->coupons.expire(at, 10, 100).expired, 1);
  CouponCounts n = life_->coupons.counts(0, c, at);
  EXPECT_EQ(n.expired, 25);
  EXPECT_EQ(n.issued, 0);
}

TEST_F(PgLifecycleTest, GrantNotYetInTheStoreIsUnavailableNeverNotFound) {
  PartnerKey p = life_->partners.create(unique("p"));
  int64_t c = campaign(p.partner.id, 10);
  const std::string user = unique("pending");
  const int64_t pending = make_coupon_id(c, 3);  // the gate granted it; the writer has not yet
  EXPECT_EQ(code_of([&] { use(p.partner.id, pending, user, "o", 5000); }), ErrorCode::kUnavailable);
  EXPECT_EQ(code_of([&] { life_->coupons.get(p.partner.id, pending, now_us()); }), ErrorCode::kUnavailable);
  // Not the caller's campaign, or beyond its quantity: plainly not found.
  EXPECT_EQ(code_of([&] { use(0, pending, user, "o", 5000); }), ErrorCode::kNotFound);
  EXPECT_EQ(code_of([&] { use(p.partner.id, make_coupon_id(c, 11), user, "o", 5000); }), ErrorCode::kNotFound);
  grant(c, 3, user);  // the writer catches up
  EXPECT_EQ(use(p.partner.id, pending, user, "o", 5000).discount_amount, 1000);
  // With the engine's view of the grant log the answer is exact.
  PgLifecycleOptions o;
  o.coupons.grant_pending = [](int64_t, uint32_t seq) { return seq <= 4; };
  auto exact = make_life(o);
  EXPECT_EQ(code_of([&] { exact->coupons.use(p.partner.id, {make_coupon_id(c, 4), user, "o", 1}, now_us()); }),
            ErrorCode::kUnavailable);
  EXPECT_EQ(code_of([&] { exact->coupons.use(p.partner.id, {make_coupon_id(c, 5), user, "o", 1}, now_us()); }),
            ErrorCode::kNotFound);
}

TEST_F(PgLifecycleTest, UserCouponsPagesAndCounts) {
  const std::string user = unique("list");
  std::vector<int64_t> ids;
  int64_t first_campaign = 0;
  for (int i = 0; i < 5; ++i) {
    int64_t c = campaign(0, 5);
    if (i == 0) first_campaign = c;
    ids.push_back(grant(c, 1, user));
  }
  use(0, ids[2], user, "o", 5000);
  CouponQuery q;
  q.user_id = user;
  q.limit = 2;
  std::vector<int64_t> seen;
  for (;;) {
    CouponPage p = life_->coupons.list_for_user(0, q, now_us());
    for (const Coupon& k : p.items) seen.push_back(k.id);
    if (!p.next_cursor) break;
    q.after_coupon_id = *p.next_cursor;
  }
  EXPECT_EQ(seen, ids);
  q = CouponQuery{user, CouponState::kUsed, 0, 10};
  CouponPage used = life_->coupons.list_for_user(0, q, now_us());
  ASSERT_EQ(used.items.size(), 1u);
  EXPECT_EQ(used.items[0].id, ids[2]);
  q.state = CouponState::kIssued;
  EXPECT_EQ(life_->coupons.list_for_user(0, q, now_us()).items.size(), 4u);
  q.state = CouponState::kExpired;
  EXPECT_TRUE(life_->coupons.list_for_user(0, q, now_us()).items.empty());
  CouponCounts n = life_->coupons.counts(0, first_campaign, now_us());
  EXPECT_EQ(n.issued, 1);
  EXPECT_EQ(n.total, 1);
}

TEST_F(PgLifecycleTest, AnotherPartnersCouponsAndCampaignsAreNotFound) {
  PartnerKey a = life_->partners.create(unique("a")), b = life_->partners.create(unique("b"));
  const int64_t pa = a.partner.id, pb = b.partner.id;
  int64_t c = campaign(pa, 10);
  const std::string user = unique("shared");
  int64_t id = grant(c, 1, user);
  use(pa, id, user, "oa", 5000);
  EXPECT_EQ(code_of([&] { life_->coupons.get(pb, id, now_us()); }), ErrorCode::kNotFound);
  EXPECT_EQ(code_of([&] { use(pb, id, user, "oa", 5000); }), ErrorCode::kNotFound);
  EXPECT_EQ(code_of([&] { life_->coupons.cancel_use(pb, id, "oa", now_us()); }), ErrorCode::kNotFound);
  EXPECT_EQ(code_of([&] { life_->coupons.counts(pb, c, now_us()); }), ErrorCode::kNotFound);
  EXPECT_TRUE(life_->coupons.list_for_user(pb, CouponQuery{user, std::nullopt, 0, 10}, now_us()).items.empty());
  EXPECT_FALSE(life_->coupon_store.set_campaign_state(pb, c, CampaignState::kPaused));
  EXPECT_FALSE(life_->coupon_store.set_campaign_quantity(pb, c, 50));
  EXPECT_EQ(life_->coupons.get(pa, id, now_us()).state, CouponState::kUsed);  // unchanged
  EXPECT_EQ(conn_->exec("SELECT state, quantity FROM campaigns WHERE id = $1", pg::Params().add(c)).i64(0, 1), 10);
}

TEST_F(PgLifecycleTest, CampaignRuleStorage) {
  int64_t c = campaign(0, 3);
  for (uint32_t s = 1; s <= 2; ++s) grant(c, s, unique("q"));
  EXPECT_TRUE(life_->coupon_store.set_campaign_state(0, c, CampaignState::kPaused));
  EXPECT_EQ(conn_->exec("SELECT state FROM campaigns WHERE id = $1", pg::Params().add(c)).i64(0, 0), 1);
  EXPECT_EQ(code_of([&] { life_->coupon_store.set_campaign_quantity(0, c, 1); }), ErrorCode::kConflict);
  EXPECT_TRUE(life_->coupon_store.set_campaign_quantity(0, c, 2));
  EXPECT_TRUE(life_->coupon_store.set_campaign_quantity(0, c, 50));
  EXPECT_EQ(conn_->exec("SELECT quantity FROM campaigns WHERE id = $1", pg::Params().add(c)).i64(0, 0), 50);
  EXPECT_FALSE(life_->coupon_store.set_campaign_quantity(0, c + 100000, 5));
}

TEST_F(PgLifecycleTest, PartnersKeysAndCachedAuthentication) {
  PartnerKey pk = life_->partners.create(unique("acme"));
  EXPECT_EQ(pk.partner.active_keys, 1);
  for (int i = 0; i < 500; ++i) EXPECT_EQ(life_->partners.authenticate(pk.api_key).id, pk.partner.id);
  EXPECT_EQ(life_->partners.counters().db_queries, 1u);  // steady state stays off the database
  // The database holds the hash only.
  pg::Result stored = conn_->exec("SELECT key_sha256 FROM api_keys WHERE partner_id = $1", pg::Params().add(pk.partner.id));
  ASSERT_EQ(stored.rows(), 1);
  EXPECT_NE(std::string(stored.text(0, 0)), pk.api_key);
  EXPECT_EQ(conn_->exec("SELECT count(*) FROM api_keys WHERE key_sha256 = $1 OR key_hint = $1",
                        pg::Params().add(pk.api_key)).i64(0, 0), 0);
  PartnerKey rotated = life_->partners.rotate(pk.partner.id);
  EXPECT_EQ(code_of([&] { life_->partners.authenticate(pk.api_key); }), ErrorCode::kUnauthenticated);
  EXPECT_EQ(life_->partners.authenticate(rotated.api_key).id, pk.partner.id);
  // Another engine on the same database, TTL 200 ms: sees the revocation within the TTL.
  PgLifecycleOptions o;
  o.auth.cache_ttl_ms = 200;
  auto other = make_life(o);
  EXPECT_EQ(other->partners.authenticate(rotated.api_key).id, pk.partner.id);
  life_->partners.revoke(pk.partner.id);
  EXPECT_EQ(code_of([&] { life_->partners.authenticate(rotated.api_key); }), ErrorCode::kUnauthenticated);
  std::this_thread::sleep_for(std::chrono::milliseconds(250));
  EXPECT_EQ(code_of([&] { other->partners.authenticate(rotated.api_key); }), ErrorCode::kUnauthenticated);
  EXPECT_EQ(code_of([&] { life_->partners.authenticate("cc_live_short"); }), ErrorCode::kUnauthenticated);
  EXPECT_EQ(life_->partners.get(0).name, "default");
  EXPECT_EQ(code_of([&] { life_->partners.rotate(987654321); }), ErrorCode::kNotFound);
}

TEST_F(PgLifecycleTest, ConcurrentRotationsLeaveExactlyOneLiveKey) {
  PartnerKey pk = life_->partners.create(unique("rot"));
  std::vector<std::string> keys(8);
  std::vector<std::thread> threads;
  for (int t = 0; t < 8; ++t) threads.emplace_back([&, t] { keys[t] = life_->partners.rotate(pk.partner.id).api_key; });
  for (auto& th : threads) th.join();
  EXPECT_EQ(life_->partners.get(pk.partner.id).active_keys, 1);
  int live = 0;
  for (const std::string& k : keys) {
    try {
      life_->partners.authenticate(k);
      live++;
    } catch (const Error&) {
    }
  }
  EXPECT_EQ(live, 1);
}

TEST_F(PgLifecycleTest, PoolOfOneServesEveryCall) {
  PgLifecycleOptions o;
  o.conns_max = 1;
  auto one = make_life(o);
  PartnerKey pk = one->partners.create(unique("one"));
  int64_t c = campaign(pk.partner.id, 2);
  EXPECT_EQ(code_of([&] { one->coupons.get(pk.partner.id, make_coupon_id(c, 1), now_us()); }), ErrorCode::kUnavailable);
  grant(c, 1, unique("one-a"));
  grant(c, 2, unique("one-b"));
  // The refusal path asks for the campaign's owner after its first lease ended.
  EXPECT_EQ(code_of([&] { one->coupon_store.set_campaign_quantity(pk.partner.id, c, 1); }), ErrorCode::kConflict);
}

}  // namespace

namespace {

// The outbox rows of one campaign's coupon.issued / campaign.sold_out events, by seq.
std::vector<std::pair<std::string, std::string>> outbox_of(pg::Conn& conn, int64_t campaign_id) {
  pg::Result r = conn.exec(
      "SELECT event_id, data FROM event_outbox WHERE event_id LIKE 'coupon.issued:' || $1 || ':%'"
      " OR event_id LIKE 'campaign.sold_out:' || $1 || ':%' ORDER BY seq",
      pg::Params().add(campaign_id));
  std::vector<std::pair<std::string, std::string>> out;
  for (int i = 0; i < r.rows(); ++i) out.emplace_back(std::string(r.text(i, 0)), std::string(r.text(i, 1)));
  return out;
}

}  // namespace

// The writer's three paths write the same events: COPY (events built in C++, COPY into the
// outbox), the set-based fallback after a redelivery (the statement's own RETURNING: only new
// rows), and row by row after a bad grant. A redelivered grant makes no second event; the write
// that completes the quantity adds campaign.sold_out after the coupon.issued events.
TEST_F(PgLifecycleTest, TheWritersPathsWriteOneEventPerNewRowWithTheSameBytes) {
  const int64_t c = campaign(0, 6);
  const std::string u = unique("ev");
  auto grants = [&](uint32_t from, uint32_t to) {
    std::vector<Grant> g;
    for (uint32_t s = from; s <= to; ++s) g.push_back(Grant{c, s, u + "-" + std::to_string(s), 1, "r", 1'000 + s});
    return g;
  };
  pgstore::write_grants(*conn_, grants(1, 2));                      // COPY
  EXPECT_EQ(pgstore::write_grants(*conn_, grants(1, 4)).inserted, 2);  // redelivery + 2 new: set-based
  std::vector<Grant> bad = grants(5, 6);
  bad.push_back(Grant{c + 1'000'000, 1, u + "-ghost", 1, "", 1});  // no campaign: row by row
  EXPECT_EQ(pgstore::write_grants(*conn_, bad).inserted, 2);
  auto rows = outbox_of(*conn_, c);
  ASSERT_EQ(rows.size(), 7u);
  for (uint32_t s = 1; s <= 6; ++s) {
    EXPECT_EQ(rows[s - 1].first, "coupon.issued:" + std::to_string(c) + ":" + std::to_string(s));
    const std::string want = "{\"coupon_id\" : " + std::to_string(make_coupon_id(c, s)) + ", \"campaign_id\" : " +
                             std::to_string(c) + ", \"seq\" : " + std::to_string(s) + ", \"user_id\" : \"" + u + "-" +
                             std::to_string(s) + "\", \"user_ordinal\" : 1, \"request_id\" : \"r\", \"issued_at_us\" : " +
                             std::to_string(1'000 + s) + ", \"valid_until_us\" : null}";
    EXPECT_EQ(rows[s - 1].second, want) << "seq " << s;
  }
  EXPECT_EQ(rows[6].first, "campaign.sold_out:" + std::to_string(c) + ":6");
  // Written again (a writer that lost the commit's reply): nothing new.
  EXPECT_EQ(pgstore::write_grants(*conn_, grants(1, 6)).already_present, 6);
  EXPECT_EQ(outbox_of(*conn_, c).size(), 7u);
  // Events off: the rows, no events.
  const int64_t off = campaign(0, 2);
  pgstore::write_grants(*conn_, {Grant{off, 1, u, 1, "", 1}}, /*events=*/false);
  EXPECT_TRUE(outbox_of(*conn_, off).empty());
}

// Writers racing on one campaign, each on its own connection, in small batches and in an order
// where the grant of seq == quantity comes first (a sharded campaign's last interval running dry
// before the others): campaign.sold_out is written once, by the transaction completing the
// quantity, after every coupon.issued of the campaign; with or without events the count of
// written grants is the rows'.
TEST_F(PgLifecycleTest, ConcurrentWritersWriteOneSoldOutAfterEveryCouponIssued) {
  constexpr uint32_t kQuantity = 600, kWriters = 6, kBatch = 7;
  const int64_t c = campaign(0, kQuantity);
  const std::string u = unique("race");
  std::vector<std::thread> writers;
  for (uint32_t w = 0; w < kWriters; ++w) {
    writers.emplace_back([&, w] {
      pg::Conn conn(url_);
      std::vector<Grant> batch;
      for (uint32_t s = kQuantity - w; s >= 1; s = s > kWriters ? s - kWriters : 0) {  // descending
        batch.push_back(Grant{c, s, u + "-" + std::to_string(s), 1, "", 1'000 + s});
        if (batch.size() == kBatch || s <= kWriters) {
          pgstore::write_grants(conn, batch);
          batch.clear();
        }
      }
    });
  }
  for (std::thread& t : writers) t.join();
  auto rows = outbox_of(*conn_, c);
  ASSERT_EQ(rows.size(), kQuantity + 1);
  EXPECT_EQ(rows.back().first, "campaign.sold_out:" + std::to_string(c) + ":" + std::to_string(kQuantity));
  for (std::size_t i = 0; i + 1 < rows.size(); ++i) EXPECT_EQ(rows[i].first.rfind("coupon.issued:", 0), 0u) << i;
  auto written_of = [&](int64_t id) {
    return conn_->exec("SELECT written FROM campaign_written WHERE campaign_id = $1", pg::Params().add(id)).i64(0, 0);
  };
  EXPECT_EQ(written_of(c), kQuantity);
  // Redelivered: no new row, no new count, no second event.
  pgstore::write_grants(*conn_, {Grant{c, 1, u + "-1", 1, "", 1'001}});
  EXPECT_EQ(outbox_of(*conn_, c).size(), kQuantity + 1u);
  // Events off: the count still follows the rows.
  const int64_t off = campaign(0, 2);
  pgstore::write_grants(*conn_, {Grant{off, 1, u + "-a", 1, "", 1}, Grant{off, 2, u + "-b", 1, "", 2}}, false);
  EXPECT_EQ(written_of(off), 2);
  EXPECT_TRUE(outbox_of(*conn_, off).empty());
}
