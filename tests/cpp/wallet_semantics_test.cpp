// The wallet engine's semantics, operation by operation, on both stores (SQLite file and
// PostgreSQL schema): earn, first-expiring-first use, exact cancel restore (also into lots that
// expired meanwhile), expiry job and expiry on touch, transfer with expiry dates kept,
// idempotency (retry = first answer, other content = kConflict), history pages, bad input
// refused with nothing changed, one failing operation failing alone inside a batch, reopen.
// After each test the store's invariants are audited.
#include <gtest/gtest.h>

#include <condition_variable>
#include <mutex>
#include <thread>

#include "couponcore/limits.hpp"
#include "wallet_test_util.hpp"

using namespace couponcore;
using testutil::expect_error;
using testutil::kDayUs;
using testutil::kHourUs;

namespace {

constexpr int64_t kPartner = 7;

class WalletTest : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    storage_ = std::make_unique<testutil::WalletStorage>(GetParam());
    e_ = open();
  }
  void TearDown() override {
    if (e_ && !e_->closed()) testutil::expect_audit_ok(*e_);
    e_.reset();
    storage_.reset();
  }
  std::unique_ptr<WalletEngine> open() {
    WalletOptions o;
    o.clock_us = clock_.fn();
    o.retry_budget_ms = 20'000;
    return storage_->open(o);
  }
  std::string key() { return "k" + std::to_string(++keys_); }
  WalletResult earn(const std::string& user, int64_t amount, std::optional<int64_t> expires = std::nullopt) {
    return e_->earn(kPartner, user, amount, expires, "test", key());
  }
  int64_t balance(const std::string& user) { return e_->balance(kPartner, user).total; }
  // (lot amount, drawn) for each lot an entry drew from, in lot order.
  std::vector<std::vector<int64_t>> draws_of(int64_t entry_id) {
    return storage_->rows("SELECT l.amount, d.amount FROM wallet_draws d JOIN wallet_lots l ON l.id = d.lot_id"
                          " WHERE d.entry_id = " + std::to_string(entry_id) + " ORDER BY l.id", 2);
  }
  std::vector<std::vector<int64_t>> lots_of(const std::string& user) {
    return storage_->rows("SELECT l.amount, l.remaining FROM wallet_lots l JOIN wallets w ON w.id = l.wallet_id"
                          " WHERE w.user_id = '" + user + "' ORDER BY l.id", 2);
  }

  testutil::TestClock clock_;
  std::unique_ptr<testutil::WalletStorage> storage_;
  std::unique_ptr<WalletEngine> e_;
  int keys_ = 0;
};

TEST_P(WalletTest, EarnAddsALotAndTheBalance) {
  WalletResult r = earn("alice", 100);
  EXPECT_GT(r.entry_id, 0);
  EXPECT_EQ(r.amount, 100);
  EXPECT_EQ(r.balance_after, 100);
  EXPECT_FALSE(r.replayed);
  WalletResult r2 = earn("alice", 50, clock_.now() + kDayUs);
  EXPECT_GT(r2.entry_id, r.entry_id);
  EXPECT_EQ(r2.balance_after, 150);
  WalletBalance b = e_->balance(kPartner, "alice");
  EXPECT_EQ(b.total, 150);
  EXPECT_EQ(b.next_expiry_amount, 50);
  ASSERT_TRUE(b.next_expiry_at_us);
  EXPECT_EQ(lots_of("alice"), (std::vector<std::vector<int64_t>>{{100, 100}, {50, 50}}));
}

TEST_P(WalletTest, UseDrawsFirstExpiringFirstAndLotsWithoutExpiryLast) {
  const int64_t t = clock_.now();
  earn("bob", 100, t + 3 * kDayUs);  // A
  earn("bob", 50, t + 1 * kDayUs);   // B
  earn("bob", 70);                   // C: no expiry
  earn("bob", 30, t + 1 * kDayUs);   // D: same date as B, younger
  WalletResult u = e_->use(kPartner, "bob", 170, "order-1", key());
  EXPECT_EQ(u.amount, -170);
  EXPECT_EQ(u.balance_after, 80);
  // B and D (the earliest date, older first), then 90 of A; C untouched.
  EXPECT_EQ(draws_of(u.entry_id), (std::vector<std::vector<int64_t>>{{100, 90}, {50, 50}, {30, 30}}));
  WalletBalance b = e_->balance(kPartner, "bob");
  EXPECT_EQ(b.total, 80);
  EXPECT_EQ(b.next_expiry_amount, 10);
  EXPECT_EQ(b.next_expiry_at_us, t + 3 * kDayUs);
  WalletResult u2 = e_->use(kPartner, "bob", 20, "", key());
  EXPECT_EQ(draws_of(u2.entry_id), (std::vector<std::vector<int64_t>>{{100, 10}, {70, 10}}));
}

