// One behavioural suite, both deployments: every test here runs once on the embedded engine (a
// SQLite file in the temporary directory, reopenable) and once on the production engine (Redis
// gate + grant log + PostgreSQL, options from production_test_util.hpp with a key prefix of its
// own, keys deleted afterwards). Only the public Engine API is used.
//
//   issuance    sold out, second press, window, request-id retries, per-user limit, issue_many,
//               concurrent callers, reopen, bad input, closed engine, reconcile
//   lifecycle   use / cancel / idempotency, concurrent uses, validity and the expiry job, user
//               coupon pages, counts, campaign rules (pause / resume / close / quantity), scopes
//   partners    keys, authentication counters, rotation, revocation, bad names
//
// What only one deployment has lives in its own file, with the reason:
//   embedded    embedded_engine_test.cpp (":memory:"), lifecycle_test.cpp (store-level clock,
//               file migration, discount math), partners_test.cpp (key format and caches)
//   production  production_engine_test.cpp (sold-out fast path across engines, Lua batches, script
//               flush, lost mirror, reconcile re-drive, options, Redis URLs),
//               production_lifecycle_test.cpp (grants still in the log, two engines at once, the
//               Redis authentication cache), pg_lifecycle_test.cpp (the PostgreSQL store itself)
//
// On production a grant reaches PostgreSQL shortly after ISSUED: tests call settle() (drain)
// before they look at the store or use a coupon. Tests that count across the whole store (the
// expiry job, an empty list of partners) give the production engine a PostgreSQL schema of its
// own; others use a partner of their own where the database is shared.
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <functional>
#include <map>
#include <mutex>
#include <ostream>
#include <random>
#include <set>
#include <thread>

#include "couponcore/engine.hpp"
#include "couponcore/error.hpp"
#include "couponcore/limits.hpp"
#include "couponcore/scope.hpp"
#include "production_test_util.hpp"
#include "test_util.hpp"
#include "wallet_test_util.hpp"

using namespace couponcore;

