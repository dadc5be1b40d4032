// The wallet engine under real concurrency, on both stores: two engine instances on one
// database (as two processes would be), many threads doing random earn / use / cancel /
// transfer / retry on a few hot and many cold wallets, including transfers in both directions
// between the same two wallets at once. No error other than a business error may reach a
// caller (no deadlock, no serialization failure, no lost batch), and afterwards:
//   - every wallet's balance equals its start plus the acknowledged operations' amounts
//     (nothing acknowledged was lost, nothing unacknowledged was applied, retries counted once)
//   - the audit holds: balance == sum of remaining lots == sum of ledger entries, never
//     negative, running balances replay, every draw and lot accounted for.
// A second test SIGKILLs a child process mid-stream and checks that everything it
// acknowledged is in the store.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <condition_variable>
#include <filesystem>
#include <map>
#include <mutex>
#include <random>
#include <thread>

#include "wallet_test_util.hpp"

using namespace couponcore;

namespace {

constexpr int64_t kPartner = 11;

struct Ledger {
  std::mutex mu;
  std::map<std::string, int64_t> delta;
  void add(const std::string& user, int64_t amount) {
    std::lock_guard lock(mu);
    delta[user] += amount;
  }
};

struct DoneOp {
  WalletOp op;
  WalletResult result;
};

class WalletConcurrencyTest : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override { storage_ = std::make_unique<testutil::WalletStorage>(GetParam()); }
  std::unique_ptr<WalletEngine> open(std::size_t batch_ops_max) {
    WalletOptions o;
    o.batch_ops_max = batch_ops_max;
    o.retry_budget_ms = 30'000;
    return storage_->open(o);
  }
  std::unique_ptr<testutil::WalletStorage> storage_;
};

std::string wallet_name(std::mt19937_64& rng, int hot, int cold) {
  if (rng() % 2 == 0) return "hot" + std::to_string(rng() % hot);
  return "cold" + std::to_string(rng() % cold);
}

// One worker thread: random operations, recording what was acknowledged.
void work(WalletEngine& e, int thread, int ops, Ledger* ledger, std::atomic<int>* unexpected) {
  constexpr int kHot = 3;
  constexpr int kCold = 200;
  std::mt19937_64 rng(static_cast<uint64_t>(thread) * 7919 + 1);
  std::vector<DoneOp> uses;  // not yet cancelled
  std::vector<DoneOp> done;
  for (int i = 0; i < ops; ++i) {
    const std::string key = "t" + std::to_string(thread) + "-" + std::to_string(i);
    const int dice = static_cast<int>(rng() % 100);
    WalletOp op;
    bool retry = false;
    if (dice < 28) {
      std::optional<int64_t> exp;
      if (rng() % 2) exp = now_us() + testutil::kDayUs * static_cast<int64_t>(1 + rng() % 30);
      op = WalletOp::earn(kPartner, wallet_name(rng, kHot, kCold), 1 + static_cast<int64_t>(rng() % 100), exp, "",
                          key);
    } else if (dice < 58) {
      op = WalletOp::use(kPartner, wallet_name(rng, kHot, kCold), 1 + static_cast<int64_t>(rng() % 150), "", key);
    } else if (dice < 68 && !uses.empty()) {
      std::size_t pick = rng() % uses.size();
      const DoneOp& u = uses[pick];
      op = rng() % 2 ? WalletOp::cancel_entry(kPartner, u.op.user_id, u.result.entry_id, key)
                     : WalletOp::cancel_by_key(kPartner, u.op.user_id, u.op.idempotency_key, key);
      uses.erase(uses.begin() + static_cast<std::ptrdiff_t>(pick));
    } else if (dice < 90) {
      std::string from;
      std::string to;
      if (rng() % 2) {  // the hot pair, both directions at once across threads
        from = rng() % 2 ? "hot0" : "hot1";
        to = from == "hot0" ? "hot1" : "hot0";
      } else {
        from = wallet_name(rng, kHot, kCold);
        do to = wallet_name(rng, kHot, kCold); while (to == from);
      }
      op = WalletOp::transfer(kPartner, from, to, 1 + static_cast<int64_t>(rng() % 80), key);
    } else if (!done.empty()) {
      retry = true;
      op = done[rng() % done.size()].op;
    } else {
      continue;
    }
    try {
      WalletResult r = e.apply(op);
      if (retry) {
        if (!r.replayed) ++*unexpected, ADD_FAILURE() << "a retry was applied again: " << op.idempotency_key;
        continue;
      }
      if (r.replayed) ++*unexpected, ADD_FAILURE() << "a fresh key was replayed: " << key;
      switch (op.kind) {
        case WalletOpKind::kEarn: ledger->add(op.user_id, op.amount); break;
        case WalletOpKind::kUse:
          ledger->add(op.user_id, -op.amount);
          uses.push_back(DoneOp{op, r});
          break;
        case WalletOpKind::kCancel: ledger->add(op.user_id, r.amount - r.expired_amount); break;
        case WalletOpKind::kTransfer:
          ledger->add(op.user_id, -op.amount);
          ledger->add(op.to_user_id, op.amount);
          break;
      }
      done.push_back(DoneOp{op, r});
    } catch (const Error& err) {
      if (err.code() != ErrorCode::kInsufficientFunds) {
        ++*unexpected;
        ADD_FAILURE() << "unexpected " << error_code_name(err.code()) << ": " << err.what();
      }
    }
  }
}

