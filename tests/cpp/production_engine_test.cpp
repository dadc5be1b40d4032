// What only the production engine has, on real Redis and PostgreSQL: Lua calls and pipelining,
// the sold-out fast path shared between engines, campaigns found by another engine through
// PostgreSQL, the Lua script cache flushed, key injection kept inside the prefix, production
// options, reconcile re-driving the grant log, the mirror rebuilt from the store, Redis URLs.
// The gate semantics both deployments share (sold out, request ids, reopen, bad input, ...) run
// on both in engine_behaviour_test.cpp. Every test uses its own key prefix; the servers must be
// up (the tests fail if not).
#include <gtest/gtest.h>

#include <map>
#include <set>
#include <thread>

#include "couponcore/engine.hpp"
#include "couponcore/error.hpp"
#include "couponcore/limits.hpp"
#include "production_test_util.hpp"
#include "redis/keys.hpp"
#include "redis/redis.hpp"

using namespace couponcore;

namespace {

class ProductionEngineTest : public ::testing::Test {
 protected:
  void SetUp() override { options_ = testutil::production_options(testutil::current_test_name()); }
  void TearDown() override { testutil::delete_keys(options_.key_prefix); }
  std::unique_ptr<Engine> open() { return open_production(options_); }
  static CampaignSpec spec(int64_t quantity, int32_t limit = 1) {
    CampaignSpec s;
    s.name = "drop";
    s.quantity = quantity;
    s.per_user_limit = limit;
    return s;
  }
  redis::RedisConn redis() { return redis::RedisConn(redis::RedisUrl::parse(options_.redis_url), {}); }
  ProductionOptions options_;
};

IssueRequest req(std::string user, std::string request_id = "") { return {std::move(user), std::move(request_id)}; }

template <typename Fn>
void expect_code(ErrorCode code, Fn&& fn) {
  try {
    fn();
    ADD_FAILURE() << "no error";
  } catch (const Error& err) {
    EXPECT_EQ(err.code(), code) << err.what();
  }
}

TEST_F(ProductionEngineTest, BigIssueManySpansSeveralLuaCalls) {
  options_.gate_batch_requests_max = 64;
  options_.gate_pipeline_calls_max = 4;
  auto e = open();
  Campaign c = e->create_campaign(spec(1000));
  std::vector<IssueRequest> batch;
  for (int i = 0; i < 1500; ++i) batch.push_back(req("u" + std::to_string(i)));
  std::vector<IssueResult> r = e->issue_many(c.id, batch);
  ASSERT_EQ(r.size(), 1500u);
  for (int i = 0; i < 1000; ++i) {
    ASSERT_EQ(r[i].status, IssueStatus::kIssued) << i;
    EXPECT_EQ(r[i].seq, static_cast<uint32_t>(i + 1));  // in order across calls
  }
  for (int i = 1000; i < 1500; ++i) EXPECT_EQ(r[i].status, IssueStatus::kSoldOut);
  EXPECT_GE(e->counters().batches, 1500u / 64);
  ASSERT_TRUE(e->drain(20));
  EXPECT_EQ(e->campaign_stats(c.id).rows, 1000);
}

TEST_F(ProductionEngineTest, ConcurrentCampaignsArePipelinedAndWrittenApart) {
  options_.writer.streams_per_read_max = 2;  // the writer rotates over more streams than one read takes
  auto e = open();
  constexpr int kCampaigns = 5;
  constexpr int kPerCampaign = 200;
  std::vector<Campaign> cs;
  for (int i = 0; i < kCampaigns; ++i) cs.push_back(e->create_campaign(spec(kPerCampaign)));
  std::vector<std::thread> threads;
  std::vector<std::set<uint32_t>> seqs(kCampaigns);
  std::mutex mu;
  for (int t = 0; t < 10; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < kPerCampaign / 2; ++i) {
        const int ci = (t + i) % kCampaigns;
        IssueResult r = e->issue(cs[ci].id, req("t" + std::to_string(t) + "-" + std::to_string(i)));
        ASSERT_EQ(r.status, IssueStatus::kIssued);
        ASSERT_EQ(r.coupon_id, make_coupon_id(cs[ci].id, r.seq));
        std::lock_guard lock(mu);
        EXPECT_TRUE(seqs[ci].insert(r.seq).second);
      }
    });
  }
  for (auto& th : threads) th.join();
  ASSERT_TRUE(e->drain(20));
  for (int i = 0; i < kCampaigns; ++i) {
    EXPECT_EQ(seqs[i].size(), static_cast<std::size_t>(kPerCampaign));
    CampaignStats st = e->campaign_stats(cs[i].id);
    EXPECT_EQ(st.rows, kPerCampaign);
    EXPECT_EQ(st.max_seq, kPerCampaign);
  }
}