TEST_P(WalletTest, InsufficientPointsChangeNothingAndTheKeyStaysFree) {
  earn("carol", 40);
  const std::string k = key();
  expect_error(ErrorCode::kInsufficientFunds, [&] { e_->use(kPartner, "carol", 41, "o", k); });
  EXPECT_EQ(balance("carol"), 40);
  EXPECT_EQ(e_->history(kPartner, "carol", 0, 10).entries.size(), 1u);
  // A failed operation records nothing: the same key is decided afresh later.
  earn("carol", 1);
  WalletResult r = e_->use(kPartner, "carol", 41, "o", k);
  EXPECT_EQ(r.balance_after, 0);
  EXPECT_FALSE(r.replayed);
}

TEST_P(WalletTest, CancelRestoresExactlyTheDrawnLots) {
  const int64_t t = clock_.now();
  earn("dave", 100, t + 3 * kDayUs);
  earn("dave", 50, t + kDayUs);
  earn("dave", 70);
  WalletResult u = e_->use(kPartner, "dave", 160, "order-9", "use-9");
  EXPECT_EQ(lots_of("dave"), (std::vector<std::vector<int64_t>>{{100, 0}, {50, 0}, {70, 60}}));
  e_->use(kPartner, "dave", 5, "order-10", key());  // a later use keeps its own draw
  WalletResult c = e_->cancel(kPartner, "dave", u.entry_id, "cancel-9");
  EXPECT_EQ(c.amount, 160);
  EXPECT_EQ(c.expired_amount, 0);
  EXPECT_EQ(c.balance_after, 215);
  EXPECT_EQ(lots_of("dave"), (std::vector<std::vector<int64_t>>{{100, 100}, {50, 50}, {70, 65}}));
  WalletBalance b = e_->balance(kPartner, "dave");
  EXPECT_EQ(b.next_expiry_amount, 50);
  EXPECT_EQ(b.next_expiry_at_us, t + kDayUs);
  // The restored lots are drawn again first-expiring-first.
  WalletResult u2 = e_->use(kPartner, "dave", 60, "", key());
  EXPECT_EQ(draws_of(u2.entry_id), (std::vector<std::vector<int64_t>>{{100, 10}, {50, 50}}));
}

TEST_P(WalletTest, CancelByTheUsesKeyOnceThenConflictOrReplay) {
  earn("erin", 100);
  WalletResult u = e_->use(kPartner, "erin", 30, "o1", "use-o1");
  WalletResult c = e_->cancel_by_key(kPartner, "erin", "use-o1", "cancel-o1");
  EXPECT_EQ(c.amount, 30);
  EXPECT_EQ(c.balance_after, 100);
  WalletResult again = e_->cancel_by_key(kPartner, "erin", "use-o1", "cancel-o1");
  EXPECT_TRUE(again.replayed);
  EXPECT_EQ(again.entry_id, c.entry_id);
  expect_error(ErrorCode::kConflict, [&] { e_->cancel(kPartner, "erin", u.entry_id, "cancel-o1-b"); });
  expect_error(ErrorCode::kNotFound, [&] { e_->cancel_by_key(kPartner, "erin", "no-such-use", key()); });
  WalletResult earned = earn("erin", 5);
  expect_error(ErrorCode::kInvalidArgument, [&] { e_->cancel(kPartner, "erin", earned.entry_id, key()); });
  earn("frank", 10);
  expect_error(ErrorCode::kNotFound, [&] { e_->cancel(kPartner, "frank", u.entry_id, key()); });
  EXPECT_EQ(balance("erin"), 105);
  auto h = e_->history(kPartner, "erin", 0, 10).entries;
  ASSERT_GE(h.size(), 3u);
  EXPECT_EQ(h[1].kind, WalletEntryKind::kCancel);
  EXPECT_EQ(h[1].ref_entry_id, u.entry_id);
}

