// The coupon lifecycle on the embedded engine: discount math, use / cancel / idempotency,
// concurrent uses of one coupon, read-time expiry and the chunked expiry job, queries with
// cursors, campaign rules (pause / resume / close / quantity), and bad input.
// Tenant isolation and API keys: partners_test.cpp. PostgreSQL: pg_lifecycle_test.cpp.
#include <gtest/gtest.h>

#include <atomic>
#include <set>
#include <thread>

#include "coupons/coupon_service.hpp"
#include "coupons/rules.hpp"
#include "couponcore/engine.hpp"
#include "couponcore/error.hpp"
#include "couponcore/limits.hpp"
#include "couponcore/scope.hpp"
#include "store/sqlite/sqlite.hpp"
#include "store/sqlite/sqlite_coupons.hpp"
#include "test_util.hpp"

using namespace couponcore;

namespace {

constexpr int64_t kHourUs = 3'600'000'000;
constexpr int64_t kDayUs = 24 * kHourUs;

IssueRequest req(std::string user) { return {std::move(user), ""}; }

ErrorCode code_of(const std::function<void()>& fn) {
  try {
    fn();
  } catch (const Error& e) {
    return e.code();
  }
  ADD_FAILURE() << "no error";
  return ErrorCode::kInternal;
}

class LifecycleTest : public ::testing::Test {
 protected:
  void SetUp() override {
    path_ = testutil::temp_path("lifecycle") + ".db";
    e_ = open_embedded(EmbeddedOptions{path_, false, {}});
  }
  void TearDown() override {
    e_.reset();
    testutil::remove_db(path_);
  }
  static CampaignSpec spec(int64_t quantity = 100) {
    CampaignSpec s;
    s.name = "drop";
    s.quantity = quantity;
    return s;
  }
  static CampaignSpec fixed(int64_t amount, int64_t min_order = 0) {
    CampaignSpec s = spec();
    s.discount_kind = DiscountKind::kFixed;
    s.discount_value = amount;
    s.min_order_amount = min_order;
    return s;
  }
  int64_t issue_one(int64_t campaign_id, const std::string& user) {
    IssueResult r = e_->issue(campaign_id, req(user));
    EXPECT_EQ(r.status, IssueStatus::kIssued);
    return r.coupon_id;
  }
  UseResult use(int64_t coupon_id, const std::string& user, const std::string& order, int64_t amount) {
    return e_->use_coupon(0, UseRequest{coupon_id, user, order, amount});
  }
  std::string path_;
  std::unique_ptr<Engine> e_;
};

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

// ---- use -------------------------------------------------------------------------------------

TEST_F(LifecycleTest, UseComputesTheDiscountAndMarksUsed) {
  CampaignSpec s = spec();
  s.discount_kind = DiscountKind::kPercent;
  s.discount_value = 10;
  s.discount_max = 5000;
  Campaign c = e_->create_campaign(s);
  int64_t id = issue_one(c.id, "alice");
  Coupon before = e_->get_coupon(0, id);
  EXPECT_EQ(before.state, CouponState::kIssued);
  EXPECT_EQ(before.user_id, "alice");
  EXPECT_FALSE(before.valid_until_us.has_value());
  UseResult r = use(id, "alice", "order-1", 80'000);
  EXPECT_EQ(r.discount_amount, 5000);  // 8,000 capped at 5,000
  EXPECT_EQ(r.payable_amount, 75'000);
  Coupon after = e_->get_coupon(0, id);
  EXPECT_EQ(after.state, CouponState::kUsed);
  EXPECT_EQ(after.used_order_id, "order-1");
  EXPECT_EQ(after.order_amount, 80'000);
  EXPECT_EQ(after.discount_amount, 5000);
  EXPECT_EQ(after.used_at_us, r.used_at_us);
}

TEST_F(LifecycleTest, RepeatWithTheSameOrderReturnsTheFirstResult) {
  Campaign c = e_->create_campaign(fixed(1000));
  int64_t id = issue_one(c.id, "bob");
  UseResult first = use(id, "bob", "order-7", 5000);
  UseResult again = use(id, "bob", "order-7", 5000);
  EXPECT_EQ(again.used_at_us, first.used_at_us);
  EXPECT_EQ(again.discount_amount, first.discount_amount);
  EXPECT_EQ(again.order_id, "order-7");
  // Same order, different amount: not a repeat.
  EXPECT_EQ(code_of([&] { use(id, "bob", "order-7", 6000); }), ErrorCode::kConflict);
  // Another order: the coupon is used.
  EXPECT_EQ(code_of([&] { use(id, "bob", "order-8", 5000); }), ErrorCode::kConflict);
  EXPECT_EQ(e_->get_coupon(0, id).used_order_id, "order-7");
}

TEST_F(LifecycleTest, WrongOwnerUnknownCouponAndMinimumOrder) {
  Campaign c = e_->create_campaign(fixed(1000, /*min_order=*/10'000));
  int64_t id = issue_one(c.id, "carol");
  EXPECT_EQ(code_of([&] { use(id, "mallory", "o1", 20'000); }), ErrorCode::kNotFound);
  EXPECT_EQ(code_of([&] { use(id + 1, "carol", "o1", 20'000); }), ErrorCode::kNotFound);  // seq 2 never issued
  EXPECT_EQ(code_of([&] { use(make_coupon_id(c.id + 99, 1), "carol", "o1", 20'000); }), ErrorCode::kNotFound);
  EXPECT_EQ(code_of([&] { use(id, "carol", "o1", 9999); }), ErrorCode::kInvalidArgument);
  EXPECT_EQ(e_->get_coupon(0, id).state, CouponState::kIssued);  // nothing changed
  EXPECT_EQ(use(id, "carol", "o1", 10'000).discount_amount, 1000);
}

TEST_F(LifecycleTest, BadInputChangesNothing) {
  Campaign c = e_->create_campaign(fixed(1000));
  int64_t id = issue_one(c.id, "dave");
  auto bad = [&](UseRequest r) { return code_of([&] { e_->use_coupon(0, r); }); };
  EXPECT_EQ(bad({id, "dave", "o", 0}), ErrorCode::kInvalidArgument);
  EXPECT_EQ(bad({id, "dave", "o", -5}), ErrorCode::kInvalidArgument);
  EXPECT_EQ(bad({id, "dave", "o", limits::kAmountMax + 1}), ErrorCode::kInvalidArgument);
  EXPECT_EQ(bad({id, "dave", "", 100}), ErrorCode::kInvalidArgument);
  EXPECT_EQ(bad({id, "dave", std::string(limits::kOrderIdBytesMax + 1, 'x'), 100}), ErrorCode::kInvalidArgument);
  EXPECT_EQ(bad({id, "dave", "o\n1", 100}), ErrorCode::kInvalidArgument);
  EXPECT_EQ(bad({id, "", "o", 100}), ErrorCode::kInvalidArgument);
  EXPECT_EQ(bad({0, "dave", "o", 100}), ErrorCode::kInvalidArgument);
  EXPECT_EQ(bad({-1, "dave", "o", 100}), ErrorCode::kInvalidArgument);
  EXPECT_EQ(bad({c.id << 32, "dave", "o", 100}), ErrorCode::kInvalidArgument);  // seq 0
  EXPECT_EQ(code_of([&] { e_->cancel_coupon_use(0, id, ""); }), ErrorCode::kInvalidArgument);
  EXPECT_EQ(code_of([&] { e_->get_coupon(0, 0); }), ErrorCode::kInvalidArgument);
  EXPECT_EQ(e_->get_coupon(0, id).state, CouponState::kIssued);
  EXPECT_EQ(e_->coupon_counts(0, c.id).used, 0);
}

TEST_F(LifecycleTest, ManyThreadsUseOneCouponExactlyOneWins) {
  Campaign c = e_->create_campaign(fixed(500));
  int64_t id = issue_one(c.id, "eve");
  constexpr int kThreads = 16;
  std::atomic<int> wins{0}, conflicts{0}, other{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      try {
        use(id, "eve", "order-" + std::to_string(t), 1000);
        wins++;
      } catch (const Error& err) {
        (err.code() == ErrorCode::kConflict ? conflicts : other)++;
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(wins.load(), 1);
  EXPECT_EQ(conflicts.load(), kThreads - 1);
  EXPECT_EQ(other.load(), 0);
  EXPECT_EQ(e_->coupon_counts(0, c.id).used, 1);
}

TEST_F(LifecycleTest, ConcurrentRepeatsOfOneOrderAllGetTheSameResult) {
  Campaign c = e_->create_campaign(fixed(500));
  int64_t id = issue_one(c.id, "frank");
  constexpr int kThreads = 8;
  std::vector<UseResult> results(kThreads);
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] { results[t] = use(id, "frank", "the-order", 1000); });
  }
  for (auto& th : threads) th.join();
  for (const UseResult& r : results) {
    EXPECT_EQ(r.used_at_us, results[0].used_at_us);
    EXPECT_EQ(r.discount_amount, 500);
  }
}

// ---- cancel ----------------------------------------------------------------------------------

TEST_F(LifecycleTest, CancelReturnsTheCouponAndIsIdempotent) {
  Campaign c = e_->create_campaign(fixed(1000));
  int64_t id = issue_one(c.id, "gina");
  use(id, "gina", "o-1", 5000);
  Coupon back = e_->cancel_coupon_use(0, id, "o-1");
  EXPECT_EQ(back.state, CouponState::kIssued);
  EXPECT_FALSE(back.used_order_id.has_value());
  EXPECT_EQ(e_->cancel_coupon_use(0, id, "o-1").state, CouponState::kIssued);  // repeat
  EXPECT_EQ(code_of([&] { e_->cancel_coupon_use(0, id, "o-other"); }), ErrorCode::kConflict);
  // Usable again, by another order; the old order's cancel stays a harmless repeat.
  EXPECT_EQ(use(id, "gina", "o-2", 5000).order_id, "o-2");
  EXPECT_EQ(e_->cancel_coupon_use(0, id, "o-1").used_order_id, "o-2");
  EXPECT_EQ(code_of([&] { e_->cancel_coupon_use(0, id, "o-3"); }), ErrorCode::kConflict);
  EXPECT_EQ(e_->get_coupon(0, id).state, CouponState::kUsed);
}

TEST_F(LifecycleTest, CancelOfACouponThatNeverWasUsedIsAConflict) {
  Campaign c = e_->create_campaign(fixed(1000));
  int64_t id = issue_one(c.id, "hank");
  EXPECT_EQ(code_of([&] { e_->cancel_coupon_use(0, id, "o-1"); }), ErrorCode::kConflict);
  EXPECT_EQ(code_of([&] { e_->cancel_coupon_use(0, id + 5, "o-1"); }), ErrorCode::kNotFound);
}

// ---- expiry ----------------------------------------------------------------------------------

TEST_F(LifecycleTest, PastValidityReadsExpiredAndCannotBeUsed) {
  CampaignSpec s = fixed(1000);
  s.valid_until_us = now_us() - kHourUs;  // already lapsed: every coupon is born expired
  Campaign c = e_->create_campaign(s);
  int64_t id = issue_one(c.id, "ivan");
  Coupon k = e_->get_coupon(0, id);
  EXPECT_EQ(k.state, CouponState::kExpired);  // read-time check, before any job ran
  EXPECT_EQ(k.valid_until_us, s.valid_until_us);
  EXPECT_EQ(code_of([&] { use(id, "ivan", "o", 5000); }), ErrorCode::kConflict);
  CouponCounts n = e_->coupon_counts(0, c.id);
  EXPECT_EQ(n.expired, 1);
  EXPECT_EQ(n.issued, 0);
}

TEST_F(LifecycleTest, RelativeValidityIsFixedAtIssue) {
  CampaignSpec s = fixed(1000);
  s.valid_days = 7;
  Campaign c = e_->create_campaign(s);
  const int64_t before = now_us();
  int64_t id = issue_one(c.id, "judy");
  Coupon k = e_->get_coupon(0, id);
  ASSERT_TRUE(k.valid_until_us.has_value());
  EXPECT_EQ(*k.valid_until_us, k.issued_at_us + 7 * kDayUs);
  EXPECT_GE(k.issued_at_us, before);
  EXPECT_EQ(k.state, CouponState::kIssued);
}

TEST_F(LifecycleTest, ExpiryJobMarksInChunks) {
  CampaignSpec s = fixed(1000);
  s.valid_days = 1;
  Campaign c = e_->create_campaign(s);
  std::vector<std::string> users;
  for (int i = 0; i < 25; ++i) users.push_back("u" + std::to_string(i));
  std::vector<IssueRequest> reqs;
  for (auto& u : users) reqs.push_back(req(u));
  e_->issue_many(c.id, reqs);
  use(make_coupon_id(c.id, 1), "u0", "o", 5000);  // a used coupon never expires
  const int64_t later = now_us() + 2 * kDayUs;
  EXPECT_EQ(e_->expire_coupons(now_us(), 10, 100).expired, 0);  // nothing lapsed yet
  ExpireReport partial = e_->expire_coupons(later, 10, 1);
  EXPECT_EQ(partial.expired, 10);
  EXPECT_EQ(partial.chunks, 1);
  EXPECT_TRUE(partial.more);
  ExpireReport rest = e_->expire_coupons(later, 10, 100);
  EXPECT_EQ(rest.expired, 14);
  EXPECT_EQ(rest.chunks, 2);
  EXPECT_FALSE(rest.more);
  EXPECT_EQ(e_->expire_coupons(later, 10, 100).expired, 0);
  CouponCounts n = e_->coupon_counts(0, c.id);
  EXPECT_EQ(n.expired, 24);
  EXPECT_EQ(n.used, 1);
  EXPECT_EQ(n.total, 25);
  EXPECT_EQ(code_of([&] { e_->expire_coupons(later, 0, 1); }), ErrorCode::kInvalidArgument);
  EXPECT_EQ(code_of([&] { e_->expire_coupons(later, limits::kExpireChunkRowsMax + 1, 1); }),
            ErrorCode::kInvalidArgument);
  EXPECT_EQ(code_of([&] { e_->expire_coupons(later, 10, 0); }), ErrorCode::kInvalidArgument);
}

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

// ---- queries ---------------------------------------------------------------------------------

TEST_F(LifecycleTest, UserCouponsPageWithAStableCursorAndStateFilter) {
  std::vector<int64_t> ids;
  for (int i = 0; i < 5; ++i) {
    Campaign c = e_->create_campaign(fixed(100 + i));
    ids.push_back(issue_one(c.id, "liz"));
    issue_one(c.id, "someone-else");
  }
  use(ids[1], "liz", "o1", 1000);
  use(ids[3], "liz", "o3", 1000);
  CouponQuery q;
  q.user_id = "liz";
  q.limit = 2;
  std::vector<int64_t> seen;
  for (int page = 0; page < 10; ++page) {
    CouponPage p = e_->list_user_coupons(0, q);
    for (const Coupon& k : p.items) seen.push_back(k.id);
    if (page == 0) {
      // A new coupon for liz between pages lands at the end, never shifts a page.
      Campaign late = e_->create_campaign(fixed(1));
      ids.push_back(issue_one(late.id, "liz"));
    }
    if (!p.next_cursor) break;
    q.after_coupon_id = *p.next_cursor;
  }
  EXPECT_EQ(seen, ids);
  q.after_coupon_id = 0;
  q.limit = 100;
  q.state = CouponState::kUsed;
  CouponPage used = e_->list_user_coupons(0, q);
  ASSERT_EQ(used.items.size(), 2u);
  EXPECT_EQ(used.items[0].id, ids[1]);
  EXPECT_FALSE(used.next_cursor.has_value());
  q.state = CouponState::kIssued;
  EXPECT_EQ(e_->list_user_coupons(0, q).items.size(), 4u);
  q.state = CouponState::kExpired;
  EXPECT_TRUE(e_->list_user_coupons(0, q).items.empty());
  q.limit = limits::kCouponPageMax + 1;
  EXPECT_EQ(code_of([&] { e_->list_user_coupons(0, q); }), ErrorCode::kInvalidArgument);
  q.limit = 0;
  EXPECT_EQ(code_of([&] { e_->list_user_coupons(0, q); }), ErrorCode::kInvalidArgument);
}

TEST_F(LifecycleTest, CountsByState) {
  CampaignSpec s = fixed(100);
  Campaign c = e_->create_campaign(s);
  std::vector<int64_t> ids;
  for (int i = 0; i < 4; ++i) ids.push_back(issue_one(c.id, "u" + std::to_string(i)));
  use(ids[0], "u0", "a", 500);
  use(ids[1], "u1", "b", 500);
  e_->cancel_coupon_use(0, ids[1], "b");
  CouponCounts n = e_->coupon_counts(0, c.id);
  EXPECT_EQ(n.issued, 3);
  EXPECT_EQ(n.used, 1);
  EXPECT_EQ(n.expired, 0);
  EXPECT_EQ(n.total, 4);
  EXPECT_EQ(code_of([&] { e_->coupon_counts(0, c.id + 1); }), ErrorCode::kNotFound);
}

// ---- campaign rules --------------------------------------------------------------------------

TEST_F(LifecycleTest, PauseResumeClose) {
  Campaign c = e_->create_campaign(spec(10));
  EXPECT_EQ(e_->pause_campaign(0, c.id).state, CampaignState::kPaused);
  EXPECT_EQ(e_->pause_campaign(0, c.id).state, CampaignState::kPaused);  // repeat: no-op
  EXPECT_EQ(e_->issue(c.id, req("a")).status, IssueStatus::kNotOpen);
  EXPECT_EQ(e_->resume_campaign(0, c.id).state, CampaignState::kActive);
  EXPECT_EQ(e_->issue(c.id, req("a")).status, IssueStatus::kIssued);
  EXPECT_EQ(e_->close_campaign(0, c.id).state, CampaignState::kClosed);
  EXPECT_EQ(e_->issue(c.id, req("b")).status, IssueStatus::kEnded);
  EXPECT_EQ(code_of([&] { e_->resume_campaign(0, c.id); }), ErrorCode::kConflict);
  EXPECT_EQ(code_of([&] { e_->pause_campaign(0, c.id); }), ErrorCode::kConflict);
  EXPECT_EQ(code_of([&] { e_->set_campaign_quantity(0, c.id, 20); }), ErrorCode::kConflict);
  EXPECT_EQ(e_->get_campaign(c.id).state, CampaignState::kClosed);
  // A used coupon of a closed campaign: closing stops issuance, not redemption.
  EXPECT_EQ(use(make_coupon_id(c.id, 1), "a", "o", 100).discount_amount, 0);
}

TEST_F(LifecycleTest, RaisingQuantityReopensASoldOutCampaign) {
  Campaign c = e_->create_campaign(spec(2));
  e_->issue_many(c.id, {req("a"), req("b")});
  EXPECT_EQ(e_->issue(c.id, req("c")).status, IssueStatus::kSoldOut);
  EXPECT_EQ(e_->issue(c.id, req("c")).status, IssueStatus::kSoldOut);  // the fast path by now
  EXPECT_EQ(code_of([&] { e_->set_campaign_quantity(0, c.id, 1); }), ErrorCode::kConflict);  // below issued
  EXPECT_EQ(code_of([&] { e_->set_campaign_quantity(0, c.id, 0); }), ErrorCode::kInvalidArgument);
  EXPECT_EQ(code_of([&] { e_->set_campaign_quantity(0, c.id, limits::kQuantityMax + 1); }),
            ErrorCode::kInvalidArgument);
  EXPECT_EQ(e_->set_campaign_quantity(0, c.id, 3).spec.quantity, 3);
  IssueResult r = e_->issue(c.id, req("c"));
  EXPECT_EQ(r.status, IssueStatus::kIssued);
  EXPECT_EQ(r.seq, 3u);
  EXPECT_EQ(e_->issue(c.id, req("d")).status, IssueStatus::kSoldOut);
  EXPECT_EQ(e_->set_campaign_quantity(0, c.id, 3).spec.quantity, 3);  // equal to issued: allowed
}

TEST_F(LifecycleTest, RulesSurviveReopen) {
  int64_t paused_id, raised_id;
  {
    Campaign p = e_->create_campaign(spec(5));
    e_->pause_campaign(0, p.id);
    paused_id = p.id;
    Campaign r = e_->create_campaign(spec(1));
    e_->issue(r.id, req("x"));
    e_->set_campaign_quantity(0, r.id, 4);
    raised_id = r.id;
  }
  e_.reset();
  e_ = open_embedded(EmbeddedOptions{path_, false, {}});
  EXPECT_EQ(e_->get_campaign(paused_id).state, CampaignState::kPaused);
  EXPECT_EQ(e_->issue(paused_id, req("y")).status, IssueStatus::kNotOpen);
  EXPECT_EQ(e_->get_campaign(raised_id).spec.quantity, 4);
  EXPECT_EQ(e_->issue(raised_id, req("y")).seq, 2u);
}

// Quantity changes racing a flash sale: whatever interleaving, issued never exceeds the final
// quantity, seqs have no gaps, and the store agrees with the gate.
TEST_F(LifecycleTest, QuantityRaisedDuringASaleStaysConsistent) {
  Campaign c = e_->create_campaign(spec(100));
  std::atomic<bool> stop{false};
  std::atomic<int> issued{0};
  std::vector<std::thread> buyers;
  for (int t = 0; t < 4; ++t) {
    buyers.emplace_back([&, t] {
      for (int i = 0; !stop && i < 5000; ++i) {
        if (e_->issue(c.id, req("t" + std::to_string(t) + "-" + std::to_string(i))).status == IssueStatus::kIssued) {
          issued++;
        }
      }
    });
  }
  int64_t q = 100;
  for (int step = 0; step < 20; ++step) {
    q += 50;
    e_->set_campaign_quantity(0, c.id, q);
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
  stop = true;
  for (auto& th : buyers) th.join();
  CampaignStats st = e_->campaign_stats(c.id);
  EXPECT_EQ(st.rows, issued.load());
  EXPECT_LE(st.rows, q);
  EXPECT_EQ(st.max_seq, st.rows);
  EXPECT_EQ(e_->get_campaign(c.id).spec.quantity, q);
  ReconcileReport rep = e_->reconcile(c.id);
  EXPECT_TRUE(rep.consistent);
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
