// Rate limits (docs/rate-limits.md) on every deployment through the public Engine API: the
// embedded engine, the production engine on Redis, the same on the Redis Cluster (skipped
// without one), and a campaign of 2 shards on production (the per-user counter lives with the
// user's shard, each shard admits half the per-partner limit).
//
// The concurrency tests hammer a few users from 32 threads and record every answer with the
// wall-clock interval [sent, answered] in ms. The gate decides on the same machine's clock
// (embedded: the system clock; Redis: TIME), so an answer whose interval lies inside one window
// was decided in that window; answers straddling a boundary are left out, which can only lower
// the count, so the threads send nothing in the last 40 ms of a window (the calls of a loaded
// machine take a few ms; a window's first requests would otherwise straddle). Afterwards: for every user (partner: every campaign) and window, the admitted
// answers (anything but RATE_LIMITED) <= the limit, and some window reached it exactly (so the
// test can fail); every RATE_LIMITED answer's retry_after_ms is in (0, window].
#include <gtest/gtest.h>
#include <sqlite3.h>

#include <atomic>
#include <chrono>
#include <map>
#include <mutex>
#include <ostream>
#include <random>
#include <thread>

#include "couponcore/engine.hpp"
#include "couponcore/error.hpp"
#include "couponcore/limits.hpp"
#include "production_test_util.hpp"
#include "test_util.hpp"

using namespace couponcore;

namespace {

enum class Where { kEmbedded, kProduction, kCluster, kSharded };

const char* name_of(Where w) {
  switch (w) {
    case Where::kEmbedded: return "embedded";
    case Where::kProduction: return "production";
    case Where::kCluster: return "cluster";
    default: return "sharded";
  }
}
std::string where_name(const ::testing::TestParamInfo<Where>& info) { return name_of(info.param); }
void PrintTo(Where w, std::ostream* os) { *os << name_of(w); }

IssueRequest req(std::string user, std::string request_id = "") {
  IssueRequest r;
  r.user_id = std::move(user);
  r.request_id = std::move(request_id);
  return r;
}

int64_t wall_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::system_clock::now().time_since_epoch())
      .count();
}

// Sleeps until `margin_ms` into a fresh window of window_ms, so that a short sequence of calls
// falls into one window.
void align_to_window(int64_t window_ms, int64_t margin_ms = 5) {
  const int64_t now = wall_ms();
  std::this_thread::sleep_for(std::chrono::milliseconds(window_ms - now % window_ms + margin_ms));
}

struct Answer {
  std::string user;
  IssueResult result;
  int64_t sent_ms, answered_ms;
};

class RateLimits : public ::testing::TestWithParam<Where> {
 protected:
  void SetUp() override {
    if (GetParam() == Where::kEmbedded) {
      embedded_.path = testutil::temp_path("rate") + ".db";
      embedded_.synchronous_full = false;
      return;
    }
    options_ = testutil::production_options(testutil::current_test_name());
    if (GetParam() == Where::kCluster) {
      if (testutil::cluster_url().empty()) GTEST_SKIP() << "COUPONCORE_TEST_REDIS_CLUSTER is not set";
      options_.redis_url = testutil::cluster_url();
    }
  }
  void TearDown() override {
    e_.reset();
    if (GetParam() == Where::kEmbedded) {
      testutil::remove_db(embedded_.path);
    } else if (GetParam() == Where::kCluster) {
      if (!testutil::cluster_url().empty()) testutil::delete_cluster_keys(options_.key_prefix);
    } else {
      testutil::delete_keys(options_.key_prefix);
    }
  }
  Engine& start() {
    e_.reset();
    e_ = GetParam() == Where::kEmbedded ? open_embedded(embedded_) : open_production(options_);
    return *e_;
  }
  CampaignSpec spec(int32_t per_user, int32_t per_partner, int32_t window_ms) const {
    CampaignSpec s;
    s.name = "rate";
    s.quantity = 1'000'000;
    s.per_user_limit = limits::kPerUserLimitMax;  // ALREADY_ISSUED stays out of the way
    s.shards = GetParam() == Where::kSharded ? 2 : 1;
    s.rate_limit_per_user = per_user;
    s.rate_limit_per_partner = per_partner;
    s.rate_window_ms = window_ms;
    return s;
  }