TEST_P(WalletTest, CancelAfterTheLotExpiredRestoresItAsExpired) {
  earn("gina", 100, clock_.now() + kHourUs);
  earn("gina", 50);
  WalletResult u = e_->use(kPartner, "gina", 120, "o", key());
  EXPECT_EQ(u.balance_after, 30);
  clock_.advance_us(2 * kHourUs);
  WalletResult c = e_->cancel(kPartner, "gina", u.entry_id, key());
  EXPECT_EQ(c.amount, 120);
  EXPECT_EQ(c.expired_amount, 100);
  EXPECT_EQ(c.balance_after, 50);
  EXPECT_EQ(balance("gina"), 50);
  auto h = e_->history(kPartner, "gina", 0, 10).entries;
  ASSERT_GE(h.size(), 2u);
  EXPECT_EQ(h[0].kind, WalletEntryKind::kExpire);
  EXPECT_EQ(h[0].amount, -100);
  EXPECT_EQ(h[0].ref_entry_id, c.entry_id);
  EXPECT_EQ(h[0].balance_after, 50);
  EXPECT_EQ(h[1].kind, WalletEntryKind::kCancel);
  EXPECT_EQ(h[1].balance_after, 150);
  EXPECT_EQ(lots_of("gina"), (std::vector<std::vector<int64_t>>{{100, 0}, {50, 50}}));
}

TEST_P(WalletTest, PointsPastTheirDateAreNotUsableAndAreWrittenOffOnTouch) {
  earn("hank", 100, clock_.now() + kHourUs);
  earn("hank", 10);
  clock_.advance_us(kHourUs);
  EXPECT_EQ(balance("hank"), 10);  // excluded before any write-off
  expect_error(ErrorCode::kInsufficientFunds, [&] { e_->use(kPartner, "hank", 11, "", key()); });
  auto h = e_->history(kPartner, "hank", 0, 10).entries;
  ASSERT_EQ(h.size(), 3u);  // the touch wrote the expiry off
  EXPECT_EQ(h[0].kind, WalletEntryKind::kExpire);
  EXPECT_EQ(h[0].amount, -100);
  EXPECT_EQ(h[0].idempotency_key, "");
  EXPECT_EQ(e_->use(kPartner, "hank", 10, "", key()).balance_after, 0);
}

TEST_P(WalletTest, ExpireJobWritesOffInChunksAndIsResumable) {
  const int64_t due = clock_.now() + kHourUs;
  for (int i = 0; i < 25; ++i) {
    earn("u" + std::to_string(i), 10 + i, due);
    earn("u" + std::to_string(i), 5);  // stays
  }
  earn("later", 10, due + kDayUs);
  WalletExpireReport none = e_->expire(clock_.now(), 10);
  EXPECT_EQ(none.wallets, 0);
  WalletExpireReport r = e_->expire(due, 10);
  EXPECT_EQ(r.wallets, 25);
  EXPECT_EQ(r.points, 25 * 10 + (24 * 25) / 2);
  EXPECT_EQ(r.chunks, 3);
  for (int i = 0; i < 25; ++i) EXPECT_EQ(e_->history(kPartner, "u" + std::to_string(i), 0, 1).entries[0].kind,
                                         WalletEntryKind::kExpire);
  EXPECT_EQ(e_->expire(due, 10).wallets, 0);  // nothing left: a rerun after a crash is safe
  clock_.advance_us(kHourUs);
  EXPECT_EQ(balance("u3"), 5);
  EXPECT_EQ(balance("later"), 10);
  expect_error(ErrorCode::kInvalidArgument, [&] { e_->expire(due, 0); });
}