TEST_P(WalletConcurrencyTest, TwoEnginesManyThreadsHotAndColdWalletsKeepTheInvariants) {
  auto e1 = open(1024);
  auto e2 = open(64);
  Ledger ledger;
  // Start balances, so that uses and transfers mostly succeed.
  for (int i = 0; i < 3; ++i) {
    e1->earn(kPartner, "hot" + std::to_string(i), 5000, std::nullopt, "seed", "seed-hot" + std::to_string(i));
    ledger.add("hot" + std::to_string(i), 5000);
  }
  for (int i = 0; i < 200; ++i) {
    e2->earn(kPartner, "cold" + std::to_string(i), 300, std::nullopt, "seed", "seed-cold" + std::to_string(i));
    ledger.add("cold" + std::to_string(i), 300);
  }
  constexpr int kThreads = 16;
  const int ops_per_thread = GetParam() == "postgres" ? 250 : 250;
  std::atomic<int> unexpected{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    WalletEngine& e = t % 2 ? *e1 : *e2;
    threads.emplace_back([&, t] { work(e, t, ops_per_thread, &ledger, &unexpected); });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(unexpected.load(), 0);

  for (const auto& [user, delta] : ledger.delta) {
    EXPECT_EQ(e1->balance(kPartner, user).total, delta) << user;
  }
  testutil::expect_audit_ok(*e1);
  const int64_t ledger_sum = storage_->scalar("SELECT coalesce(sum(amount), 0) FROM wallet_entries");
  int64_t expected_sum = 0;
  for (const auto& [user, delta] : ledger.delta) expected_sum += delta;
  EXPECT_EQ(ledger_sum, expected_sum);
  WalletCounters k1 = e1->counters();
  WalletCounters k2 = e2->counters();
  EXPECT_LT(k1.batches + k2.batches, k1.ops + k2.ops);  // batching happened
  std::cout << "[ info ] " << GetParam() << ": ops " << k1.ops + k2.ops << ", batches " << k1.batches + k2.batches
            << ", retries " << k1.retries + k2.retries << ", isolated " << k1.isolated + k2.isolated
            << ", max batch " << std::max(k1.max_batch_ops, k2.max_batch_ops) << "\n";
  EXPECT_EQ(k1.isolated + k2.isolated, 0u);
}

// Expiry running while operations run: the invariants hold and nothing but business errors
// surfaces (lots expire under the operations' feet).
TEST_P(WalletConcurrencyTest, ExpiryJobAlongsideOperations) {
  testutil::TestClock clock;
  WalletOptions o;
  o.clock_us = clock.fn();
  auto e = storage_->open(o);
  const int64_t soon = clock.now() + testutil::kHourUs;
  for (int i = 0; i < 50; ++i) {
    e->earn(kPartner, "w" + std::to_string(i), 100, soon, "", "a" + std::to_string(i));
    e->earn(kPartner, "w" + std::to_string(i), 100, std::nullopt, "", "b" + std::to_string(i));
  }
  std::atomic<bool> stop{false};
  std::atomic<int> unexpected{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      std::mt19937_64 rng(static_cast<uint64_t>(t));
      for (int i = 0; i < 150; ++i) {
        const std::string user = "w" + std::to_string(rng() % 50);
        const std::string key = "x" + std::to_string(t) + "-" + std::to_string(i);
        try {
          if (rng() % 2) {
            WalletResult u = e->use(kPartner, user, 1 + static_cast<int64_t>(rng() % 40), "", key);
            if (rng() % 2) e->cancel(kPartner, user, u.entry_id, key + "c");
          } else {
            e->earn(kPartner, user, 5, clock.now() + 10 * testutil::kHourUs, "", key);
          }
        } catch (const Error& err) {
          if (err.code() != ErrorCode::kInsufficientFunds) ++unexpected, ADD_FAILURE() << err.what();
        }
      }
    });
  }
  threads.emplace_back([&] {
    for (int round = 0; round < 5; ++round) {
      clock.advance_us(testutil::kHourUs / 2);
      e->expire(clock.now(), 7);
    }
  });
  for (auto& th : threads) th.join();
  EXPECT_EQ(unexpected.load(), 0);
  clock.advance_us(20 * testutil::kHourUs);
  e->expire(clock.now(), 100);
  testutil::expect_audit_ok(*e);
  for (int i = 0; i < 50; ++i) {
    const std::string user = "w" + std::to_string(i);
    // Only points without expiry remain; the stored balance agrees once all is written off.
    EXPECT_EQ(e->balance(kPartner, user).total,
              storage_->scalar("SELECT balance FROM wallets WHERE user_id = '" + user + "'"));
  }
}