  // 32 threads for run_ms: each picks a user of `users` and issues one request (every third
  // thread: an issue_many of 4), recording the answers; quiet in each window's last 40 ms. With
  // `refused` a failed call is counted there (its requests got no answer) instead of failing.
  std::vector<Answer> hammer(int64_t campaign_id, const std::vector<std::string>& users, int64_t window_ms,
                             int64_t run_ms, std::atomic<int64_t>* refused = nullptr) {
    std::vector<Answer> all;
    std::mutex mu;
    std::vector<std::thread> threads;
    const int64_t until = wall_ms() + run_ms;
    for (int t = 0; t < 32; ++t) {
      threads.emplace_back([&, t] {
        std::mt19937 rng(t);
        std::vector<Answer> mine;
        try {
          while (wall_ms() < until) {
            if (const int64_t left = window_ms - wall_ms() % window_ms; left < 40) {
              std::this_thread::sleep_for(std::chrono::milliseconds(left));
            }
            std::vector<IssueRequest> batch;
            for (int i = 0; i < (t % 3 == 0 ? 4 : 1); ++i) batch.push_back(req(users[rng() % users.size()]));
            const int64_t sent = wall_ms();
            std::vector<IssueResult> rs;
            try {
              rs = e_->issue_many(campaign_id, batch);
            } catch (const Error& err) {
              if (refused == nullptr) throw;
              ++*refused;
              continue;
            }
            const int64_t answered = wall_ms();
            for (std::size_t i = 0; i < rs.size(); ++i) mine.push_back({batch[i].user_id, rs[i], sent, answered});
          }
        } catch (const std::exception& ex) {
          ADD_FAILURE() << "exception in a thread: " << ex.what();
        }
        std::lock_guard lock(mu);
        all.insert(all.end(), mine.begin(), mine.end());
      });
    }
    for (auto& th : threads) th.join();
    return all;
  }

  // Admitted answers per (key, window) for answers that fall inside one window; key_of picks
  // the user (per-user limit) or "" (per-partner limit). Checks every retry_after_ms.
  static std::map<std::pair<std::string, int64_t>, int64_t> admitted(const std::vector<Answer>& answers,
                                                                    int64_t window_ms, bool per_user,
                                                                    int64_t* limited) {
    std::map<std::pair<std::string, int64_t>, int64_t> out;
    *limited = 0;
    for (const Answer& a : answers) {
      if (a.result.status == IssueStatus::kRateLimited) {
        ++*limited;
        EXPECT_GT(a.result.retry_after_ms, 0);
        EXPECT_LE(a.result.retry_after_ms, window_ms);
        EXPECT_EQ(a.result.seq, 0u);
        continue;
      }
      EXPECT_EQ(a.result.retry_after_ms, 0);
      const int64_t w = a.sent_ms / window_ms;
      if (a.answered_ms / window_ms != w) continue;  // straddles a boundary: window unknown
      out[{per_user ? a.user : std::string(), w}]++;
    }
    return out;
  }

  // The user (per_user) or the campaign admitted at most `limit` per window, and some (user,
  // window) exactly `limit` (so the test would notice an excess); some answers were RATE_LIMITED.
  static void expect_at_most_the_limit(const std::vector<Answer>& answers, int64_t window_ms, bool per_user,
                                       int64_t limit) {
    int64_t limited = 0, at_limit = 0;
    for (const auto& [key, n] : admitted(answers, window_ms, per_user, &limited)) {
      EXPECT_LE(n, limit) << "user " << key.first << " window " << key.second;
      if (n == limit) ++at_limit;
    }
    EXPECT_GT(at_limit, 0) << "no window reached the limit: the test would not notice an excess";
    EXPECT_GT(limited, 0);
  }