TEST_P(WalletTest, TransferMovesPointsWithTheirDates) {
  const int64_t d1 = clock_.now() + kDayUs;
  earn("ivy", 60, d1);
  earn("ivy", 40);
  WalletResult t = e_->transfer(kPartner, "ivy", "jack", 80, key());  // jack is created
  EXPECT_EQ(t.amount, -80);
  EXPECT_EQ(t.balance_after, 20);
  EXPECT_GT(t.peer_entry_id, 0);
  EXPECT_EQ(balance("ivy"), 20);
  WalletBalance j = e_->balance(kPartner, "jack");
  EXPECT_EQ(j.total, 80);
  EXPECT_EQ(j.next_expiry_amount, 60);
  EXPECT_EQ(j.next_expiry_at_us, d1);
  auto jh = e_->history(kPartner, "jack", 0, 10).entries;
  ASSERT_EQ(jh.size(), 1u);
  EXPECT_EQ(jh[0].kind, WalletEntryKind::kTransferIn);
  EXPECT_EQ(jh[0].id, t.peer_entry_id);
  EXPECT_EQ(jh[0].ref_entry_id, t.entry_id);
  expect_error(ErrorCode::kInsufficientFunds, [&] { e_->transfer(kPartner, "ivy", "jack", 21, key()); });
  expect_error(ErrorCode::kNotFound, [&] { e_->transfer(kPartner, "nobody", "jack", 1, key()); });
  expect_error(ErrorCode::kInvalidArgument, [&] { e_->transfer(kPartner, "jack", "jack", 1, key()); });
  // Back the other way.
  e_->transfer(kPartner, "jack", "ivy", 80, key());
  EXPECT_EQ(balance("ivy"), 100);
  EXPECT_EQ(balance("jack"), 0);
  EXPECT_EQ(e_->balance(kPartner, "ivy").next_expiry_amount, 60);
}

TEST_P(WalletTest, SameKeyReturnsTheFirstAnswerOtherContentIsConflict) {
  WalletResult a = e_->earn(kPartner, "kim", 100, std::nullopt, "signup", "bonus-1");
  WalletResult b = e_->earn(kPartner, "kim", 100, std::nullopt, "signup", "bonus-1");
  EXPECT_TRUE(b.replayed);
  EXPECT_EQ(b.entry_id, a.entry_id);
  EXPECT_EQ(b.balance_after, a.balance_after);
  EXPECT_EQ(b.created_at_us, a.created_at_us);
  EXPECT_EQ(balance("kim"), 100);
  expect_error(ErrorCode::kConflict, [&] { e_->earn(kPartner, "kim", 101, std::nullopt, "signup", "bonus-1"); });
  expect_error(ErrorCode::kConflict, [&] { e_->earn(kPartner, "kim", 100, std::nullopt, "other", "bonus-1"); });
  expect_error(ErrorCode::kConflict, [&] { e_->earn(kPartner, "lee", 100, std::nullopt, "signup", "bonus-1"); });
  expect_error(ErrorCode::kConflict, [&] { e_->use(kPartner, "kim", 100, "", "bonus-1"); });
  // Keys are per partner.
  WalletResult other = e_->earn(kPartner + 1, "kim", 5, std::nullopt, "", "bonus-1");
  EXPECT_FALSE(other.replayed);
  EXPECT_EQ(e_->balance(kPartner + 1, "kim").total, 5);
  // A use and a transfer replay too.
  WalletResult u1 = e_->use(kPartner, "kim", 10, "o", "use-1");
  WalletResult u2 = e_->use(kPartner, "kim", 10, "o", "use-1");
  EXPECT_EQ(u2.entry_id, u1.entry_id);
  WalletResult t1 = e_->transfer(kPartner, "kim", "lee", 10, "tr-1");
  WalletResult t2 = e_->transfer(kPartner, "kim", "lee", 10, "tr-1");
  EXPECT_TRUE(t2.replayed);
  EXPECT_EQ(t2.peer_entry_id, t1.peer_entry_id);
  EXPECT_EQ(balance("kim"), 80);
  EXPECT_EQ(balance("lee"), 10);
  testutil::expect_audit_ok(*e_, kPartner + 1);
}

