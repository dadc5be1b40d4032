// Checkout with coupons: a coupon and points used in ONE wallet batch transaction, both or
// neither, on both deployments (embedded: the coupon engine's SQLite file; production: the Redis
// gate + grant log + PostgreSQL, the wallets in the same database). Typed errors, nothing
// changed on failure, concurrent checkouts of one coupon (one wins, points charged once, also
// against use_coupon), cancel restoring both, idempotent retries, and audit() afterwards.
#include <gtest/gtest.h>

#include <atomic>
#include <functional>
#include <thread>
#include <vector>

#include "couponcore/coupons.hpp"
#include "couponcore/engine.hpp"
#include "couponcore/error.hpp"
#include "couponcore/wallet.hpp"
#include "production_test_util.hpp"
#include "wallet_test_util.hpp"

using namespace couponcore;

namespace {

constexpr int64_t kDayUs = 86'400'000'000;

using testutil::code_of;

class CheckoutTest : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override { storage_ = std::make_unique<testutil::WalletStorage>(GetParam()); }

  void TearDown() override {
    wallets_.reset();
    engine_.reset();
    if (!embedded()) testutil::delete_keys(options_.key_prefix);
    storage_.reset();
  }

  bool embedded() const { return GetParam() == "embedded"; }

  // The coupon engine and the wallet engine on one SQLite file / one PostgreSQL schema.
  void open(int writer_threads = 1) {
    if (embedded()) {
      EmbeddedOptions o;
      o.path = storage_->path();
      o.synchronous_full = false;
      engine_ = open_embedded(o);
    } else {
      options_ = testutil::production_options(testutil::current_test_name());
      options_.postgres_url = storage_->url();
      options_.migrate_on_open = true;
      options_.writer_threads = writer_threads;
      engine_ = open_production(options_);
    }
    WalletOptions w;
    w.clock_us = [this] { return now_us() + clock_offset_us_.load(); };
    wallets_ = storage_->open(w);
  }

  int64_t issue_coupon(const std::string& user, int64_t partner_id = 0,
                       std::optional<int64_t> valid_until_us = std::nullopt) {
    CampaignSpec s;
    s.name = "drop";
    s.quantity = 10;
    s.partner_id = partner_id;
    s.discount_kind = DiscountKind::kFixed;
    s.discount_value = 500;
    s.min_order_amount = 1000;
    s.valid_until_us = valid_until_us;
    Campaign c = engine_->create_campaign(s);
    IssueResult r = engine_->issue(c.id, IssueRequest{user, ""});
    EXPECT_EQ(r.status, IssueStatus::kIssued);
    if (!embedded()) EXPECT_TRUE(engine_->drain(10));
    return r.coupon_id;
  }

  int64_t balance(const std::string& user, int64_t partner_id = 0) { return wallets_->balance(partner_id, user).total; }
  int64_t entries() { return storage_->scalar("SELECT count(*) FROM wallet_entries"); }
  void expect_audit_ok() {
    WalletAudit a = wallets_->audit(-1);
    EXPECT_TRUE(a.ok()) << "orphans " << a.orphans << " lot_drawn_mismatch " << a.lot_drawn_mismatch;
  }

  std::unique_ptr<testutil::WalletStorage> storage_;
  ProductionOptions options_;
  std::unique_ptr<Engine> engine_;
  std::unique_ptr<WalletEngine> wallets_;
  std::atomic<int64_t> clock_offset_us_{0};
};