  EmbeddedOptions embedded_;
  ProductionOptions options_;
  std::unique_ptr<Engine> e_;
};

TEST_P(RateLimits, ManyThreadsNeverGetMoreThanTheUserLimitPerWindow) {
  constexpr int32_t kLimit = 5, kWindow = 250;
  Engine& e = start();
  Campaign c = e.create_campaign(spec(kLimit, 0, kWindow));
  EXPECT_EQ(c.spec.rate_limit_per_user, kLimit);
  const std::vector<std::string> users = {"ann", "bob", "cid", "dee"};
  std::vector<Answer> answers = hammer(c.id, users, kWindow, 1000);
  expect_at_most_the_limit(answers, kWindow, /*per_user=*/true, kLimit);
  // Every admitted request of this campaign was ISSUED (quantity and per_user_limit are ample).
  for (const Answer& a : answers) {
    if (a.result.status != IssueStatus::kRateLimited) {
      EXPECT_EQ(a.result.status, IssueStatus::kIssued);
    }
  }
}

// A failed group commit (a real SQLite write failure: a trigger refuses the coupon rows of users
// named fail-*) rebuilds the embedded gate from the store; the window's counters survive it, so
// no window admits more than the limit, however many commits fail while 32 threads press.
TEST_P(RateLimits, FailedCommitsDoNotResetTheWindowsCounts) {
  if (GetParam() != Where::kEmbedded) GTEST_SKIP() << "the embedded engine's group commit";
  constexpr int32_t kLimit = 5, kWindow = 250;
  int64_t campaign_id = 0;
  {
    Engine& e = start();
    campaign_id = e.create_campaign(spec(kLimit, 0, kWindow)).id;
    e_.reset();
  }
  {
    sqlite3* db = nullptr;
    ASSERT_EQ(sqlite3_open(embedded_.path.c_str(), &db), SQLITE_OK);
    char* err = nullptr;
    const int rc = sqlite3_exec(db,
                                "CREATE TRIGGER refuse_fail_users BEFORE INSERT ON coupons WHEN NEW.user_id GLOB 'fail-*'"
                                " BEGIN SELECT RAISE(ABORT, 'injected write failure'); END",
                                nullptr, nullptr, &err);
    EXPECT_EQ(rc, SQLITE_OK) << (err ? err : "");
    sqlite3_free(err);
    sqlite3_close(db);
  }
  Engine& e = start();
  std::atomic<bool> stop{false};
  std::atomic<int64_t> refused{0}, faults{0};
  std::thread faulter([&] {  // a commit failure every ~15 ms, a new user each time (never rate limited)
    for (int i = 0; !stop; ++i) {
      try {
        e.issue(campaign_id, req("fail-" + std::to_string(i)));
        ADD_FAILURE() << "a grant of fail-" << i << " was committed";
      } catch (const Error&) {
        ++faults;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(15));
    }
  });
  std::vector<Answer> answers = hammer(campaign_id, {"ann", "bob", "cid", "dee"}, kWindow, 1500, &refused);
  stop = true;
  faulter.join();
  EXPECT_GT(faults.load(), 20);
  EXPECT_GT(refused.load(), 0) << "no pressing call shared a batch with a failed commit";
  EXPECT_GT(e.counters().commit_failures, 20u);
  expect_at_most_the_limit(answers, kWindow, /*per_user=*/true, kLimit);
  // What was answered ISSUED is in the store, and nothing else is.
  int64_t issued = 0;
  for (const Answer& a : answers) issued += a.result.status == IssueStatus::kIssued;
  ASSERT_TRUE(e.drain(20));
  const CampaignStats stats = e.campaign_stats(campaign_id);
  EXPECT_EQ(stats.rows, issued);
  EXPECT_EQ(stats.max_seq, issued);  // seqs 1..issued: a failed batch's seqs were given again
}