TEST_F(ProductionEngineTest, SoldOutIsAnsweredWithoutARoundTripAndHoldersStillHear) {
  auto e = open();
  Campaign c = e->create_campaign(spec(2, 2));
  IssueResult first = e->issue(c.id, req("h1", "rq1"));
  EXPECT_EQ(e->issue(c.id, req("h1")).status, IssueStatus::kIssued);
  EXPECT_EQ(e->issue(c.id, req("late")).status, IssueStatus::kSoldOut);  // this reply shows the sell-out
  // The holder set is read once; from then on the answers are local.
  const uint64_t batches = e->counters().batches;
  const uint64_t fast = e->counters().fast_path;
  EXPECT_EQ(e->issue(c.id, req("h1")).status, IssueStatus::kAlreadyIssued);
  EXPECT_EQ(e->issue(c.id, req("nobody")).status, IssueStatus::kSoldOut);
  EXPECT_EQ(e->issue_many(c.id, {req("x"), req("y"), req("h1")})[2].status, IssueStatus::kAlreadyIssued);
  EXPECT_EQ(e->counters().batches, batches);
  EXPECT_EQ(e->counters().fast_path, fast + 5);
  // A holder retrying its request id still gets its ISSUED answer (from Redis).
  IssueResult retry = e->issue(c.id, req("h1", "rq1"));
  EXPECT_EQ(retry.status, IssueStatus::kIssued);
  EXPECT_EQ(retry.seq, first.seq);
  // A second engine (another process) learns the sell-out from its first reply.
  auto e2 = open();
  EXPECT_EQ(e2->issue(c.id, req("h1")).status, IssueStatus::kAlreadyIssued);
  EXPECT_EQ(e2->issue(c.id, req("other")).status, IssueStatus::kSoldOut);
  EXPECT_EQ(e2->issue(c.id, req("other2")).status, IssueStatus::kSoldOut);
  EXPECT_GE(e2->counters().fast_path, 1u);
}


TEST_F(ProductionEngineTest, CampaignsLiveInPostgres) {
  auto e = open();
  CampaignSpec s = spec(7, 2);
  s.partner_id = e->create_partner("campaigns-live-in-postgres").partner.id;  // a fresh partner: a list of one
  s.discount_kind = DiscountKind::kPercent;
  s.discount_value = 15;
  s.discount_max = 5000;
  s.valid_days = 30;
  Campaign c = e->create_campaign(s);
  auto other = open();  // another process finds it through PostgreSQL
  Campaign got = other->get_campaign(c.id);
  EXPECT_EQ(got.spec.name, "drop");
  EXPECT_EQ(got.spec.discount_value, 15);
  EXPECT_EQ(got.spec.discount_max, 5000);
  EXPECT_EQ(got.spec.valid_days, 30);
  std::vector<Campaign> list = other->list_campaigns(s.partner_id);
  ASSERT_EQ(list.size(), 1u);
  EXPECT_EQ(list[0].id, c.id);
  EXPECT_EQ(other->issue(c.id, req("u")).status, IssueStatus::kIssued);
}