TEST_P(CheckoutTest, UsesTheCouponAndThePointsTogetherAndRetriesReplay) {
  open();
  const int64_t coupon = issue_coupon("u1");
  wallets_->earn(0, "u1", 1000, std::nullopt, "", "earn-1");

  WalletResult r = wallets_->checkout(0, "u1", "order-1", 5000, coupon, 300, "co-1");
  EXPECT_FALSE(r.replayed);
  EXPECT_GT(r.entry_id, 0);
  EXPECT_EQ(r.coupon_id, coupon);
  EXPECT_EQ(r.discount_amount, 500);
  EXPECT_EQ(r.points, 300);
  EXPECT_EQ(r.payable_amount, 5000 - 500 - 300);
  EXPECT_EQ(r.balance_after, 700);
  EXPECT_EQ(r.order_id, "order-1");

  Coupon c = engine_->get_coupon(0, coupon);
  EXPECT_EQ(c.state, CouponState::kUsed);
  EXPECT_EQ(c.used_order_id.value_or(""), "order-1");
  EXPECT_EQ(c.discount_amount.value_or(0), 500);
  EXPECT_EQ(balance("u1"), 700);

  // The same key: the first answer. The same key with other content: kConflict.
  WalletResult again = wallets_->checkout(0, "u1", "order-1", 5000, coupon, 300, "co-1");
  EXPECT_TRUE(again.replayed);
  EXPECT_EQ(again.entry_id, r.entry_id);
  EXPECT_EQ(again.discount_amount, 500);
  EXPECT_EQ(again.payable_amount, r.payable_amount);
  EXPECT_EQ(code_of([&] { wallets_->checkout(0, "u1", "order-1", 5000, coupon, 200, "co-1"); }), ErrorCode::kConflict);
  // The same order with another key must not pay twice: the coupon says "used by this order".
  EXPECT_EQ(code_of([&] { wallets_->checkout(0, "u1", "order-1", 5000, coupon, 300, "co-2"); }), ErrorCode::kConflict);
  EXPECT_EQ(balance("u1"), 700);

  // The use is the checkout's: a plain wallet cancel is refused (it would leave the coupon used).
  EXPECT_EQ(code_of([&] { wallets_->cancel(0, "u1", r.entry_id, "plain-cancel"); }), ErrorCode::kInvalidArgument);
  expect_audit_ok();
}

TEST_P(CheckoutTest, ACouponFailureLeavesThePointsAndAPointsFailureLeavesTheCoupon) {
  open();
  const int64_t coupon = issue_coupon("u1");
  const int64_t other_users = issue_coupon("u2");
  wallets_->earn(0, "u1", 1000, std::nullopt, "", "earn-1");
  const int64_t entries_before = entries();

  // Points the wallet does not hold: the coupon stays issued.
  EXPECT_EQ(code_of([&] { wallets_->checkout(0, "u1", "o-1", 5000, coupon, 1001, "k-1"); }),
            ErrorCode::kInsufficientFunds);
  EXPECT_EQ(engine_->get_coupon(0, coupon).state, CouponState::kIssued);
  // More points than the payable amount after the discount (1200 - 500 = 700 < 800).
  EXPECT_EQ(code_of([&] { wallets_->checkout(0, "u1", "o-2", 1200, coupon, 800, "k-2"); }),
            ErrorCode::kInvalidArgument);
  // Below the campaign's minimum order.
  EXPECT_EQ(code_of([&] { wallets_->checkout(0, "u1", "o-3", 999, coupon, 100, "k-3"); }), ErrorCode::kInvalidArgument);
  // Negative points, points above the order: refused before the queue.
  EXPECT_EQ(code_of([&] { wallets_->checkout(0, "u1", "o-4", 5000, coupon, -1, "k-4"); }), ErrorCode::kInvalidArgument);
  EXPECT_EQ(code_of([&] { wallets_->checkout(0, "u1", "o-5", 500, 0, 600, "k-5"); }), ErrorCode::kInvalidArgument);
  // Another user's coupon, another partner's coupon, an unknown one: kNotFound alike.
  EXPECT_EQ(code_of([&] { wallets_->checkout(0, "u1", "o-6", 5000, other_users, 100, "k-6"); }), ErrorCode::kNotFound);
  wallets_->earn(7, "u1", 1000, std::nullopt, "", "earn-p7");
  const int64_t p7_entries = entries();
  EXPECT_EQ(code_of([&] { wallets_->checkout(7, "u1", "o-7", 5000, coupon, 100, "k-7"); }), ErrorCode::kNotFound);
  EXPECT_EQ(code_of([&] { wallets_->checkout(0, "u1", "o-8", 5000, coupon + 100, 100, "k-8"); }), ErrorCode::kNotFound);
  EXPECT_EQ(balance("u1"), 1000);
  EXPECT_EQ(balance("u1", 7), 1000);
  EXPECT_EQ(entries(), p7_entries);
  EXPECT_EQ(p7_entries, entries_before + 1);
  EXPECT_EQ(engine_->get_coupon(0, coupon).state, CouponState::kIssued);

  // The coupon used elsewhere (use_coupon): the checkout fails and the points stay.
  engine_->use_coupon(0, UseRequest{coupon, "u1", "elsewhere", 2000});
  EXPECT_EQ(code_of([&] { wallets_->checkout(0, "u1", "o-9", 5000, coupon, 100, "k-9"); }), ErrorCode::kConflict);
  EXPECT_EQ(balance("u1"), 1000);
  EXPECT_EQ(entries(), p7_entries);
  // A failed key is decided afresh: once the coupon is free again, the same key succeeds.
  engine_->cancel_coupon_use(0, coupon, "elsewhere");
  WalletResult ok = wallets_->checkout(0, "u1", "o-9", 5000, coupon, 100, "k-9");
  EXPECT_FALSE(ok.replayed);
  EXPECT_EQ(balance("u1"), 900);
  expect_audit_ok();
}