TEST_P(RateLimits, ThePartnerLimitHoldsForAllUsersTogether) {
  constexpr int32_t kLimit = 12, kWindow = 250;
  Engine& e = start();
  Campaign c = e.create_campaign(spec(0, kLimit, kWindow));
  std::vector<std::string> users;
  for (int i = 0; i < 64; ++i) users.push_back("user-" + std::to_string(i));
  std::vector<Answer> answers = hammer(c.id, users, kWindow, 1000);
  expect_at_most_the_limit(answers, kWindow, /*per_user=*/false, kLimit);
}

TEST_P(RateLimits, ARetriedRequestIdIsNotCountedAgainAndRateLimitedIsNotRemembered) {
  constexpr int32_t kWindow = 500;
  Engine& e = start();
  CampaignSpec s = spec(2, 0, kWindow);
  s.per_user_limit = 1;
  Campaign c = e.create_campaign(s);
  align_to_window(kWindow);
  IssueResult first = e.issue(c.id, req("u", "r1"));
  ASSERT_EQ(first.status, IssueStatus::kIssued);
  for (int i = 0; i < 3; ++i) {
    IssueResult again = e.issue(c.id, req("u", "r1"));  // the first answer, not counted
    EXPECT_EQ(again.status, IssueStatus::kIssued);
    EXPECT_EQ(again.seq, first.seq);
  }
  EXPECT_EQ(e.issue(c.id, req("u", "r2")).status, IssueStatus::kAlreadyIssued);  // the 2nd counted
  IssueResult over = e.issue(c.id, req("u", "r3"));
  ASSERT_EQ(over.status, IssueStatus::kRateLimited);
  EXPECT_GT(over.retry_after_ms, 0);
  EXPECT_LE(over.retry_after_ms, kWindow);
  EXPECT_EQ(e.issue(c.id, req("u", "r3")).status, IssueStatus::kRateLimited);
  // Another user has a budget of its own.
  EXPECT_EQ(e.issue(c.id, req("v", "r1")).status, IssueStatus::kIssued);
  // After the retry-after, the same request id is decided afresh.
  std::this_thread::sleep_for(std::chrono::milliseconds(over.retry_after_ms + 20));
  EXPECT_EQ(e.issue(c.id, req("u", "r3")).status, IssueStatus::kAlreadyIssued);
}

TEST_P(RateLimits, NotOpenAndSoldOutAnswersAreNotCounted) {
  constexpr int32_t kWindow = 500;
  Engine& e = start();
  CampaignSpec s = spec(1, 0, kWindow);
  s.quantity = 2;
  s.per_user_limit = 1;
  s.shards = 1;  // sold out at once (a sharded campaign moves stock first)
  Campaign c = e.create_campaign(s);
  align_to_window(kWindow);
  e.pause_campaign(0, c.id);
  for (int i = 0; i < 5; ++i) EXPECT_EQ(e.issue(c.id, req("u")).status, IssueStatus::kNotOpen);
  e.resume_campaign(0, c.id);
  EXPECT_EQ(e.issue(c.id, req("u")).status, IssueStatus::kIssued);  // the window's first count
  EXPECT_EQ(e.issue(c.id, req("u")).status, IssueStatus::kRateLimited);
  EXPECT_EQ(e.issue(c.id, req("v")).status, IssueStatus::kIssued);  // sold out now
  // Sold out: SOLD_OUT / ALREADY_ISSUED, not counted, as the sold-out fast path answers.
  for (int i = 0; i < 5; ++i) {
    EXPECT_EQ(e.issue(c.id, req("w")).status, IssueStatus::kSoldOut);
    EXPECT_EQ(e.issue(c.id, req("u")).status, IssueStatus::kAlreadyIssued);
  }
}