TEST_F(ProductionEngineTest, ScriptCacheFlushIsSurvived) {
  auto e = open();
  Campaign c = e->create_campaign(spec(10));
  EXPECT_EQ(e->issue(c.id, req("a")).seq, 1u);
  redis::RedisConn r = redis();
  r.command_checked(redis::Args{"SCRIPT", "FLUSH"}, "SCRIPT FLUSH");  // as after a Redis restart
  EXPECT_EQ(e->issue_many(c.id, {req("b"), req("c")})[1].seq, 3u);  // NOSCRIPT -> SCRIPT LOAD -> again
  r.command_checked(redis::Args{"SCRIPT", "FLUSH"}, "SCRIPT FLUSH");
  ASSERT_TRUE(e->drain(10));  // the writer's scripts reload too
  EXPECT_EQ(e->issue(c.id, req("d")).seq, 4u);
  ASSERT_TRUE(e->drain(10));
  EXPECT_EQ(e->campaign_stats(c.id).rows, 4);
}

// Production only: the ids reach Redis as key names and Lua arguments. That every one of them is
// refused (on both deployments): engine_behaviour_test.cpp, BadInputIsRefusedAndChangesNothing.
// Here: the attempts created nothing outside this deployment's prefix.
TEST_F(ProductionEngineTest, KeyInjectionAttemptsCreateNoKeyOutsideThePrefix) {
  auto e = open();
  Campaign c = e->create_campaign(spec(10));
  for (const char* evil : {"u}{x", "{c1}:m", "x\r\nFLUSHALL\r\n", "a b", "*", "user|r", "ünï", "k'--",
                           "$(rm)", "a;DEL"}) {
    expect_code(ErrorCode::kInvalidArgument, [&] { e->issue(c.id, req(evil)); });
    expect_code(ErrorCode::kInvalidArgument, [&] { e->issue(c.id, req("ok", evil)); });
  }
  redis::RedisConn r = redis();
  EXPECT_EQ(r.command(redis::Args{"EXISTS"}.add("{c1}:m")).integer(), 0);
}
TEST_F(ProductionEngineTest, BadOptionsAreRefused) {
  ProductionOptions o = options_;
  o.key_prefix = "bad{prefix}";
  expect_code(ErrorCode::kInvalidArgument, [&] { open_production(o); });
  o = options_;
  o.key_prefix = "has space";
  expect_code(ErrorCode::kInvalidArgument, [&] { open_production(o); });
  o = options_;
  o.redis_url = "http://127.0.0.1:6379";
  expect_code(ErrorCode::kInvalidArgument, [&] { open_production(o); });
  o = options_;
  o.writer_threads = -1;
  expect_code(ErrorCode::kInvalidArgument, [&] { open_production(o); });
  o = options_;
  o.redis_url = "redis://127.0.0.1:1/0";  // nobody listens: Unavailable, not a hang
  o.redis_connect_timeout_ms = 500;
  expect_code(ErrorCode::kUnavailable, [&] { open_production(o); });
}

TEST_F(ProductionEngineTest, ReconcileRedrivesWhatTheLogHolds) {
  options_.writer_threads = 0;  // nobody writes: the grants stay in the log
  auto e = open();
  Campaign c = e->create_campaign(spec(50));
  for (int i = 0; i < 30; ++i) ASSERT_EQ(e->issue(c.id, req("u" + std::to_string(i))).status, IssueStatus::kIssued);
  EXPECT_FALSE(e->drain(0.2));
  EXPECT_EQ(e->campaign_stats(c.id).rows, 0);
  ReconcileReport r = e->reconcile(c.id);
  EXPECT_EQ(r.gate_issued, 30);
  EXPECT_EQ(r.gate_holders, 30);
  EXPECT_EQ(r.log_pending, 30);
  EXPECT_EQ(r.redriven, 30);
  EXPECT_EQ(r.store_rows, 30);
  EXPECT_EQ(r.missing_in_store, 0);
  EXPECT_EQ(r.holder_mismatches, 0);
  EXPECT_TRUE(r.consistent);
  EXPECT_TRUE(e->drain(1));  // the re-driven entries left the log
  ReconcileReport again = e->reconcile(c.id);
  EXPECT_EQ(again.redriven, 0);
  EXPECT_EQ(again.log_pending, 0);
  EXPECT_TRUE(again.consistent);
}