TEST_P(CheckoutTest, CancelGivesBothBackExactlyOnce) {
  open();
  const int64_t coupon = issue_coupon("u1");
  wallets_->earn(0, "u1", 200, now_us() + 10 * kDayUs, "", "earn-soon");
  wallets_->earn(0, "u1", 500, std::nullopt, "", "earn-never");
  WalletResult co = wallets_->checkout(0, "u1", "order-1", 3000, coupon, 400, "co-1");
  EXPECT_EQ(balance("u1"), 300);

  WalletResult c = wallets_->cancel_checkout(0, "u1", "co-1", "cancel-1");
  EXPECT_EQ(c.points, 400);
  EXPECT_EQ(c.amount, 400);
  EXPECT_EQ(c.coupon_id, coupon);
  EXPECT_EQ(c.order_id, "order-1");
  EXPECT_EQ(c.coupon_state, static_cast<int>(CouponState::kIssued));
  EXPECT_EQ(balance("u1"), 700);
  // Exactly the drawn lots: the soon-expiring lot is whole again.
  WalletBalance b = wallets_->balance(0, "u1");
  EXPECT_EQ(b.next_expiry_amount, 200);
  EXPECT_EQ(engine_->get_coupon(0, coupon).state, CouponState::kIssued);

  EXPECT_TRUE(wallets_->cancel_checkout(0, "u1", "co-1", "cancel-1").replayed);
  EXPECT_EQ(code_of([&] { wallets_->cancel_checkout(0, "u1", "co-1", "cancel-2"); }), ErrorCode::kConflict);
  EXPECT_EQ(code_of([&] { wallets_->cancel_checkout(0, "u1", "nope", "cancel-3"); }), ErrorCode::kNotFound);
  EXPECT_EQ(code_of([&] { wallets_->cancel_checkout(0, "u1", "earn-never", "cancel-4"); }), ErrorCode::kInvalidArgument);
  EXPECT_EQ(code_of([&] { wallets_->cancel_checkout(0, "u2", "co-1", "cancel-5"); }), ErrorCode::kNotFound);
  EXPECT_EQ(balance("u1"), 700);

  // The coupon is usable again, by a new order.
  WalletResult again = wallets_->checkout(0, "u1", "order-2", 3000, coupon, 0, "co-2");
  EXPECT_EQ(again.discount_amount, 500);
  EXPECT_EQ(again.entry_id, 0);  // no points: no wallet entry
  EXPECT_EQ(again.payable_amount, 2500);
  EXPECT_NE(co.entry_id, again.entry_id);
  expect_audit_ok();
}