// A child process runs an engine and reports each acknowledged operation on a pipe; it is
// SIGKILLed mid-stream. Every operation it acknowledged must be in the store: a retry with the
// same key is replayed with the same entry.
TEST_P(WalletConcurrencyTest, SigkilledProcessLosesNothingItAcknowledged) {
  {
    auto e = open(256);  // migrate before forking
    e->earn(kPartner, "victim", 1'000'000, std::nullopt, "", "seed");
  }
  int fds[2];
  ASSERT_EQ(::pipe(fds), 0);
  const pid_t child = ::fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    ::close(fds[0]);
    auto e = open(256);
    std::vector<std::thread> threads;
    for (int t = 0; t < 8; ++t) {
      threads.emplace_back([&, t] {
        for (int i = 0;; ++i) {
          const std::string key = "kill-" + std::to_string(t) + "-" + std::to_string(i);
          WalletResult r = i % 2 ? e->use(kPartner, "victim", 1, "", key)
                                 : e->earn(kPartner, "victim", 1, std::nullopt, "", key);
          std::string line = key + " " + std::to_string(r.entry_id) + "\n";
          if (::write(fds[1], line.data(), line.size()) < 0) ::_exit(3);
        }
      });
    }
    for (auto& th : threads) th.join();
    ::_exit(0);
  }
  ::close(fds[1]);
  std::string acked;
  char buf[4096];
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(500);
  while (std::chrono::steady_clock::now() < deadline) {
    ssize_t n = ::read(fds[0], buf, sizeof buf);
    if (n <= 0) break;
    acked.append(buf, static_cast<std::size_t>(n));
  }
  ::kill(child, SIGKILL);
  for (;;) {  // what the child wrote before dying was acknowledged too
    ssize_t n = ::read(fds[0], buf, sizeof buf);
    if (n <= 0) break;
    acked.append(buf, static_cast<std::size_t>(n));
  }
  ::close(fds[0]);
  int status = 0;
  ::waitpid(child, &status, 0);
  ASSERT_TRUE(WIFSIGNALED(status));

  // Replay every acknowledged operation (asynchronously, so the engine batches the replays).
  auto e = open(256);
  std::mutex mu;
  std::condition_variable cv;
  std::size_t checked = 0;
  std::size_t pending = 0;
  std::size_t start = 0;
  while (true) {
    std::size_t nl = acked.find('\n', start);
    if (nl == std::string::npos) break;  // a torn last line was never fully acknowledged
    std::string line = acked.substr(start, nl - start);
    start = nl + 1;
    const std::size_t sp = line.find(' ');
    const std::string key = line.substr(0, sp);
    const int64_t entry = std::stoll(line.substr(sp + 1));
    const int i = std::stoi(key.substr(key.rfind('-') + 1));
    WalletOp op = i % 2 ? WalletOp::use(kPartner, "victim", 1, "", key)
                        : WalletOp::earn(kPartner, "victim", 1, std::nullopt, "", key);
    {
      std::lock_guard lock(mu);
      ++pending;
    }
    e->submit(std::move(op), [&, key, entry](WalletResult&& r, std::exception_ptr err) {
      std::lock_guard lock(mu);
      EXPECT_FALSE(err) << key;
      EXPECT_TRUE(r.replayed) << key;
      EXPECT_EQ(r.entry_id, entry) << key;
      ++checked;
      if (--pending == 0) cv.notify_all();
    });
  }
  {
    std::unique_lock lock(mu);
    cv.wait(lock, [&] { return pending == 0; });
  }
  EXPECT_GT(checked, 50u);
  testutil::expect_audit_ok(*e);
  std::cout << "[ info ] " << GetParam() << ": " << checked << " acknowledged operations checked after SIGKILL\n";
}