namespace {

constexpr int64_t kHourUs = 3'600'000'000;
constexpr int64_t kDayUs = 24 * kHourUs;

// kCluster: the production engine on the test Redis Cluster (skipped without one).
enum class Deployment { kEmbedded, kProduction, kCluster };

const char* name_of(Deployment d) {
  return d == Deployment::kEmbedded ? "embedded" : d == Deployment::kProduction ? "production" : "cluster";
}
std::string deployment_name(const ::testing::TestParamInfo<Deployment>& info) { return name_of(info.param); }
void PrintTo(Deployment d, std::ostream* os) { *os << name_of(d); }  // in failure messages

IssueRequest req(std::string user, std::string request_id = "") { return {std::move(user), std::move(request_id)}; }

using testutil::code_of;

using testutil::Caught;
using testutil::catch_error;

// A well-formed API key that nobody holds: a real one with its last character changed (a key is
// a prefix and base32 of random bytes, nothing else; partners_test.cpp checks the format).
std::string unknown_key(std::string key) {
  key.back() = key.back() == 'a' ? 'b' : 'a';
  return key;
}

// A thread's body: an exception (say, a server going away) fails the test instead of ending the
// process.
std::thread guarded_thread(std::function<void()> fn) {
  return std::thread([fn = std::move(fn)] {
    try {
      fn();
    } catch (const std::exception& e) {
      ADD_FAILURE() << "exception in a thread: " << e.what();
    }
  });
}

// Polls fn until it returns true or the deadline passes.
bool eventually(std::chrono::milliseconds within, const std::function<bool()>& fn) {
  const auto deadline = std::chrono::steady_clock::now() + within;
  while (std::chrono::steady_clock::now() < deadline) {
    if (fn()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return fn();
}

class EngineBehaviour : public ::testing::TestWithParam<Deployment> {
 protected:
  void SetUp() override {
    if (embedded()) {
      embedded_options_.path = testutil::temp_path("behaviour") + ".db";
      embedded_options_.synchronous_full = false;  // no power-loss test here; fsyncs are slow
    } else {
      options_ = testutil::production_options(testutil::current_test_name());
      if (GetParam() == Deployment::kCluster) {
        if (testutil::cluster_url().empty()) GTEST_SKIP() << "COUPONCORE_TEST_REDIS_CLUSTER is not set";
        options_.redis_url = testutil::cluster_url();
      }
    }
  }

  void TearDown() override {
    e_.reset();
    if (embedded()) {
      testutil::remove_db(embedded_options_.path);
    } else if (GetParam() == Deployment::kCluster) {
      if (!testutil::cluster_url().empty()) testutil::delete_cluster_keys(options_.key_prefix);
    } else {
      testutil::delete_keys(options_.key_prefix);
    }
    schema_.reset();
  }

  bool embedded() const { return GetParam() == Deployment::kEmbedded; }
  bool production() const { return !embedded(); }

  // Production: a PostgreSQL schema for this test alone, for tests that count across the whole
  // store. Call before open(). (An embedded file is the test's own already.)
  void use_own_schema() {
    if (embedded()) return;
    schema_ = std::make_unique<testutil::WalletStorage>("postgres");
    options_.postgres_url = schema_->url();
    options_.migrate_on_open = true;
  }

  // Opens this test's deployment; again after close(): the same file, or the same servers, schema
  // and key prefix.
  std::unique_ptr<Engine> open() {
    if (embedded()) return open_embedded(embedded_options_);
    return open_production(options_);
  }

  // Opens e_ (the engine most tests use).
  Engine& start() {
    e_ = open();
    return *e_;
  }

  // Every grant acknowledged so far is in the store (embedded: at once; production: drained).
  void settle(Engine& e) { ASSERT_TRUE(e.drain(20)); }

  static CampaignSpec spec(int64_t quantity, int32_t limit = 1) {
    CampaignSpec s;
    s.name = "drop";
    s.quantity = quantity;
    s.per_user_limit = limit;
    return s;
  }
  static CampaignSpec fixed(int64_t amount, int64_t min_order = 0) {
    CampaignSpec s = spec(100);
    s.discount_kind = DiscountKind::kFixed;
    s.discount_value = amount;
    s.min_order_amount = min_order;
    return s;
  }

  // Issues one coupon on e_ and makes it usable (its grant in the store).
  int64_t issue_one(int64_t campaign_id, const std::string& user) {
    IssueResult r = e_->issue(campaign_id, req(user));
    EXPECT_EQ(r.status, IssueStatus::kIssued);
    settle(*e_);
    return r.coupon_id;
  }
  UseResult use(int64_t coupon_id, const std::string& user, const std::string& order, int64_t amount) {
    return e_->use_coupon(0, UseRequest{coupon_id, user, order, amount});
  }

  EmbeddedOptions embedded_options_;
  ProductionOptions options_;
  std::unique_ptr<testutil::WalletStorage> schema_;
  std::unique_ptr<Engine> e_;
};

// ==== issuance ==================================================================================

TEST_P(EngineBehaviour, IssuesUntilSoldOutThenSaysSoldOut) {
  Engine& e = start();
  EXPECT_STREQ(e.kind(), embedded() ? "embedded" : "production");
  Campaign c = e.create_campaign(spec(3));
  for (uint32_t i = 1; i <= 3; ++i) {
    IssueResult r = e.issue(c.id, req("u" + std::to_string(i)));
    EXPECT_EQ(r.status, IssueStatus::kIssued);
    EXPECT_EQ(r.seq, i);
    EXPECT_EQ(r.coupon_id, make_coupon_id(c.id, i));
  }
  EXPECT_EQ(e.issue(c.id, req("u4")).status, IssueStatus::kSoldOut);
  // A holder is told ALREADY_ISSUED, also after the sale is over.
  EXPECT_EQ(e.issue(c.id, req("u2")).status, IssueStatus::kAlreadyIssued);
  settle(e);
  CampaignStats st = e.campaign_stats(c.id);
  EXPECT_EQ(st.rows, 3);
  EXPECT_EQ(st.distinct_users, 3);
  EXPECT_EQ(st.min_seq, 1);
  EXPECT_EQ(st.max_seq, 3);
}

TEST_P(EngineBehaviour, SecondPressIsAlreadyIssued) {
  Engine& e = start();
  Campaign c = e.create_campaign(spec(10));
  EXPECT_EQ(e.issue(c.id, req("alice")).status, IssueStatus::kIssued);
  EXPECT_EQ(e.issue(c.id, req("alice")).status, IssueStatus::kAlreadyIssued);
  settle(e);
  EXPECT_EQ(e.campaign_stats(c.id).rows, 1);
}

TEST_P(EngineBehaviour, WindowGivesNotOpenAndEnded) {
  Engine& e = start();
  CampaignSpec future = spec(10);
  future.starts_at_us = now_us() + kHourUs;
  Campaign f = e.create_campaign(future);
  EXPECT_EQ(e.issue(f.id, req("u")).status, IssueStatus::kNotOpen);
  CampaignSpec past = spec(10);
  past.starts_at_us = now_us() - 2 * kHourUs;
  past.ends_at_us = now_us() - kHourUs;
  Campaign p = e.create_campaign(past);
  EXPECT_EQ(e.issue(p.id, req("u")).status, IssueStatus::kEnded);
  CampaignSpec open_now = spec(10);
  open_now.starts_at_us = now_us() - 1'000'000;
  open_now.ends_at_us = now_us() + kHourUs;
  Campaign o = e.create_campaign(open_now);
  EXPECT_EQ(e.issue(o.id, req("u")).status, IssueStatus::kIssued);
  settle(e);
  EXPECT_EQ(e.campaign_stats(f.id).rows, 0);
  EXPECT_EQ(e.campaign_stats(p.id).rows, 0);
  EXPECT_EQ(e.campaign_stats(o.id).rows, 1);
}

TEST_P(EngineBehaviour, RepeatedRequestIdReturnsTheFirstAnswer) {
  Engine& e = start();
  Campaign c = e.create_campaign(spec(5, 3));
  IssueResult first = e.issue(c.id, req("bob", "r-1"));
  ASSERT_EQ(first.status, IssueStatus::kIssued);
  IssueResult again = e.issue(c.id, req("bob", "r-1"));
  EXPECT_EQ(again.status, IssueStatus::kIssued);
  EXPECT_EQ(again.seq, first.seq);
  EXPECT_EQ(again.coupon_id, first.coupon_id);
  settle(e);
  EXPECT_EQ(e.campaign_stats(c.id).rows, 1);  // no second coupon for a retry
  EXPECT_EQ(e.issue(c.id, req("bob", "r-2")).seq, 2u);  // a new press is a new request
  // Request ids are scoped per user: carol's r-1 is her own request.
  EXPECT_EQ(e.issue(c.id, req("carol", "r-1")).seq, 3u);
  settle(e);
  EXPECT_EQ(e.campaign_stats(c.id).rows, 3);
}

TEST_P(EngineBehaviour, PerUserLimitAboveOne) {
  Engine& e = start();
  Campaign c = e.create_campaign(spec(100, 3));
  for (int i = 0; i < 3; ++i) EXPECT_EQ(e.issue(c.id, req("carol")).status, IssueStatus::kIssued);
  EXPECT_EQ(e.issue(c.id, req("carol")).status, IssueStatus::kAlreadyIssued);
  settle(e);
  CampaignStats st = e.campaign_stats(c.id);
  EXPECT_EQ(st.rows, 3);
  EXPECT_EQ(st.distinct_users, 1);
}

TEST_P(EngineBehaviour, IssueManyDecidesABatchInOrder) {
  Engine& e = start();
  Campaign c = e.create_campaign(spec(3));
  std::vector<IssueResult> r = e.issue_many(c.id, {req("a"), req("b"), req("a"), req("c"), req("d")});
  ASSERT_EQ(r.size(), 5u);
  EXPECT_EQ(r[0].status, IssueStatus::kIssued);
  EXPECT_EQ(r[1].status, IssueStatus::kIssued);
  EXPECT_EQ(r[2].status, IssueStatus::kAlreadyIssued);
  EXPECT_EQ(r[3].status, IssueStatus::kIssued);
  EXPECT_EQ(r[4].status, IssueStatus::kSoldOut);
  EXPECT_EQ(r[3].seq, 3u);
}

TEST_P(EngineBehaviour, ManyThreadsOneCampaignInvariantsHold) {
  Engine& e = start();
  constexpr int kQuantity = 2000;
  constexpr int kThreads = 16;
  constexpr int kPerThread = 600;
  constexpr int kLimit = 2;
  Campaign c = e.create_campaign(spec(kQuantity, kLimit));
  std::mutex mu;
  std::map<std::string, int> issued_per_user;
  std::set<uint32_t> seqs;
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.push_back(guarded_thread([&, t] {
      std::mt19937 rng(t);
      for (int i = 0; i < kPerThread; ++i) {
        std::string user = "user" + std::to_string(rng() % 1500);  // users press more than once
        IssueResult r = e.issue(c.id, req(user));
        if (r.status == IssueStatus::kIssued) {
          std::lock_guard lock(mu);
          issued_per_user[user]++;
          EXPECT_TRUE(seqs.insert(r.seq).second) << "seq " << r.seq << " issued twice";
        }
      }
    }));
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(seqs.size(), static_cast<std::size_t>(kQuantity));
  EXPECT_EQ(*seqs.begin(), 1u);
  EXPECT_EQ(*seqs.rbegin(), static_cast<uint32_t>(kQuantity));
  for (auto& [user, n] : issued_per_user) EXPECT_LE(n, kLimit) << user;
  settle(e);
  CampaignStats st = e.campaign_stats(c.id);
  EXPECT_EQ(st.rows, kQuantity);
  EXPECT_EQ(st.max_seq, kQuantity);
  EXPECT_EQ(st.distinct_users, static_cast<int64_t>(issued_per_user.size()));
}

TEST_P(EngineBehaviour, ConcurrentCallersShareCommits) {
  embedded_options_.synchronous_full = true;  // group commit matters where a commit costs an fsync
  Engine& e = start();
  Campaign c = e.create_campaign(spec(100000));
  constexpr int kThreads = 32;
  constexpr int kPerThread = 200;
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.push_back(guarded_thread([&, t] {
      for (int i = 0; i < kPerThread; ++i) e.issue(c.id, req("t" + std::to_string(t) + "-" + std::to_string(i)));
    }));
  }
  for (auto& th : threads) th.join();
  EngineCounters k = e.counters();
  EXPECT_EQ(k.issued, static_cast<uint64_t>(kThreads * kPerThread));
  // Group commit (embedded: SQLite commits; production: Lua calls): with 32 callers waiting,
  // commits are shared. Fewer commits than grants is the property; the ratio depends on the
  // machine, so only "shared at all" is asserted.
  EXPECT_LT(k.commits, k.issued);
  settle(e);
  EXPECT_EQ(e.campaign_stats(c.id).rows, kThreads * kPerThread);
}

TEST_P(EngineBehaviour, ReopenRestoresTheGateExactly) {
  int64_t id;
  {
    auto e = open();
    Campaign c = e->create_campaign(spec(5, 2));
    id = c.id;
    e->issue(c.id, req("x", "rx"));
    e->issue(c.id, req("x"));
    e->issue(c.id, req("y"));
    e->close();
  }
  auto e = open();
  Campaign c = e->get_campaign(id);
  EXPECT_EQ(c.spec.quantity, 5);
  EXPECT_EQ(c.spec.per_user_limit, 2);
  EXPECT_EQ(e->issue(id, req("x")).status, IssueStatus::kAlreadyIssued);  // holds 2 of 2
  IssueResult retry = e->issue(id, req("x", "rx"));  // remembered across reopen
  EXPECT_EQ(retry.status, IssueStatus::kIssued);
  EXPECT_EQ(retry.seq, 1u);
  EXPECT_EQ(e->issue(id, req("y")).seq, 4u);  // y's second coupon continues the sequence
  EXPECT_EQ(e->issue(id, req("z")).seq, 5u);
  EXPECT_EQ(e->issue(id, req("w")).status, IssueStatus::kSoldOut);
  settle(*e);
  EXPECT_EQ(e->campaign_stats(id).rows, 5);
}

TEST_P(EngineBehaviour, BadInputIsRefusedAndChangesNothing) {
  Engine& e = start();
  // The refused campaigns belong to a partner of their own (production shares its database with
  // other tests; embedded: the default partner of a fresh file).
  const int64_t partner = embedded() ? 0 : e.create_partner("bad-input").partner.id;
  auto bad_spec = [&](int64_t quantity, int32_t limit = 1) {
    CampaignSpec s = spec(quantity, limit);
    s.partner_id = partner;
    return s;
  };
  EXPECT_EQ(code_of([&] { e.create_campaign(bad_spec(0)); }), ErrorCode::kInvalidArgument);
  EXPECT_EQ(code_of([&] { e.create_campaign(bad_spec(-5)); }), ErrorCode::kInvalidArgument);
  EXPECT_EQ(code_of([&] { e.create_campaign(bad_spec(limits::kQuantityMax + 1)); }), ErrorCode::kInvalidArgument);
  EXPECT_EQ(code_of([&] { e.create_campaign(bad_spec(10, 0)); }), ErrorCode::kInvalidArgument);
  CampaignSpec backwards = bad_spec(10);
  backwards.starts_at_us = 2'000'000;
  backwards.ends_at_us = 1'000'000;
  EXPECT_EQ(code_of([&] { e.create_campaign(backwards); }), ErrorCode::kInvalidArgument);
  EXPECT_TRUE(e.list_campaigns(partner).empty());

  Campaign c = e.create_campaign(spec(10));
  EXPECT_EQ(code_of([&] { e.issue(c.id + 100, req("u")); }), ErrorCode::kNotFound);
  EXPECT_EQ(code_of([&] { e.issue(c.id + 1'000'000, req("u")); }), ErrorCode::kNotFound);
  EXPECT_EQ(code_of([&] { e.issue(-1, req("u")); }), ErrorCode::kNotFound);
  EXPECT_EQ(code_of([&] { e.issue(int64_t{1} << 40, req("u")); }), ErrorCode::kNotFound);
  EXPECT_EQ(code_of([&] { e.issue(c.id, req("")); }), ErrorCode::kInvalidArgument);
  EXPECT_EQ(code_of([&] { e.issue(c.id, req(std::string(129, 'a'))); }), ErrorCode::kInvalidArgument);
  // Key-injection attempts (hash tags, key names, protocol bytes, globs, Lua separators) as user
  // ids and as request ids. Production also checks that no key outside its prefix appeared:
  // production_engine_test.cpp.
  for (const char* evil : {"u}{x", "{c1}:m", "u\r\nFLUSHALL", "x\r\nFLUSHALL\r\n", "a b", "*", "user|r", "ünï",
                           "k'--", "$(rm)", "a;DEL"}) {
    EXPECT_EQ(code_of([&] { e.issue(c.id, req(evil)); }), ErrorCode::kInvalidArgument) << evil;
    EXPECT_EQ(code_of([&] { e.issue(c.id, req("ok", evil)); }), ErrorCode::kInvalidArgument) << evil;
  }
  EXPECT_EQ(code_of([&] { e.issue(c.id, req(std::string("nul\0byte", 8))); }), ErrorCode::kInvalidArgument);
  // One bad id refuses the whole batch before anything is decided.
  EXPECT_EQ(code_of([&] { e.issue_many(c.id, {req("ok1"), req("bad id")}); }), ErrorCode::kInvalidArgument);
  settle(e);
  EXPECT_EQ(e.campaign_stats(c.id).rows, 0);
  EXPECT_EQ(e.reconcile(c.id).gate_issued, 0);
  EXPECT_EQ(e.issue(c.id, req(std::string(128, 'a'))).seq, 1u);  // the limit itself is fine
}

TEST_P(EngineBehaviour, ClosedEngineRefuses) {
  Engine& e = start();
  Campaign c = e.create_campaign(spec(1));
  e.close();
  EXPECT_TRUE(e.closed());
  EXPECT_EQ(code_of([&] { e.issue(c.id, req("u")); }), ErrorCode::kClosed);
  EXPECT_EQ(code_of([&] { e.drain(1); }), ErrorCode::kClosed);
}

TEST_P(EngineBehaviour, ReconcileComparesGateAndStore) {
  Engine& e = start();
  Campaign c = e.create_campaign(spec(3));
  e.issue(c.id, req("a"));
  e.issue(c.id, req("b"));
  settle(e);
  ReconcileReport rep = e.reconcile(c.id);
  EXPECT_EQ(rep.gate_issued, 2);
  EXPECT_EQ(rep.store_rows, 2);
  EXPECT_EQ(rep.missing_in_store, 0);
  EXPECT_TRUE(rep.consistent);
}

// ==== coupon lifecycle ==========================================================================

TEST_P(EngineBehaviour, UseComputesTheDiscountAndMarksUsed) {
  start();
  CampaignSpec s = spec(100);
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

TEST_P(EngineBehaviour, RepeatWithTheSameOrderReturnsTheFirstResult) {
  start();
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

TEST_P(EngineBehaviour, WrongOwnerUnknownCouponAndMinimumOrder) {
  start();
  Campaign c = e_->create_campaign(fixed(1000, /*min_order=*/10'000));
  int64_t id = issue_one(c.id, "carol");
  EXPECT_EQ(code_of([&] { use(id, "mallory", "o1", 20'000); }), ErrorCode::kNotFound);
  EXPECT_EQ(code_of([&] { use(id + 1, "carol", "o1", 20'000); }), ErrorCode::kNotFound);  // seq 2 never issued
  EXPECT_EQ(code_of([&] { use(make_coupon_id(c.id + 1'000'000, 1), "carol", "o1", 20'000); }), ErrorCode::kNotFound);
  EXPECT_EQ(code_of([&] { use(id, "carol", "o1", 9999); }), ErrorCode::kInvalidArgument);
  EXPECT_EQ(e_->get_coupon(0, id).state, CouponState::kIssued);  // nothing changed
  EXPECT_EQ(use(id, "carol", "o1", 10'000).discount_amount, 1000);
}

TEST_P(EngineBehaviour, BadUseInputChangesNothing) {
  start();
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

TEST_P(EngineBehaviour, ManyThreadsUseOneCouponExactlyOneWins) {
  start();
  Campaign c = e_->create_campaign(fixed(500));
  int64_t id = issue_one(c.id, "eve");
  constexpr int kThreads = 16;
  std::atomic<int> wins{0}, conflicts{0}, other{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.push_back(guarded_thread([&, t] {
      try {
        use(id, "eve", "order-" + std::to_string(t), 1000);
        wins++;
      } catch (const Error& err) {
        (err.code() == ErrorCode::kConflict ? conflicts : other)++;
      }
    }));
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(wins.load(), 1);
  EXPECT_EQ(conflicts.load(), kThreads - 1);
  EXPECT_EQ(other.load(), 0);
  EXPECT_EQ(e_->coupon_counts(0, c.id).used, 1);
}

TEST_P(EngineBehaviour, ConcurrentRepeatsOfOneOrderAllGetTheSameResult) {
  start();
  Campaign c = e_->create_campaign(fixed(500));
  int64_t id = issue_one(c.id, "frank");
  constexpr int kThreads = 8;
  std::vector<UseResult> results(kThreads);
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.push_back(guarded_thread([&, t] { results[t] = use(id, "frank", "the-order", 1000); }));
  }
  for (auto& th : threads) th.join();
  for (const UseResult& r : results) {
    EXPECT_EQ(r.used_at_us, results[0].used_at_us);
    EXPECT_EQ(r.discount_amount, 500);
  }
}

TEST_P(EngineBehaviour, CancelReturnsTheCouponAndIsIdempotent) {
  start();
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

TEST_P(EngineBehaviour, CancelOfACouponThatNeverWasUsedIsAConflict) {
  start();
  Campaign c = e_->create_campaign(fixed(1000));
  int64_t id = issue_one(c.id, "hank");
  EXPECT_EQ(code_of([&] { e_->cancel_coupon_use(0, id, "o-1"); }), ErrorCode::kConflict);
  EXPECT_EQ(code_of([&] { e_->cancel_coupon_use(0, id + 5, "o-1"); }), ErrorCode::kNotFound);
}

TEST_P(EngineBehaviour, PastValidityReadsExpiredAndCannotBeUsed) {
  start();
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

TEST_P(EngineBehaviour, RelativeValidityIsFixedAtIssue) {
  start();
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

TEST_P(EngineBehaviour, ExpiryJobMarksInChunks) {
  use_own_schema();  // the job covers the whole store: only this test's coupons may be in it
  start();
  CampaignSpec s = fixed(1000);
  s.valid_days = 1;
  Campaign c = e_->create_campaign(s);
  std::vector<IssueRequest> reqs;
  for (int i = 0; i < 25; ++i) reqs.push_back(req("u" + std::to_string(i)));
  e_->issue_many(c.id, reqs);
  settle(*e_);
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

TEST_P(EngineBehaviour, UserCouponsPageWithAStableCursorAndStateFilter) {
  start();
  // liz's coupons under one partner: the default one of a fresh file; on production (a database
  // shared with other tests) a partner of this test's own.
  const int64_t partner = embedded() ? 0 : e_->create_partner("liz-shop").partner.id;
  auto campaign = [&](int64_t amount) {
    CampaignSpec s = fixed(amount);
    s.partner_id = partner;
    return e_->create_campaign(s);
  };
  std::vector<int64_t> ids;
  for (int i = 0; i < 5; ++i) {
    Campaign c = campaign(100 + i);
    ids.push_back(issue_one(c.id, "liz"));
    issue_one(c.id, "someone-else");
  }
  e_->use_coupon(partner, {ids[1], "liz", "o1", 1000});
  e_->use_coupon(partner, {ids[3], "liz", "o3", 1000});
  CouponQuery q;
  q.user_id = "liz";
  q.limit = 2;
  std::vector<int64_t> seen;
  for (int page = 0; page < 10; ++page) {
    CouponPage p = e_->list_user_coupons(partner, q);
    for (const Coupon& k : p.items) seen.push_back(k.id);
    if (page == 0) {
      // A new coupon for liz between pages lands at the end, never shifts a page.
      Campaign late = campaign(1);
      ids.push_back(issue_one(late.id, "liz"));
    }
    if (!p.next_cursor) break;
    q.after_coupon_id = *p.next_cursor;
  }
  EXPECT_EQ(seen, ids);
  q.after_coupon_id = 0;
  q.limit = 100;
  q.state = CouponState::kUsed;
  CouponPage used = e_->list_user_coupons(partner, q);
  ASSERT_EQ(used.items.size(), 2u);
  EXPECT_EQ(used.items[0].id, ids[1]);
  EXPECT_FALSE(used.next_cursor.has_value());
  q.state = CouponState::kIssued;
  EXPECT_EQ(e_->list_user_coupons(partner, q).items.size(), 4u);
  q.state = CouponState::kExpired;
  EXPECT_TRUE(e_->list_user_coupons(partner, q).items.empty());
  q.limit = limits::kCouponPageMax + 1;
  EXPECT_EQ(code_of([&] { e_->list_user_coupons(partner, q); }), ErrorCode::kInvalidArgument);
  q.limit = 0;
  EXPECT_EQ(code_of([&] { e_->list_user_coupons(partner, q); }), ErrorCode::kInvalidArgument);
}

TEST_P(EngineBehaviour, CountsByState) {
  start();
  Campaign c = e_->create_campaign(fixed(100));
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
  EXPECT_EQ(code_of([&] { e_->coupon_counts(0, c.id + 1'000'000); }), ErrorCode::kNotFound);
}

// Scopes bind a partner: its lifecycle calls work, another partner's reach nothing, and the
// expiry job (all partners) sees its coupons.
TEST_P(EngineBehaviour, LifecycleAndTenantIsolationThroughScopes) {
  Engine& e = start();
  PartnerKey ka = e.create_partner("a"), kb = e.create_partner("b");
  PartnerScope a(e, ka.partner.id), b(e, kb.partner.id);
  CampaignSpec s = fixed(500);
  s.quantity = 10;
  s.valid_days = 1;
  Campaign c = a.create_campaign(s);
  std::vector<IssueResult> rs = a.issue_many(c.id, {req("u1"), req("u2"), req("u3")});
  settle(e);
  a.use_coupon({rs[0].coupon_id, "u1", "o1", 1000});
  a.use_coupon({rs[1].coupon_id, "u2", "o2", 1000});
  EXPECT_EQ(a.cancel_coupon_use(rs[1].coupon_id, "o2").state, CouponState::kIssued);
  CouponCounts n = a.coupon_counts(c.id);
  EXPECT_EQ(n.used, 1);
  EXPECT_EQ(n.issued, 2);
  CouponQuery q;
  q.user_id = "u1";
  EXPECT_EQ(a.list_user_coupons(q).items.size(), 1u);
  // b sees none of it, and cannot change any of it.
  EXPECT_EQ(code_of([&] { b.get_campaign(c.id); }), ErrorCode::kNotFound);
  EXPECT_EQ(code_of([&] { b.issue(c.id, req("z")); }), ErrorCode::kNotFound);
  EXPECT_EQ(code_of([&] { b.pause_campaign(c.id); }), ErrorCode::kNotFound);
  EXPECT_EQ(code_of([&] { b.set_campaign_quantity(c.id, 50); }), ErrorCode::kNotFound);
  EXPECT_EQ(code_of([&] { b.get_coupon(rs[0].coupon_id); }), ErrorCode::kNotFound);
  EXPECT_EQ(code_of([&] { b.use_coupon({rs[2].coupon_id, "u3", "o3", 1000}); }), ErrorCode::kNotFound);
  EXPECT_EQ(code_of([&] { b.cancel_coupon_use(rs[0].coupon_id, "o1"); }), ErrorCode::kNotFound);
  EXPECT_EQ(code_of([&] { b.coupon_counts(c.id); }), ErrorCode::kNotFound);
  EXPECT_TRUE(b.list_user_coupons(q).items.empty());
  EXPECT_EQ(a.get_campaign(c.id).state, CampaignState::kActive);
  // The expiry job, a day and more later.
  ExpireReport x = e.expire_coupons(now_us() + 2 * kDayUs, 100, 10);
  EXPECT_GE(x.expired, 2);
  EXPECT_EQ(a.coupon_counts(c.id).expired, 2);
  EXPECT_EQ(a.get_coupon(rs[0].coupon_id).state, CouponState::kUsed);
}

// ==== campaign rules ============================================================================

TEST_P(EngineBehaviour, PauseResumeClose) {
  start();
  Campaign c = e_->create_campaign(spec(10));
  EXPECT_EQ(e_->pause_campaign(0, c.id).state, CampaignState::kPaused);
  EXPECT_EQ(e_->pause_campaign(0, c.id).state, CampaignState::kPaused);  // repeat: no-op
  EXPECT_EQ(e_->issue(c.id, req("a")).status, IssueStatus::kNotOpen);
  EXPECT_EQ(e_->get_campaign(c.id).state, CampaignState::kPaused);  // the record
  EXPECT_EQ(e_->resume_campaign(0, c.id).state, CampaignState::kActive);
  EXPECT_EQ(e_->issue(c.id, req("a")).status, IssueStatus::kIssued);
  EXPECT_EQ(e_->close_campaign(0, c.id).state, CampaignState::kClosed);
  EXPECT_EQ(e_->close_campaign(0, c.id).state, CampaignState::kClosed);  // repeat: no-op
  EXPECT_EQ(e_->issue(c.id, req("b")).status, IssueStatus::kEnded);
  EXPECT_EQ(code_of([&] { e_->resume_campaign(0, c.id); }), ErrorCode::kConflict);
  EXPECT_EQ(code_of([&] { e_->pause_campaign(0, c.id); }), ErrorCode::kConflict);
  EXPECT_EQ(code_of([&] { e_->set_campaign_quantity(0, c.id, 20); }), ErrorCode::kConflict);
  EXPECT_EQ(code_of([&] { e_->set_campaign_quantity(0, c.id, 0); }), ErrorCode::kInvalidArgument);
  EXPECT_EQ(code_of([&] { e_->pause_campaign(0, c.id + 100000); }), ErrorCode::kNotFound);
  EXPECT_EQ(e_->get_campaign(c.id).state, CampaignState::kClosed);
  // A used coupon of a closed campaign: closing stops issuance, not redemption.
  settle(*e_);
  EXPECT_EQ(use(make_coupon_id(c.id, 1), "a", "o", 100).discount_amount, 0);
}

TEST_P(EngineBehaviour, RaisingQuantityReopensASoldOutCampaign) {
  start();
  Campaign c = e_->create_campaign(spec(2));
  e_->issue_many(c.id, {req("a"), req("b")});
  EXPECT_EQ(e_->issue(c.id, req("c")).status, IssueStatus::kSoldOut);
  // Sold-out answers come from the fast path by now (production: once the sell-out is known).
  ASSERT_TRUE(eventually(std::chrono::seconds(2), [&] {
    const uint64_t before = e_->counters().fast_path;
    EXPECT_EQ(e_->issue(c.id, req("c")).status, IssueStatus::kSoldOut);
    return e_->counters().fast_path > before;
  }));
  EXPECT_EQ(code_of([&] { e_->set_campaign_quantity(0, c.id, 1); }), ErrorCode::kConflict);  // below issued
  EXPECT_EQ(code_of([&] { e_->set_campaign_quantity(0, c.id, 0); }), ErrorCode::kInvalidArgument);
  EXPECT_EQ(code_of([&] { e_->set_campaign_quantity(0, c.id, limits::kQuantityMax + 1); }),
            ErrorCode::kInvalidArgument);
  EXPECT_EQ(e_->get_campaign(c.id).spec.quantity, 2);  // nothing changed
  // The fast path reopens at once.
  EXPECT_EQ(e_->set_campaign_quantity(0, c.id, 3).spec.quantity, 3);
  IssueResult r = e_->issue(c.id, req("c"));
  EXPECT_EQ(r.status, IssueStatus::kIssued);
  EXPECT_EQ(r.seq, 3u);
  EXPECT_EQ(e_->issue(c.id, req("d")).status, IssueStatus::kSoldOut);
  EXPECT_EQ(e_->issue(c.id, req("a")).status, IssueStatus::kAlreadyIssued);
  EXPECT_EQ(e_->set_campaign_quantity(0, c.id, 3).spec.quantity, 3);  // equal to issued: allowed
}

TEST_P(EngineBehaviour, RulesSurviveReopen) {
  int64_t paused_id, raised_id, closed_id;
  {
    auto e = open();
    Campaign p = e->create_campaign(spec(5));
    e->pause_campaign(0, p.id);
    paused_id = p.id;
    Campaign r = e->create_campaign(spec(1));
    e->issue(r.id, req("x"));
    e->set_campaign_quantity(0, r.id, 4);
    raised_id = r.id;
    Campaign k = e->create_campaign(spec(5));
    e->close_campaign(0, k.id);
    closed_id = k.id;
    e->close();
  }
  auto e = open();
  EXPECT_EQ(e->get_campaign(paused_id).state, CampaignState::kPaused);
  EXPECT_EQ(e->issue(paused_id, req("y")).status, IssueStatus::kNotOpen);
  EXPECT_EQ(e->get_campaign(raised_id).spec.quantity, 4);
  EXPECT_EQ(e->issue(raised_id, req("y")).seq, 2u);
  EXPECT_EQ(e->get_campaign(closed_id).state, CampaignState::kClosed);
  EXPECT_EQ(e->issue(closed_id, req("e")).status, IssueStatus::kEnded);
}

// Quantity changes racing a flash sale: whatever interleaving, issued never exceeds the final
// quantity, seqs have no gaps, and the store agrees with the gate.
TEST_P(EngineBehaviour, QuantityRaisedDuringASaleStaysConsistent) {
  start();
  Campaign c = e_->create_campaign(spec(100));
  std::atomic<bool> stop{false};
  std::atomic<int> issued{0};
  std::vector<std::thread> buyers;
  for (int t = 0; t < 4; ++t) {
    buyers.push_back(guarded_thread([&, t] {
      for (int i = 0; !stop && i < 5000; ++i) {
        if (e_->issue(c.id, req("t" + std::to_string(t) + "-" + std::to_string(i))).status == IssueStatus::kIssued) {
          issued++;
        }
      }
    }));
  }
  int64_t q = 100;
  for (int step = 0; step < 20; ++step) {
    q += 50;
    e_->set_campaign_quantity(0, c.id, q);
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
  stop = true;
  for (auto& th : buyers) th.join();
  settle(*e_);
  CampaignStats st = e_->campaign_stats(c.id);
  EXPECT_EQ(st.rows, issued.load());
  EXPECT_LE(st.rows, q);
  EXPECT_EQ(st.max_seq, st.rows);
  EXPECT_EQ(e_->get_campaign(c.id).spec.quantity, q);
  ReconcileReport rep = e_->reconcile(c.id);
  EXPECT_TRUE(rep.consistent);
}

// ==== partners and authentication ===============================================================

TEST_P(EngineBehaviour, CreatePartnerShowsTheKeyOnceAndAuthenticates) {
  Engine& e = start();
  PartnerKey pk = e.create_partner("Acme Shop");
  EXPECT_GT(pk.partner.id, 0);
  EXPECT_EQ(pk.partner.name, "Acme Shop");
  EXPECT_EQ(pk.partner.active_keys, 1);
  EXPECT_FALSE(pk.api_key.empty());  // its format: partners_test.cpp
  Partner p = e.authenticate(pk.api_key);
  EXPECT_EQ(p.id, pk.partner.id);
  EXPECT_EQ(e.get_partner(pk.partner.id).name, "Acme Shop");
  EXPECT_EQ(e.get_partner(0).name, "default");
  std::vector<Partner> next = e.list_partners(pk.partner.id - 1, 1);
  ASSERT_EQ(next.size(), 1u);
  EXPECT_EQ(next[0].id, pk.partner.id);
  if (embedded()) {  // a fresh file: the only partner after the default one (production: shared)
    std::vector<Partner> all = e.list_partners(0, 100);
    ASSERT_EQ(all.size(), 1u);  // after id 0
    EXPECT_EQ(all[0].id, pk.partner.id);
  }
}

TEST_P(EngineBehaviour, SteadyStateAuthenticationNeverTouchesTheDatabase) {
  Engine& e = start();
  PartnerKey a = e.create_partner("a"), b = e.create_partner("b");
  for (int i = 0; i < 1000; ++i) {
    EXPECT_EQ(e.authenticate(a.api_key).id, a.partner.id);
    EXPECT_EQ(e.authenticate(b.api_key).id, b.partner.id);
  }
  AuthCounters n = e.auth_counters();
  EXPECT_EQ(n.authentications, 2000u);
  EXPECT_EQ(n.db_queries, 2u);  // one per key, then the cache answers
  EXPECT_EQ(n.cache_hits, 1998u);
  // A flood of the same unknown key costs one query too (negative answers are cached).
  const std::string unknown = unknown_key(a.api_key);
  for (int i = 0; i < 100; ++i) EXPECT_THROW(e.authenticate(unknown), Error);
  EXPECT_EQ(e.auth_counters().db_queries, 3u);
}

TEST_P(EngineBehaviour, UnknownRevokedAndMalformedKeysGetOneError) {
  Engine& e = start();
  PartnerKey pk = e.create_partner("p");
  PartnerKey revoked = e.create_partner("r");
  e.revoke_partner_keys(revoked.partner.id);
  std::vector<std::string> bad = {
      unknown_key(pk.api_key), revoked.api_key, "", "cc_live_", "nonsense", pk.api_key + "x",
      pk.api_key.substr(0, pk.api_key.size() - 1), std::string(100'000, 'a'), std::string("cc_live_\0abc", 12),
  };
  for (const std::string& k : bad) {
    Caught c = catch_error([&] { e.authenticate(k); });
    EXPECT_TRUE(c.thrown);
    EXPECT_EQ(c.code, ErrorCode::kUnauthenticated);
    EXPECT_EQ(c.message, "invalid API key");
  }
}

TEST_P(EngineBehaviour, RotateAndRevokeTakeEffectAtOnceInThisEngine) {
  Engine& e = start();
  PartnerKey pk = e.create_partner("p");
  e.authenticate(pk.api_key);  // cached now
  PartnerKey rotated = e.rotate_partner_key(pk.partner.id);
  EXPECT_NE(rotated.api_key, pk.api_key);
  EXPECT_EQ(rotated.partner.active_keys, 1);
  EXPECT_EQ(catch_error([&] { e.authenticate(pk.api_key); }).code, ErrorCode::kUnauthenticated);
  EXPECT_EQ(e.authenticate(rotated.api_key).id, pk.partner.id);
  EXPECT_EQ(e.revoke_partner_keys(pk.partner.id).active_keys, 0);
  EXPECT_EQ(catch_error([&] { e.authenticate(rotated.api_key); }).code, ErrorCode::kUnauthenticated);
  EXPECT_EQ(catch_error([&] { e.rotate_partner_key(0); }).code, ErrorCode::kInvalidArgument);
  EXPECT_EQ(catch_error([&] { e.rotate_partner_key(int64_t{1} << 50); }).code, ErrorCode::kNotFound);
  EXPECT_EQ(catch_error([&] { e.revoke_partner_keys(-1); }).code, ErrorCode::kNotFound);
}

TEST_P(EngineBehaviour, BadPartnerNamesAndUnknownPartners) {
  use_own_schema();  // list_partners covers the whole store
  Engine& e = start();
  EXPECT_EQ(catch_error([&] { e.create_partner(""); }).code, ErrorCode::kInvalidArgument);
  EXPECT_EQ(catch_error([&] { e.create_partner(std::string(201, 'n')); }).code, ErrorCode::kInvalidArgument);
  EXPECT_EQ(catch_error([&] { e.create_partner("a\nb"); }).code, ErrorCode::kInvalidArgument);
  EXPECT_TRUE(e.list_partners(0, 10).empty());
  EXPECT_EQ(catch_error([&] { e.list_partners(0, 0); }).code, ErrorCode::kInvalidArgument);
  CampaignSpec s = spec(1);
  s.partner_id = 424242;  // no such partner
  EXPECT_EQ(catch_error([&] { e.create_campaign(s); }).code, ErrorCode::kNotFound);
}

TEST_P(EngineBehaviour, BadAuthOptionsAreRefused) {
  AuthOptions bad;
  bad.cache_ttl_ms = -1;
  embedded_options_.auth = bad;
  options_.auth = bad;
  EXPECT_EQ(catch_error([&] { open(); }).code, ErrorCode::kInvalidArgument);
}

// ==== tenant isolation ==========================================================================

// A partner reaching for another partner's campaign, coupon and user through every entry point
// gets kNotFound, word for word the error of an unknown id.
TEST_P(EngineBehaviour, AnotherPartnersObjectsAreNotFoundThroughEveryEntryPoint) {
  start();
  PartnerKey ka = e_->create_partner("a"), kb = e_->create_partner("b");
  PartnerScope a(*e_, ka.partner.id), b(*e_, kb.partner.id), dflt(*e_, 0);
  CampaignSpec s;
  s.name = "a's drop";
  s.quantity = 10;
  s.discount_kind = DiscountKind::kFixed;
  s.discount_value = 100;
  Campaign ca = a.create_campaign(s);
  EXPECT_EQ(ca.spec.partner_id, ka.partner.id);
  IssueResult ra = a.issue(ca.id, {"shared-user", ""});
  ASSERT_EQ(ra.status, IssueStatus::kIssued);
  const int64_t coupon = ra.coupon_id;
  settle(*e_);
  a.use_coupon({coupon, "shared-user", "order-a", 1000});

  const int64_t unknown_campaign = ca.id + 1'000'000;
  const int64_t unknown_coupon = make_coupon_id(ca.id, 9);
  // Word for word the unknown id's error, once each message's id is blanked out.
  auto blank_ids = [&](std::string m) {
    for (int64_t id : {unknown_coupon, coupon, unknown_campaign, ca.id}) {  // longest first
      const std::string digits = std::to_string(id);
      for (std::size_t at; (at = m.find(digits)) != std::string::npos;) m.replace(at, digits.size(), "#");
    }
    return m;
  };
  auto same_as_unknown = [&](const std::function<void()>& theirs, const std::function<void()>& unknown) {
    Caught t = catch_error(theirs), u = catch_error(unknown);
    EXPECT_TRUE(t.thrown);
    EXPECT_EQ(t.code, ErrorCode::kNotFound) << t.message;
    EXPECT_EQ(u.code, ErrorCode::kNotFound) << u.message;
    EXPECT_EQ(blank_ids(t.message), blank_ids(u.message));
  };
  for (PartnerScope* other : {&b, &dflt}) {
    PartnerScope& o = *other;
    same_as_unknown([&] { o.get_campaign(ca.id); }, [&] { o.get_campaign(unknown_campaign); });
    same_as_unknown([&] { o.pause_campaign(ca.id); }, [&] { o.pause_campaign(unknown_campaign); });
    same_as_unknown([&] { o.resume_campaign(ca.id); }, [&] { o.resume_campaign(unknown_campaign); });
    same_as_unknown([&] { o.close_campaign(ca.id); }, [&] { o.close_campaign(unknown_campaign); });
    same_as_unknown([&] { o.set_campaign_quantity(ca.id, 50); }, [&] { o.set_campaign_quantity(unknown_campaign, 50); });
    same_as_unknown([&] { o.campaign_stats(ca.id); }, [&] { o.campaign_stats(unknown_campaign); });
    same_as_unknown([&] { o.issue(ca.id, {"x", ""}); }, [&] { o.issue(unknown_campaign, {"x", ""}); });
    same_as_unknown([&] { o.issue_many(ca.id, {{"x", ""}}); }, [&] { o.issue_many(unknown_campaign, {{"x", ""}}); });
    same_as_unknown([&] { o.submit_issue(ca.id, {{"x", ""}}, [](auto&&, auto) {}); },
                    [&] { o.submit_issue(unknown_campaign, {{"x", ""}}, [](auto&&, auto) {}); });
    same_as_unknown([&] { o.coupon_counts(ca.id); }, [&] { o.coupon_counts(unknown_campaign); });
    same_as_unknown([&] { o.get_coupon(coupon); }, [&] { o.get_coupon(unknown_coupon); });
    same_as_unknown([&] { o.use_coupon({coupon, "shared-user", "order-a", 1000}); },
                    [&] { o.use_coupon({unknown_coupon, "shared-user", "order-a", 1000}); });
    same_as_unknown([&] { o.cancel_coupon_use(coupon, "order-a"); },
                    [&] { o.cancel_coupon_use(unknown_coupon, "order-a"); });
    // The same user id under another partner is another user: no coupons, no error.
    CouponQuery q;
    q.user_id = "shared-user";
    EXPECT_TRUE(o.list_user_coupons(q).items.empty());
    for (const Campaign& c : o.list_campaigns()) EXPECT_NE(c.id, ca.id);
  }
  // Nothing changed for a.
  EXPECT_EQ(a.get_campaign(ca.id).state, CampaignState::kActive);
  EXPECT_EQ(a.get_campaign(ca.id).spec.quantity, 10);
  EXPECT_EQ(a.get_coupon(coupon).state, CouponState::kUsed);
  EXPECT_EQ(a.coupon_counts(ca.id).total, 1);
  CouponQuery q;
  q.user_id = "shared-user";
  EXPECT_EQ(a.list_user_coupons(q).items.size(), 1u);
  EXPECT_EQ(a.list_campaigns().size(), 1u);
  // A scope's create_campaign always creates for its own partner, whatever the spec says.
  s.partner_id = ka.partner.id;
  EXPECT_EQ(b.create_campaign(s).spec.partner_id, kb.partner.id);
}

INSTANTIATE_TEST_SUITE_P(Deployments, EngineBehaviour,
                         ::testing::Values(Deployment::kEmbedded, Deployment::kProduction, Deployment::kCluster),
                         deployment_name);

}  // namespace