// More entries than one XRANGE page, batch entries (issue_many) between one-grant entries, small
// re-drive chunks, and one entry holding a grant that conflicts with a row already there: that
// entry stays in the log, every other entry lands and leaves it.
TEST_F(ProductionEngineTest, ReconcileRedrivesPageByPageAndKeepsARefusedEntry) {
  options_.writer_threads = 0;
  options_.writer.read_count_max = 50;
  auto e = open();
  Campaign c = e->create_campaign(spec(1000));
  for (int i = 0; i < 150; ++i) ASSERT_EQ(e->issue(c.id, req("u" + std::to_string(i))).status, IssueStatus::kIssued);
  std::vector<IssueRequest> batch;
  for (int i = 0; i < 120; ++i) batch.push_back(req("b" + std::to_string(i)));
  for (const IssueResult& r : e->issue_many(c.id, batch)) ASSERT_EQ(r.status, IssueStatus::kIssued);
  for (int i = 150; i < 200; ++i) ASSERT_EQ(e->issue(c.id, req("u" + std::to_string(i))).status, IssueStatus::kIssued);
  // A row that takes seq 160 (b9's, inside the batch entry) for somebody else, as a poison would.
  pg::Conn conn(options_.postgres_url);
  conn.exec("INSERT INTO coupons (id, campaign_id, seq, user_id, user_ordinal, issued_at_us) VALUES ($1, $2, 160, 'intruder', 1, 1)",
            pg::Params().add((c.id << 32) | 160).add(c.id));
  redis::CampaignKeys k(options_.key_prefix, c.id);
  redis::RedisConn r = redis();
  const int64_t entries_before = r.command(redis::Args{"XLEN"}.add(k.grants)).integer();
  EXPECT_GT(entries_before, 64);   // more than one page
  EXPECT_LT(entries_before, 320);  // the 120-request issue_many is not 120 entries
  ReconcileReport rep = e->reconcile(c.id);
  EXPECT_EQ(rep.gate_issued, 320);
  EXPECT_EQ(rep.redriven, 319);
  EXPECT_EQ(rep.log_pending, 320);
  EXPECT_EQ(rep.store_rows, 320);  // 319 grants + the intruder
  EXPECT_EQ(rep.holder_mismatches, 2);  // the intruder holds a coupon the gate gave to another user
  EXPECT_FALSE(rep.consistent);
  // Only the batch entry with the refused grant is left in the log; its 119 other grants landed.
  EXPECT_EQ(r.command(redis::Args{"XLEN"}.add(k.grants)).integer(), 1);
  EXPECT_EQ(conn.exec("SELECT count(*) FROM coupons WHERE campaign_id = $1 AND user_id = 'b9'",
                      pg::Params().add(c.id)).i64(0, 0), 0);
  EXPECT_EQ(conn.exec("SELECT count(*) FROM coupons WHERE campaign_id = $1 AND user_id LIKE 'b%'",
                      pg::Params().add(c.id)).i64(0, 0), 119);
}