INSTANTIATE_TEST_SUITE_P(Stores, WalletConcurrencyTest, ::testing::Values("embedded", "postgres"),
                         [](const auto& info) { return info.param; });

}  // namespace

namespace {

// The embedded default: the coupon engine and the wallet engine share one SQLite file, both
// writing at once (SQLite's write lock serializes their transactions; neither reports errors).
TEST(WalletEmbeddedSharedFile, CouponAndWalletEnginesShareOneFile) {
  const std::string path = testutil::temp_path("shared") + ".db";
  {
    auto coupons = open_embedded(EmbeddedOptions{path, false});
    EmbeddedWalletOptions wo;
    wo.path = path;
    wo.synchronous_full = false;
    auto wallets = open_wallets_embedded(wo);
    CampaignSpec spec;
    spec.name = "drop";
    spec.quantity = 500;
    Campaign c = coupons->create_campaign(spec);
    std::thread issuing([&] {
      for (int i = 0; i < 500; ++i) coupons->issue(c.id, IssueRequest{"u" + std::to_string(i), ""});
    });
    std::thread earning([&] {
      for (int i = 0; i < 300; ++i) {
        wallets->earn(kPartner, "u" + std::to_string(i % 20), 1, std::nullopt, "", "s" + std::to_string(i));
      }
    });
    issuing.join();
    earning.join();
    EXPECT_EQ(coupons->campaign_stats(c.id).rows, 500);
    int64_t total = 0;
    for (int i = 0; i < 20; ++i) total += wallets->balance(kPartner, "u" + std::to_string(i)).total;
    EXPECT_EQ(total, 300);
    testutil::expect_audit_ok(*wallets);
  }
  testutil::remove_db(path);
  std::filesystem::remove(path + ".lock");
}

}  // namespace