TEST_P(WalletTest, SameKeyTwiceInOneBatchIsOneOperation) {
  std::mutex mu;
  std::condition_variable cv;
  std::vector<WalletResult> results;
  int left = 40;
  for (int i = 0; i < 40; ++i) {
    e_->submit(WalletOp::earn(kPartner, "mia", 10, std::nullopt, "", "same-" + std::to_string(i % 4)),
               [&](WalletResult&& r, std::exception_ptr err) {
                 std::lock_guard lock(mu);
                 EXPECT_FALSE(err);
                 results.push_back(r);
                 if (--left == 0) cv.notify_all();
               });
  }
  std::unique_lock lock(mu);
  cv.wait(lock, [&] { return left == 0; });
  EXPECT_EQ(balance("mia"), 40);
  int fresh = 0;
  for (const WalletResult& r : results) fresh += r.replayed ? 0 : 1;
  EXPECT_EQ(fresh, 4);
}

TEST_P(WalletTest, OneFailingOperationFailsAloneInsideABatch) {
  earn("nia", 10);
  std::mutex mu;
  std::condition_variable cv;
  int left = 0;
  int ok = 0;
  int insufficient = 0;
  for (int i = 0; i < 30; ++i) {
    WalletOp op = i % 3 == 0 ? WalletOp::use(kPartner, "nia", 1000, "", key())
                             : WalletOp::earn(kPartner, "nia", 1, std::nullopt, "", key());
    {
      std::lock_guard lock(mu);
      ++left;
    }
    e_->submit(std::move(op), [&](WalletResult&&, std::exception_ptr err) {
      std::lock_guard lock(mu);
      if (!err) {
        ++ok;
      } else {
        try {
          std::rethrow_exception(err);
        } catch (const Error& e) {
          EXPECT_EQ(e.code(), ErrorCode::kInsufficientFunds);
          ++insufficient;
        }
      }
      if (--left == 0) cv.notify_all();
    });
  }
  std::unique_lock lock(mu);
  cv.wait(lock, [&] { return left == 0; });
  EXPECT_EQ(ok, 20);
  EXPECT_EQ(insufficient, 10);
  EXPECT_EQ(balance("nia"), 30);
  EXPECT_LT(e_->counters().batches, 30u + 1u);
}

TEST_P(WalletTest, HistoryPagesNewestFirst) {
  for (int i = 1; i <= 25; ++i) earn("olga", i);
  std::vector<WalletEntry> all;
  int64_t cursor = 0;
  int pages = 0;
  do {
    WalletHistoryPage p = e_->history(kPartner, "olga", cursor, 10);
    all.insert(all.end(), p.entries.begin(), p.entries.end());
    cursor = p.next_cursor;
    ++pages;
  } while (cursor != 0 && pages < 10);
  ASSERT_EQ(all.size(), 25u);
  EXPECT_EQ(pages, 3);
  for (std::size_t i = 0; i < all.size(); ++i) {
    EXPECT_EQ(all[i].amount, static_cast<int64_t>(25 - i));
    if (i) {
      EXPECT_LT(all[i].id, all[i - 1].id);
      EXPECT_EQ(all[i].balance_after, all[i - 1].balance_after - all[i - 1].amount);
    }
  }
  EXPECT_EQ(all[0].reason, "test");
  expect_error(ErrorCode::kInvalidArgument, [&] { e_->history(kPartner, "olga", 0, 0); });
  expect_error(ErrorCode::kInvalidArgument, [&] { e_->history(kPartner, "olga", 0, limits::kWalletHistoryLimitMax + 1); });
  expect_error(ErrorCode::kNotFound, [&] { e_->history(kPartner, "nobody", 0, 10); });
}