// By order id: the order's latest checkout (an order cancelled and checked out again has two
// records; the newer one is the live one). The by-key rules apply to it.
TEST_P(CheckoutTest, CancelByOrderIdCancelsTheOrdersLatestCheckout) {
  open();
  const int64_t coupon = issue_coupon("u1");
  wallets_->earn(0, "u1", 1000, std::nullopt, "", "earn-1");
  wallets_->checkout(0, "u1", "order-1", 3000, coupon, 300, "co-1");
  EXPECT_EQ(balance("u1"), 700);

  WalletResult c = wallets_->cancel_checkout_of_order(0, "u1", "order-1", "cx-1");
  EXPECT_EQ(c.points, 300);
  EXPECT_EQ(c.order_id, "order-1");
  EXPECT_EQ(c.coupon_id, coupon);
  EXPECT_EQ(c.coupon_state, static_cast<int>(CouponState::kIssued));
  EXPECT_EQ(balance("u1"), 1000);
  EXPECT_TRUE(wallets_->cancel_checkout_of_order(0, "u1", "order-1", "cx-1").replayed);
  // The same key naming the checkout by its key is other content.
  EXPECT_EQ(code_of([&] { wallets_->cancel_checkout(0, "u1", "co-1", "cx-1"); }), ErrorCode::kConflict);

  // The order checked out again: cancelling the order now means the new checkout.
  wallets_->checkout(0, "u1", "order-1", 3000, coupon, 100, "co-2");
  EXPECT_EQ(balance("u1"), 900);
  WalletResult c2 = wallets_->cancel_checkout_of_order(0, "u1", "order-1", "cx-2");
  EXPECT_EQ(c2.points, 100);
  EXPECT_EQ(balance("u1"), 1000);
  EXPECT_EQ(engine_->get_coupon(0, coupon).state, CouponState::kIssued);
  // Its latest checkout is cancelled already; other orders, users and partners: not found.
  const int64_t entries_before = entries();
  EXPECT_EQ(code_of([&] { wallets_->cancel_checkout_of_order(0, "u1", "order-1", "cx-3"); }), ErrorCode::kConflict);
  EXPECT_EQ(code_of([&] { wallets_->cancel_checkout_of_order(0, "u1", "order-9", "cx-4"); }), ErrorCode::kNotFound);
  wallets_->checkout(0, "u1", "order-2", 3000, coupon, 0, "co-3");
  wallets_->earn(0, "u2", 10, std::nullopt, "", "earn-u2");
  wallets_->earn(7, "u1", 10, std::nullopt, "", "earn-p7");
  const int64_t entries_now = entries();
  EXPECT_EQ(entries_now, entries_before + 2);
  EXPECT_EQ(code_of([&] { wallets_->cancel_checkout_of_order(0, "u2", "order-2", "cx-5"); }), ErrorCode::kNotFound);
  EXPECT_EQ(code_of([&] { wallets_->cancel_checkout_of_order(7, "u1", "order-2", "cx-6"); }), ErrorCode::kNotFound);
  EXPECT_EQ(engine_->get_coupon(0, coupon).state, CouponState::kUsed);
  // Bad input is refused before the queue: both names, neither, a bad order id.
  WalletOp both = WalletOp::cancel_checkout(0, "u1", "co-3", "cx-7");
  both.order_id = "order-2";
  EXPECT_EQ(code_of([&] { wallets_->apply(both); }), ErrorCode::kInvalidArgument);
  EXPECT_EQ(code_of([&] { wallets_->cancel_checkout_of_order(0, "u1", "", "cx-8"); }), ErrorCode::kInvalidArgument);
  EXPECT_EQ(code_of([&] { wallets_->cancel_checkout_of_order(0, "u1", "bad order", "cx-9"); }),
            ErrorCode::kInvalidArgument);
  EXPECT_EQ(entries(), entries_now);
  EXPECT_EQ(engine_->get_coupon(0, coupon).state, CouponState::kUsed);
  // And the order's checkout does cancel by its order id.
  EXPECT_EQ(wallets_->cancel_checkout_of_order(0, "u1", "order-2", "cx-10").coupon_state,
            static_cast<int>(CouponState::kIssued));
  expect_audit_ok();
}