TEST_F(ProductionEngineTest, ReconcileReportsDrift) {
  options_.writer_threads = 0;
  auto e = open();
  Campaign c = e->create_campaign(spec(10));
  for (int i = 0; i < 4; ++i) e->issue(c.id, req("u" + std::to_string(i)));
  redis::CampaignKeys k(options_.key_prefix, c.id);
  redis::RedisConn r = redis();
  r.command_checked(redis::Args{"DEL"}.add(k.grants), "DEL");  // the log lost grants 1..4
  ReconcileReport rep = e->reconcile(c.id);
  EXPECT_EQ(rep.gate_issued, 4);
  EXPECT_EQ(rep.store_rows, 0);
  EXPECT_EQ(rep.missing_in_store, 4);
  EXPECT_EQ(rep.missing_seqs_sample, (std::vector<int64_t>{1, 2, 3, 4}));
  EXPECT_EQ(rep.holder_mismatches, 4);
  EXPECT_FALSE(rep.consistent);
}

TEST_F(ProductionEngineTest, LostMirrorIsRebuiltFromTheStore) {
  auto e = open();
  Campaign c = e->create_campaign(spec(5, 2));
  e->issue(c.id, req("a"));
  e->issue(c.id, req("a"));
  e->issue(c.id, req("b"));
  ASSERT_TRUE(e->drain(10));
  // Redis forgets the campaign (a flush, a failover without persistence).
  redis::CampaignKeys k(options_.key_prefix, c.id);
  redis::RedisConn r = redis();
  r.command_checked(redis::Args{"DEL"}.add(k.meta).add(k.holders), "DEL");
  EXPECT_EQ(e->issue(c.id, req("a")).status, IssueStatus::kAlreadyIssued);
  IssueResult next = e->issue(c.id, req("c"));
  EXPECT_EQ(next.status, IssueStatus::kIssued);
  EXPECT_EQ(next.seq, 4u);  // the counter continues from the store
  ASSERT_TRUE(e->drain(10));
  EXPECT_EQ(e->campaign_stats(c.id).rows, 4);
}

TEST(RedisUrl, ParsesTheUsualForms) {
  redis::RedisUrl u = redis::RedisUrl::parse("redis://127.0.0.1:6380/3");
  EXPECT_EQ(u.host, "127.0.0.1");
  EXPECT_EQ(u.port, 6380);
  EXPECT_EQ(u.db, 3);
  u = redis::RedisUrl::parse("redis://:s%40cret@cache.local/0");
  EXPECT_EQ(u.password, "s@cret");
  EXPECT_EQ(u.username, "");
  EXPECT_EQ(u.port, 6379);
  EXPECT_EQ(u.host, "cache.local");
  u = redis::RedisUrl::parse("redis://app:pw@[::1]:7000");
  EXPECT_EQ(u.username, "app");
  EXPECT_EQ(u.password, "pw");
  EXPECT_EQ(u.host, "::1");
  EXPECT_EQ(u.port, 7000);
  EXPECT_EQ(u.redacted().find("pw"), std::string::npos);
  for (const char* bad : {"rediss://h", "h:6379", "redis://h:0", "redis://h:99999", "redis://h/x", "redis://:%zz@h"}) {
    EXPECT_THROW(redis::RedisUrl::parse(bad), Error) << bad;
  }
}

}  // namespace