TEST_P(WalletTest, BadInputIsRefusedAndChangesNothing) {
  earn("pat", 100);
  const int64_t t = clock_.now();
  using E = ErrorCode;
  expect_error(E::kInvalidArgument, [&] { e_->earn(kPartner, "pat", 0, std::nullopt, "", key()); }, "zero");
  expect_error(E::kInvalidArgument, [&] { e_->earn(kPartner, "pat", -5, std::nullopt, "", key()); }, "negative");
  expect_error(E::kInvalidArgument, [&] { e_->earn(kPartner, "pat", limits::kAmountMax + 1, std::nullopt, "", key()); });
  expect_error(E::kInvalidArgument, [&] { e_->use(kPartner, "pat", INT64_MIN, "", key()); });
  expect_error(E::kInvalidArgument, [&] { e_->transfer(kPartner, "pat", "quinn", 0, key()); });
  expect_error(E::kInvalidArgument, [&] { e_->earn(kPartner, "pat", 5, t - 1, "", key()); }, "past expiry");
  expect_error(E::kInvalidArgument, [&] { e_->earn(kPartner, "", 5, std::nullopt, "", key()); });
  expect_error(E::kInvalidArgument, [&] { e_->earn(kPartner, "bad user", 5, std::nullopt, "", key()); });
  expect_error(E::kInvalidArgument, [&] { e_->earn(kPartner, std::string(129, 'a'), 5, std::nullopt, "", key()); });
  expect_error(E::kInvalidArgument, [&] { e_->earn(kPartner, "pat", 5, std::nullopt, "", ""); }, "no key");
  expect_error(E::kInvalidArgument, [&] { e_->earn(kPartner, "pat", 5, std::nullopt, "", "k'; DROP"); });
  expect_error(E::kInvalidArgument, [&] { e_->earn(kPartner, "pat", 5, std::nullopt, std::string(201, 'r'), key()); });
  expect_error(E::kInvalidArgument, [&] { e_->earn(kPartner, "pat", 5, std::nullopt, "bell\x07", key()); });
  expect_error(E::kInvalidArgument, [&] { e_->earn(kPartner, "pat", 5, std::nullopt, "\xff\xfe", key()); });
  expect_error(E::kInvalidArgument, [&] { e_->earn(-1, "pat", 5, std::nullopt, "", key()); });
  expect_error(E::kInvalidArgument, [&] { e_->use(kPartner, "pat", 5, "order id", key()); });
  expect_error(E::kInvalidArgument, [&] { e_->cancel(kPartner, "pat", 0, key()); });
  WalletOp both = WalletOp::cancel_entry(kPartner, "pat", 5, key());
  both.cancel_key = "x";
  expect_error(E::kInvalidArgument, [&] { e_->apply(both); });
  WalletOp stray = WalletOp::use(kPartner, "pat", 5, "", key());
  stray.to_user_id = "quinn";
  expect_error(E::kInvalidArgument, [&] { e_->apply(stray); });
  // Unknown wallets and other partners' wallets are not found.
  expect_error(E::kNotFound, [&] { e_->use(kPartner, "nobody", 5, "", key()); });
  expect_error(E::kNotFound, [&] { e_->use(kPartner + 1, "pat", 5, "", key()); });
  expect_error(E::kNotFound, [&] { e_->balance(kPartner + 1, "pat"); });
  // The balance limit.
  e_->earn(kPartner, "rich", limits::kAmountMax, std::nullopt, "", key());
  EXPECT_EQ(balance("rich"), limits::kAmountMax);
  expect_error(E::kInvalidArgument, [&] { e_->balance(kPartner, "bad user"); });
  // Nothing changed.
  EXPECT_EQ(balance("pat"), 100);
  EXPECT_EQ(e_->history(kPartner, "pat", 0, 10).entries.size(), 1u);
  EXPECT_EQ(storage_->scalar("SELECT count(*) FROM wallets"), 2);
}