// A checkout and the cancel of its order submitted back to back often share a batch: the
// cancel must find the checkout made earlier in its own batch (arrival order), not only the
// ones committed before.
TEST_P(CheckoutTest, CancelByOrderIdSeesACheckoutOfItsOwnBatch) {
  open();
  wallets_->earn(0, "u1", 1000, std::nullopt, "", "earn-1");
  constexpr int kOrders = 20;
  std::mutex mu;
  std::condition_variable cv;
  int left = 2 * kOrders;
  int cancelled = 0;
  std::vector<std::string> errors;
  for (int i = 0; i < kOrders; ++i) {
    const std::string order = "o-" + std::to_string(i);
    wallets_->submit(WalletOp::checkout(0, "u1", order, 1000, 0, 10, "co-" + order),
                     [&](WalletResult&&, std::exception_ptr err) {
                       std::lock_guard lock(mu);
                       if (err) errors.push_back(error_from(err).what());
                       if (--left == 0) cv.notify_all();
                     });
    wallets_->submit(WalletOp::cancel_checkout_of_order(0, "u1", order, "cx-" + order),
                     [&](WalletResult&& r, std::exception_ptr err) {
                       std::lock_guard lock(mu);
                       if (err) {
                         errors.push_back(error_from(err).what());
                       } else if (r.points == 10) {
                         ++cancelled;
                       }
                       if (--left == 0) cv.notify_all();
                     });
  }
  std::unique_lock lock(mu);
  cv.wait(lock, [&] { return left == 0; });
  EXPECT_TRUE(errors.empty()) << errors.front();
  EXPECT_EQ(cancelled, kOrders);
  EXPECT_EQ(balance("u1"), 1000);
  EXPECT_LT(wallets_->counters().batches, static_cast<uint64_t>(2 * kOrders + 1)) << "some pairs shared a batch";
  expect_audit_ok();
}

TEST_P(CheckoutTest, CancelAfterTheValidityPassedExpiresTheCoupon) {
  open();
  const int64_t coupon = issue_coupon("u1", 0, now_us() + 60'000'000);  // valid one more minute
  wallets_->earn(0, "u1", 100, std::nullopt, "", "earn-1");
  wallets_->checkout(0, "u1", "order-1", 3000, coupon, 100, "co-1");
  clock_offset_us_ = kDayUs;  // the wallet engine's clock: a day later
  WalletResult c = wallets_->cancel_checkout(0, "u1", "co-1", "cancel-1");
  EXPECT_EQ(c.coupon_state, static_cast<int>(CouponState::kExpired));
  EXPECT_EQ(balance("u1"), 100);
  expect_audit_ok();
}

TEST_P(CheckoutTest, CouponOnlyCheckoutNeedsNoWallet) {
  open();
  const int64_t coupon = issue_coupon("walletless");
  WalletResult r = wallets_->checkout(0, "walletless", "o-1", 4000, coupon, 0, "co-1");
  EXPECT_EQ(r.entry_id, 0);
  EXPECT_EQ(r.discount_amount, 500);
  EXPECT_EQ(r.payable_amount, 3500);
  EXPECT_EQ(code_of([&] { wallets_->checkout(0, "walletless", "o-2", 4000, 0, 10, "co-2"); }), ErrorCode::kNotFound);
  WalletResult c = wallets_->cancel_checkout(0, "walletless", "co-1", "cancel-1");
  EXPECT_EQ(c.entry_id, 0);
  EXPECT_EQ(c.coupon_state, static_cast<int>(CouponState::kIssued));
  EXPECT_EQ(code_of([&] { wallets_->cancel_checkout(0, "walletless", "co-1", "cancel-2"); }), ErrorCode::kConflict);
  expect_audit_ok();
}