TEST_P(RateLimits, OutOfRangeLimitsAreRefusedAndNothingIsWritten) {
  Engine& e = start();
  const std::size_t before = e.list_campaigns(0).size();
  auto refused = [&](CampaignSpec s) {
    try {
      e.create_campaign(s);
      ADD_FAILURE() << "accepted " << s.rate_limit_per_user << "/" << s.rate_limit_per_partner << "/" << s.rate_window_ms;
    } catch (const Error& err) {
      EXPECT_EQ(err.code(), ErrorCode::kInvalidArgument) << err.what();
    }
  };
  refused(spec(-1, 0, 1000));
  refused(spec(limits::kRateLimitMax + 1, 0, 1000));
  refused(spec(0, -1, 1000));
  refused(spec(0, limits::kRateLimitMax + 1, 1000));
  refused(spec(1, 0, limits::kRateWindowMsMin - 1));
  refused(spec(1, 0, limits::kRateWindowMsMax + 1));
  refused(spec(0, 0, 0));
  CampaignSpec sharded = spec(0, 3, 1000);
  sharded.shards = 4;  // a partner limit below the shards cannot be split
  refused(sharded);
  EXPECT_EQ(e.list_campaigns(0).size(), before);

  Campaign c = e.create_campaign(spec(3, 10, 500));
  for (auto [u, p, w] : {std::tuple{-1, 0, 500}, {0, limits::kRateLimitMax + 1, 500}, {1, 1, 5}}) {
    try {
      e.set_campaign_rate_limits(0, c.id, u, p, w);
      ADD_FAILURE() << "accepted " << u << "/" << p << "/" << w;
    } catch (const Error& err) {
      EXPECT_EQ(err.code(), ErrorCode::kInvalidArgument) << err.what();
    }
  }
  Campaign now = e.get_campaign(c.id);
  EXPECT_EQ(now.spec.rate_limit_per_user, 3);
  EXPECT_EQ(now.spec.rate_limit_per_partner, 10);
  EXPECT_EQ(now.spec.rate_window_ms, 500);
  // Another partner's campaign is not found, and unchanged.
  try {
    e.set_campaign_rate_limits(12345, c.id, 1, 1, 1000);
    ADD_FAILURE() << "another partner changed the limits";
  } catch (const Error& err) {
    EXPECT_EQ(err.code(), ErrorCode::kNotFound);
  }
  EXPECT_EQ(e.get_campaign(c.id).spec.rate_limit_per_user, 3);
}

TEST_P(RateLimits, ChangedLimitsApplyAtOnceAndSurviveAReopen) {
  constexpr int32_t kWindow = 500;
  Engine& e = start();
  Campaign c = e.create_campaign(spec(0, 0, kWindow));
  for (int i = 0; i < 10; ++i) EXPECT_EQ(e.issue(c.id, req("u")).status, IssueStatus::kIssued);
  Campaign changed = e.set_campaign_rate_limits(0, c.id, 1, 0, kWindow);
  EXPECT_EQ(changed.spec.rate_limit_per_user, 1);
  align_to_window(kWindow);
  EXPECT_EQ(e.issue(c.id, req("u")).status, IssueStatus::kIssued);
  EXPECT_EQ(e.issue(c.id, req("u")).status, IssueStatus::kRateLimited);
  ASSERT_TRUE(e.drain(20));
  Engine& again = start();  // the store holds the limits
  Campaign read = again.get_campaign(c.id);
  EXPECT_EQ(read.spec.rate_limit_per_user, 1);
  EXPECT_EQ(read.spec.rate_window_ms, kWindow);
  align_to_window(kWindow);
  EXPECT_EQ(again.issue(c.id, req("u")).status, IssueStatus::kIssued);
  EXPECT_EQ(again.issue(c.id, req("u")).status, IssueStatus::kRateLimited);
  again.set_campaign_rate_limits(0, c.id, 0, 0, kWindow);  // off again
  for (int i = 0; i < 5; ++i) EXPECT_EQ(again.issue(c.id, req("u")).status, IssueStatus::kIssued);
  EXPECT_EQ(again.counters().by_status[static_cast<int>(IssueStatus::kRateLimited)], 1u);
}

INSTANTIATE_TEST_SUITE_P(Deployments, RateLimits,
                         ::testing::Values(Where::kEmbedded, Where::kProduction, Where::kCluster, Where::kSharded),
                         where_name);

}  // namespace