// A refused earn or transfer leaves no wallet row for the wallet it would have created (the
// batch creates the wallets of earns and transfer destinations before it takes its locks).
TEST_P(WalletTest, RefusedOperationsCreateNoWalletRows) {
  using E = ErrorCode;
  auto rows_of = [&](const std::string& user) {
    return storage_->scalar("SELECT count(*) FROM wallets WHERE user_id = '" + user + "'");
  };
  earn("sam", 10);
  const std::string used = key();
  e_->use(kPartner, "sam", 1, "", used);
  // Transfer from a wallet that does not exist; transfer of more than the source holds.
  expect_error(E::kNotFound, [&] { e_->transfer(kPartner, "nobody", "dest1", 5, key()); });
  expect_error(E::kInsufficientFunds, [&] { e_->transfer(kPartner, "sam", "dest2", 50, key()); });
  // A key used before for something else: kConflict, for an earn and for a transfer.
  expect_error(E::kConflict, [&] { e_->earn(kPartner, "dest3", 5, std::nullopt, "", used); });
  expect_error(E::kConflict, [&] { e_->transfer(kPartner, "sam", "dest4", 5, used); });
  // Several refused operations in one batch, one of them naming the same new wallet twice.
  std::mutex mu;
  std::condition_variable cv;
  int left = 0;
  for (int i = 0; i < 20; ++i) {
    WalletOp op = WalletOp::transfer(kPartner, "sam", i % 2 ? "dest5" : "dest6", 1000, key());
    {
      std::lock_guard lock(mu);
      ++left;
    }
    e_->submit(std::move(op), [&](WalletResult&&, std::exception_ptr err) {
      std::lock_guard lock(mu);
      EXPECT_TRUE(err);
      if (--left == 0) cv.notify_all();
    });
  }
  {
    std::unique_lock lock(mu);
    cv.wait(lock, [&] { return left == 0; });
  }
  for (const char* u : {"nobody", "dest1", "dest2", "dest3", "dest4", "dest5", "dest6"}) {
    EXPECT_EQ(rows_of(u), 0) << u;
  }
  EXPECT_EQ(storage_->scalar("SELECT count(*) FROM wallets"), 1);
  EXPECT_EQ(balance("sam"), 9);
  // A refused transfer to an existing wallet whose balance is 0 keeps it (and its history),
  // also when the engine does not know it yet (a fresh engine creates it "when missing").
  e_->transfer(kPartner, "sam", "zoe", 2, key());
  e_->use(kPartner, "zoe", 2, "", key());
  e_->close();
  e_ = open();
  expect_error(E::kInsufficientFunds, [&] { e_->transfer(kPartner, "sam", "zoe", 500, key()); });
  EXPECT_EQ(rows_of("zoe"), 1);
  EXPECT_EQ(e_->history(kPartner, "zoe", 0, 10).entries.size(), 2u);
  // The wallet appears once an operation on it succeeds, also after a refused one.
  WalletResult t = e_->transfer(kPartner, "sam", "dest2", 3, key());
  EXPECT_EQ(t.balance_after, 4);
  EXPECT_EQ(balance("dest2"), 3);
  EXPECT_EQ(rows_of("dest2"), 1);
  e_->earn(kPartner, "dest3", 5, std::nullopt, "", key());
  EXPECT_EQ(balance("dest3"), 5);
}

TEST_P(WalletTest, ReopenKeepsBalancesAndIdempotency) {
  const int64_t d = clock_.now() + kDayUs;
  WalletResult a = e_->earn(kPartner, "ron", 70, d, "", "keep-1");
  e_->use(kPartner, "ron", 20, "", "keep-2");
  e_->close();
  expect_error(ErrorCode::kClosed, [&] { e_->earn(kPartner, "ron", 1, std::nullopt, "", key()); });
  e_ = open();
  EXPECT_EQ(balance("ron"), 50);
  WalletResult again = e_->earn(kPartner, "ron", 70, d, "", "keep-1");
  EXPECT_TRUE(again.replayed);
  EXPECT_EQ(again.entry_id, a.entry_id);
  EXPECT_EQ(again.balance_after, 70);
  expect_error(ErrorCode::kConflict, [&] { e_->earn(kPartner, "ron", 70, d + 1, "", "keep-1"); });
  WalletResult u = e_->use(kPartner, "ron", 20, "", "keep-2");
  EXPECT_TRUE(u.replayed);
  EXPECT_EQ(u.balance_after, 50);
  EXPECT_EQ(balance("ron"), 50);
}

TEST_P(WalletTest, CountersAndConcurrentCallersShareBatches) {
  constexpr int kThreads = 16;
  constexpr int kPerThread = 40;
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < kPerThread; ++i) {
        e_->earn(kPartner, "shared", 1, std::nullopt, "", "c-" + std::to_string(t) + "-" + std::to_string(i));
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(balance("shared"), kThreads * kPerThread);
  WalletCounters k = e_->counters();
  EXPECT_EQ(k.ops, static_cast<uint64_t>(kThreads * kPerThread));
  EXPECT_LT(k.batches, k.ops);
  EXPECT_GT(k.max_batch_ops, 1u);
}

INSTANTIATE_TEST_SUITE_P(Stores, WalletTest, ::testing::Values("embedded", "postgres"),
                         [](const auto& info) { return info.param; });

}  // namespace