namespace {

// A closed engine gives its PostgreSQL connections back at close(), not when the object goes:
// the server's slots are few (a Python engine lives until it is collected). Production only:
// the embedded deployment holds no server connection.
TEST_F(ProductionEngineTest, CloseGivesBackEveryPostgresConnection) {
  auto e = open();
  Campaign c = e->create_campaign(spec(10));
  IssueResult r = e->issue(c.id, req("ann"));
  ASSERT_EQ(r.status, IssueStatus::kIssued);
  ASSERT_TRUE(e->drain(30));
  e->get_coupon(0, r.coupon_id);  // the lifecycle's pool
  e->campaign_stats(c.id);        // the control pool
  pg::Conn watcher(options_.postgres_url);
  auto ours = [&] {
    return watcher
        .exec("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()"
              " AND application_name LIKE 'couponcore%'")
        .i64(0, 0);
  };
  ASSERT_GT(ours(), 0);
  e->close();
  const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (ours() > 0 && std::chrono::steady_clock::now() < until) std::this_thread::sleep_for(std::chrono::milliseconds(20));
  EXPECT_EQ(ours(), 0);
}

// The grant log's backlog as Engine::log_backlog() reports it: entries wait while no writer
// runs (nothing pending: nobody read them), a read without an acknowledgement is pending and
// ages on Redis's clock, a malformed entry ends in the dead letters, and once a writer drained
// the log it is empty (acknowledged entries are trimmed).
TEST_F(ProductionEngineTest, LogBacklogReportsEntriesPendingAgeAndDeadLetters) {
  options_.writer_threads = 0;
  auto e = open();
  Campaign c = e->create_campaign(spec(50));
  for (int i = 0; i < 5; ++i) ASSERT_EQ(e->issue(c.id, req("u" + std::to_string(i))).status, IssueStatus::kIssued);
  std::vector<LogBacklog> b = e->log_backlog();
  ASSERT_EQ(b.size(), 1u);
  EXPECT_EQ(b[0].campaign_id, c.id);
  EXPECT_GE(b[0].entries, 1);  // one entry per Lua call: up to one per issue
  EXPECT_LE(b[0].entries, 5);
  EXPECT_EQ(b[0].pending, 0);
  EXPECT_EQ(b[0].oldest_pending_age_ms, 0);
  EXPECT_EQ(b[0].dead_letters, 0);
  const int64_t entries = b[0].entries;

  // A consumer reads one entry and does not acknowledge it.
  redis::CampaignKeys keys(options_.key_prefix, c.id);
  redis::RedisConn r = redis();
  redis::Reply read = r.command_checked(redis::Args{"XREADGROUP", "GROUP"}
                                            .add(redis::kWriterGroup)
                                            .add("probe")
                                            .add("COUNT")
                                            .add("1")
                                            .add("STREAMS")
                                            .add(keys.grants)
                                            .add(">"),
                                        "XREADGROUP");
  ASSERT_TRUE(read.is_array());
  std::this_thread::sleep_for(std::chrono::milliseconds(50));
  b = e->log_backlog();
  ASSERT_EQ(b.size(), 1u);
  EXPECT_EQ(b[0].entries, entries);
  EXPECT_EQ(b[0].pending, 1);
  EXPECT_GE(b[0].oldest_pending_age_ms, 50);  // the entry is older than its read
  EXPECT_LT(b[0].oldest_pending_age_ms, 60'000);

  // A malformed entry: the writer dead-letters it.
  r.command_checked(
      redis::Args{"XADD"}.add(keys.grants).add("*").add("c").add(std::to_string(c.id)).add("s").add("oops"), "XADD");
  EXPECT_EQ(e->log_backlog()[0].entries, entries + 1);

  // A writer (another engine on the deployment) claims the idle entry and drains the log.
  ProductionOptions with_writer = options_;
  with_writer.writer_threads = 1;
  with_writer.writer.claim_idle_ms = 100;
  with_writer.writer.claim_interval_ms = 50;
  auto w = open_production(with_writer);
  ASSERT_TRUE(w->drain(20));
  for (Engine* eng : {e.get(), w.get()}) {
    b = eng->log_backlog();
    ASSERT_EQ(b.size(), 1u);
    EXPECT_EQ(b[0].campaign_id, c.id);
    EXPECT_EQ(b[0].entries, 0);
    EXPECT_EQ(b[0].pending, 0);
    EXPECT_EQ(b[0].oldest_pending_age_ms, 0);
    EXPECT_EQ(b[0].dead_letters, 1);
  }
  EXPECT_EQ(e->campaign_stats(c.id).rows, 5);
  e->close();
  expect_code(ErrorCode::kClosed, [&] { e->log_backlog(); });
}

}  // namespace
