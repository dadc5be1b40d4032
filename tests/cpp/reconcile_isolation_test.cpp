// Reconcile never stalls issuance (production). A reconcile is held in the middle of its
// re-drive — a test transaction locks the campaign's row, so the re-drive's insert (which takes
// a key-share lock on it for the foreign key) waits — and while it is provably still running,
// issue answers keep arriving: on a campaign whose Redis mirror is gone (so the gate's I/O
// thread must rebuild it from PostgreSQL) and on a healthy one. Before the rooms, reconcile held
// the control connections' mutexes for its whole run and the mirror repair waited on one of
// them, so every issue answer waited for the reconcile. Progress, not timing: no clock is read
// except to bound the waits.
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <future>
#include <thread>

#include "couponcore/engine.hpp"
#include "production_test_util.hpp"
#include "redis/keys.hpp"
#include "redis/redis.hpp"
#include "store/postgres/pg.hpp"

using namespace couponcore;

namespace {

CampaignSpec spec(int64_t quantity) {
  CampaignSpec s;
  s.name = "drop";
  s.quantity = quantity;
  s.per_user_limit = 1;
  return s;
}

// Sessions of this database waiting on a lock: the held reconcile shows up here.
int64_t lock_waiters(pg::Conn& conn) {
  return conn
      .exec("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'")
      .i64(0, 0);
}

TEST(ReconcileIsolation, IssueAnswersKeepArrivingWhileAReconcileRuns) {
  ProductionOptions o = testutil::production_options(testutil::current_test_name());
  o.writer_threads = 0;  // grants stay in the log for the reconcile to re-drive
  auto e = open_production(o);
  const Campaign logged = e->create_campaign(spec(1'000));
  const Campaign lost = e->create_campaign(spec(100));
  const Campaign healthy = e->create_campaign(spec(100));
  std::vector<IssueRequest> many;
  for (int i = 0; i < 500; ++i) many.push_back({"u" + std::to_string(i), ""});
  ASSERT_EQ(e->issue_many(logged.id, many).size(), 500u);
  ASSERT_EQ(e->issue(lost.id, {"before", ""}).status, IssueStatus::kIssued);

  // The mirror of `lost` goes away: its next issue makes the I/O thread rebuild it from the store.
  redis::RedisConn r(redis::RedisUrl::parse(o.redis_url), {});
  r.command_checked(redis::Args{"DEL"}.add(redis::CampaignKeys(o.key_prefix, lost.id).meta), "DEL");

  // Hold the re-drive: lock the logged campaign's row.
  pg::Conn holder(o.postgres_url);
  pg::Conn watcher(o.postgres_url);
  holder.exec("BEGIN");
  holder.exec("SELECT id FROM campaigns WHERE id = $1 FOR UPDATE", pg::Params().add(logged.id));

  std::atomic<bool> reconcile_done{false};
  std::future<ReconcileReport> rec = std::async(std::launch::async, [&] {
    ReconcileReport rep = e->reconcile(logged.id);
    reconcile_done = true;
    return rep;
  });
  const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(30);
  while (lock_waiters(watcher) == 0 && std::chrono::steady_clock::now() < until) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  ASSERT_GT(lock_waiters(watcher), 0) << "the reconcile never reached the held row";
  ASSERT_FALSE(reconcile_done.load());

  // While it waits: a mirror repair and ordinary issuance, each answered.
  std::future<IssueResult> repaired = std::async(std::launch::async, [&] { return e->issue(lost.id, {"after", ""}); });
  const bool answered = repaired.wait_for(std::chrono::seconds(20)) == std::future_status::ready;
  int healthy_answers = 0;
  for (int i = 0; answered && i < 50; ++i) {
    if (e->issue(healthy.id, {"h" + std::to_string(i), ""}).status == IssueStatus::kIssued) ++healthy_answers;
  }
  const bool still_running = !reconcile_done.load() && lock_waiters(watcher) > 0;
  holder.exec("ROLLBACK");  // let the reconcile finish, whatever the outcome above
  ReconcileReport rep = rec.get();

  ASSERT_TRUE(answered) << "the issue that needed a mirror repair waited for the reconcile";
  EXPECT_EQ(repaired.get().status, IssueStatus::kIssued);
  EXPECT_EQ(healthy_answers, 50);
  EXPECT_TRUE(still_running) << "the reconcile finished before the answers: nothing was shown";
  EXPECT_EQ(rep.redriven, 500);
  EXPECT_TRUE(rep.consistent);
  e->close();
  testutil::delete_keys(o.key_prefix);
}

}  // namespace