// Many threads check out the same coupon (each its own order and key) while others use it
// directly: exactly one wins, and the points are charged only if a checkout won, once.
TEST_P(CheckoutTest, ConcurrentCheckoutsOfOneCouponOneWinsPointsChargedOnce) {
  open();
  WalletOptions w;
  w.committers = 4;
  for (int round = 0; round < 3; ++round) {
    const std::string user = "hot-" + std::to_string(round);
    const int64_t coupon = issue_coupon(user);
    wallets_->earn(0, user, 10'000, std::nullopt, "", "earn-" + user);
    constexpr int kThreads = 24;
    std::atomic<int> checkouts_won{0}, uses_won{0}, conflicts{0}, other{0};
    std::vector<std::thread> threads;
    for (int t = 0; t < kThreads; ++t) {
      threads.emplace_back([&, t] {
        const std::string order = "o-" + std::to_string(t);
        try {
          if (t % 6 == 5) {
            engine_->use_coupon(0, UseRequest{coupon, user, order, 5000});
            uses_won++;
          } else {
            wallets_->checkout(0, user, order, 5000, coupon, 250, user + "-k-" + std::to_string(t));
            checkouts_won++;
          }
        } catch (const Error& e) {
          (e.code() == ErrorCode::kConflict ? conflicts : other)++;
        }
      });
    }
    for (auto& th : threads) th.join();
    EXPECT_EQ(checkouts_won + uses_won, 1) << "round " << round;
    EXPECT_EQ(conflicts, kThreads - 1);
    EXPECT_EQ(other, 0);
    EXPECT_EQ(balance(user), 10'000 - 250 * checkouts_won.load());
    EXPECT_EQ(engine_->get_coupon(0, coupon).state, CouponState::kUsed);
  }
  expect_audit_ok();
}

// Production: a coupon whose grant is still in the grant log is kUnavailable (retry), and the
// points are untouched.
// Many threads on two wallet engines cancel one checkout at once, by its order id and by its
// key, each under its own key: exactly one cancel wins, the coupon and the points come back once.
TEST_P(CheckoutTest, ConcurrentCancelsOfOneOrderOneWins) {
  open();
  WalletOptions w;
  w.clock_us = [this] { return now_us() + clock_offset_us_.load(); };
  std::unique_ptr<WalletEngine> second = storage_->open(w);
  for (int round = 0; round < 3; ++round) {
    const std::string user = "cx-" + std::to_string(round);
    const std::string order = "order-" + std::to_string(round);
    const int64_t coupon = issue_coupon(user);
    wallets_->earn(0, user, 10'000, std::nullopt, "", "earn-" + user);
    wallets_->checkout(0, user, order, 5000, coupon, 250, "co-" + user);
    constexpr int kThreads = 16;
    std::atomic<int> won{0}, conflicts{0}, other{0};
    std::vector<std::thread> threads;
    for (int t = 0; t < kThreads; ++t) {
      threads.emplace_back([&, t] {
        WalletEngine& e = t % 2 ? *second : *wallets_;
        const std::string key = user + "-cancel-" + std::to_string(t);
        try {
          if (t % 4 == 3) {
            e.cancel_checkout(0, user, "co-" + user, key);
          } else {
            e.cancel_checkout_of_order(0, user, order, key);
          }
          won++;
        } catch (const Error& err) {
          (err.code() == ErrorCode::kConflict ? conflicts : other)++;
        }
      });
    }
    for (auto& th : threads) th.join();
    EXPECT_EQ(won, 1) << "round " << round;
    EXPECT_EQ(conflicts, kThreads - 1);
    EXPECT_EQ(other, 0);
    EXPECT_EQ(balance(user), 10'000);
    EXPECT_EQ(engine_->get_coupon(0, coupon).state, CouponState::kIssued);
  }
  expect_audit_ok();
}

TEST_P(CheckoutTest, ProductionGrantNotYetInPostgresIsUnavailable) {
  if (embedded()) GTEST_SKIP() << "embedded grants are committed before ISSUED is answered";
  open(/*writer_threads=*/0);
  CampaignSpec s;
  s.name = "drop";
  s.quantity = 10;
  s.discount_kind = DiscountKind::kFixed;
  s.discount_value = 500;
  Campaign camp = engine_->create_campaign(s);
  IssueResult r = engine_->issue(camp.id, IssueRequest{"u1", ""});
  ASSERT_EQ(r.status, IssueStatus::kIssued);
  wallets_->earn(0, "u1", 1000, std::nullopt, "", "earn-1");
  EXPECT_EQ(code_of([&] { wallets_->checkout(0, "u1", "o-1", 5000, r.coupon_id, 100, "co-1"); }), ErrorCode::kUnavailable);
  // Another partner asking about the same coupon learns nothing: kNotFound.
  wallets_->earn(3, "u1", 1000, std::nullopt, "", "earn-3");
  EXPECT_EQ(code_of([&] { wallets_->checkout(3, "u1", "o-1", 5000, r.coupon_id, 100, "co-1"); }), ErrorCode::kNotFound);
  EXPECT_EQ(balance("u1"), 1000);
  expect_audit_ok();
}

// Free text the API stores (campaign and partner names, an earn's reason) with control or
// invisible format characters is kInvalidArgument on both deployments, and nothing is written.
TEST_P(CheckoutTest, NamesWithControlOrFormatCharactersAreRefusedAndChangeNothing) {
  open();
  const std::vector<std::string> bad = {
      std::string("nul\0x", 5), "new\nline", "tab\there", "esc\x1b[31m", "del\x7f",
      "c1 \xc2\x85 nel", "c1 \xc2\x9b csi", "rlo \xe2\x80\xae gnp.exe", "lre \xe2\x80\xaa",
      "lri \xe2\x81\xa6", "pdi \xe2\x81\xa9", "zwsp\xe2\x80\x8b", "bom\xef\xbb\xbf",
      "ls\xe2\x80\xa8", "rlm\xe2\x80\x8f", "tag\xf3\xa0\x80\x81", "\xff\xfe not utf-8"};
  for (const std::string& name : bad) {
    CampaignSpec s;
    s.name = name;
    s.quantity = 5;
    EXPECT_EQ(code_of([&] { engine_->create_campaign(s); }), ErrorCode::kInvalidArgument) << name;
    EXPECT_EQ(code_of([&] { engine_->create_partner(name); }), ErrorCode::kInvalidArgument) << name;
    EXPECT_EQ(code_of([&] { wallets_->earn(0, "textuser", 5, std::nullopt, name, "k-text"); }),
              ErrorCode::kInvalidArgument) << name;
  }
  EXPECT_TRUE(engine_->list_campaigns(0).empty());
  EXPECT_TRUE(engine_->list_partners(0, 100).empty());
  EXPECT_EQ(storage_->scalar("SELECT count(*) FROM wallets"), 0);
  EXPECT_EQ(entries(), 0);
  // Ordinary text, other scripts and emoji (with their joiners) are fine.
  for (const std::string& name : {std::string("Caf\xc3\xa9 10% off"), std::string("\xe6\x98\xa5\xe3\x82\xbb\xe3\x83\xbc\xe3\x83\xab"),
                                  std::string("family \xf0\x9f\x91\xa8\xe2\x80\x8d\xf0\x9f\x91\xa9")}) {
    CampaignSpec s;
    s.name = name;
    s.quantity = 5;
    EXPECT_EQ(engine_->create_campaign(s).spec.name, name);
    EXPECT_EQ(engine_->create_partner(name).partner.name, name);
  }
  wallets_->earn(0, "textuser", 5, std::nullopt, "caf\xc3\xa9", "k-ok");
  EXPECT_EQ(balance("textuser"), 5);
}

INSTANTIATE_TEST_SUITE_P(Deployments, CheckoutTest, ::testing::Values("embedded", "postgres"),
                         [](const auto& info) { return info.param; });

}  // namespace
