// The production path under load and under failure, on real Redis and PostgreSQL:
//   - many threads and two gate engines hammer one campaign; so do several forked processes
//   - the worker (a forked child running run_worker) is SIGKILLed mid-batch and restarted
//   - the gate's Redis connection is killed (CLIENT KILL) again and again during the load
//   - poison entries go to the dead-letter stream without blocking the others
//   - PostgreSQL is restarted during the load: grants pile up in the stream and land afterwards
// After each: drain, then the invariants read back from PostgreSQL: rows == grants, one row per
// user (limit 1), seqs 1..N, every ISSUED answer is exactly one row, Redis count == rows.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <filesystem>
#include <map>
#include <mutex>
#include <random>
#include <set>
#include <thread>

#include "couponcore/engine.hpp"
#include "couponcore/error.hpp"
#include "couponcore/worker.hpp"
#include "store/postgres/pg.hpp"
#include "production_test_util.hpp"
#include "redis/keys.hpp"
#include "redis/redis.hpp"

using namespace couponcore;

namespace {

// What callers were told, collected across threads.
struct Answers {
  std::mutex mu;
  std::map<uint32_t, std::string> issued;  // seq -> user
  int64_t unavailable = 0;
  int64_t other_errors = 0;
  std::string first_error;

  void add(const std::string& user, const IssueResult& r) {
    if (r.status != IssueStatus::kIssued) return;
    std::lock_guard lock(mu);
    auto [it, inserted] = issued.emplace(r.seq, user);
    if (!inserted && it->second != user) {
      ADD_FAILURE() << "seq " << r.seq << " told to " << it->second << " and " << user;
    }
  }
  void error(const Error& e) {
    std::lock_guard lock(mu);
    if (e.code() == ErrorCode::kUnavailable) {
      unavailable++;
    } else {
      other_errors++;
      if (first_error.empty()) first_error = e.what();
    }
  }
};

class ProductionChaosTest : public ::testing::Test {
 protected:
  void SetUp() override { options_ = testutil::production_options(testutil::current_test_name()); }
  void TearDown() override { testutil::delete_keys(options_.key_prefix); }
  static CampaignSpec spec(int64_t quantity, int32_t limit = 1) {
    CampaignSpec s;
    s.name = "chaos";
    s.quantity = quantity;
    s.per_user_limit = limit;
    return s;
  }
  redis::RedisConn redis() { return redis::RedisConn(redis::RedisUrl::parse(options_.redis_url), {}); }

  // The invariants after drain, read from PostgreSQL and Redis.
  void expect_store_matches(Engine& e, int64_t campaign_id, Answers& answers, int32_t limit = 1) {
    pg::Conn conn(options_.postgres_url);
    pg::Result rows = conn.exec("SELECT seq, user_id FROM coupons WHERE campaign_id = $1 ORDER BY seq",
                                pg::Params().add(campaign_id));
    std::map<std::string, int> per_user;
    for (int i = 0; i < rows.rows(); ++i) {
      ASSERT_EQ(rows.i64(i, 0), i + 1) << "seqs are 1..N without gaps";
      per_user[std::string(rows.text(i, 1))]++;
    }
    for (auto& [user, n] : per_user) EXPECT_LE(n, limit) << user;
    for (auto& [seq, user] : answers.issued) {
      ASSERT_LE(seq, static_cast<uint32_t>(rows.rows())) << "ISSUED seq " << seq << " has no row";
      EXPECT_EQ(rows.text(static_cast<int>(seq) - 1, 1), user) << "seq " << seq;
    }
    ReconcileReport rep = e.reconcile(campaign_id);
    EXPECT_EQ(rep.gate_issued, rows.rows()) << "Redis count == rows";
    EXPECT_EQ(rep.redriven, 0) << "drain left grants in the log";
    EXPECT_TRUE(rep.consistent) << "missing " << rep.missing_in_store << " unexpected " << rep.unexpected_in_store
                                << " holder mismatches " << rep.holder_mismatches;
  }

  ProductionOptions options_;
};

IssueRequest req(std::string user, std::string request_id = "") { return {std::move(user), std::move(request_id)}; }

TEST_F(ProductionChaosTest, ManyThreadsAndTwoGatesHammerOneCampaign) {
  constexpr int kQuantity = 3000;
  constexpr int kThreads = 16;
  constexpr int kPerThread = 500;
  options_.writer_threads = 2;
  auto e1 = open_production(options_);
  ProductionOptions o2 = options_;
  o2.writer_threads = 0;  // a web process without writers
  auto e2 = open_production(o2);
  Campaign c = e1->create_campaign(spec(kQuantity));
  Answers answers;
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      Engine& e = t % 2 ? *e2 : *e1;
      std::mt19937 rng(t);
      for (int i = 0; i < kPerThread; ++i) {
        std::string user = "user" + std::to_string(rng() % 6000);  // users press more than once
        try {
          answers.add(user, e.issue(c.id, req(user)));
        } catch (const Error& err) {
          answers.error(err);
        }
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(answers.unavailable + answers.other_errors, 0) << answers.first_error;
  EXPECT_EQ(answers.issued.size(), static_cast<std::size_t>(kQuantity));
  ASSERT_TRUE(e1->drain(30));
  CampaignStats st = e1->campaign_stats(c.id);
  EXPECT_EQ(st.rows, kQuantity);
  EXPECT_EQ(st.distinct_users, kQuantity);
  EXPECT_EQ(st.min_seq, 1);
  EXPECT_EQ(st.max_seq, kQuantity);
  expect_store_matches(*e1, c.id, answers);
  // Coalescing: far fewer Lua calls than requests.
  EngineCounters k1 = e1->counters(), k2 = e2->counters();
  EXPECT_LT(k1.batches + k2.batches, k1.requests + k2.requests);
  EXPECT_EQ(k1.grants_written, static_cast<uint64_t>(kQuantity));
}

// ---- the worker process, killed and restarted -------------------------------------------------

std::atomic<bool> g_child_stop{false};
void on_sigterm(int) { g_child_stop.store(true); }

// Forks a child that runs run_worker (after reading one byte from `gate_fd` if >= 0). Call it
// while this process has no other threads: the child runs only the worker.
pid_t fork_worker(const WorkerOptions& wo, int gate_fd) {
  const pid_t pid = ::fork();
  if (pid != 0) return pid;
  ::signal(SIGTERM, on_sigterm);
  int rc = 3;
  try {
    char b;
    if (gate_fd < 0 || ::read(gate_fd, &b, 1) == 1) rc = run_worker(wo, g_child_stop);
  } catch (...) {
    rc = 2;
  }
  ::_exit(rc);  // no atexit handlers: the parent owns the test database
}

int64_t pending_of(redis::RedisConn& r, const std::string& stream, const std::string& consumer) {
  redis::Reply p = r.command(redis::Args{"XPENDING"}.add(stream).add(redis::kWriterGroup).add("-").add("+").add("1000").add(consumer));
  return p.is_array() ? static_cast<int64_t>(p.size()) : 0;
}

TEST_F(ProductionChaosTest, WorkerKilledMidBatchAndRestartedLosesNothingAndDuplicatesNothing) {
  constexpr int kQuantity = 4000;
  WorkerOptions wo;
  wo.redis_url = options_.redis_url;
  wo.postgres_url = options_.postgres_url;
  wo.key_prefix = options_.key_prefix;
  wo.migrate_on_start = false;
  wo.writer = options_.writer;
  wo.writer.read_count_max = 25;  // small batches: many commits, a wide "mid-batch" window
  wo.writer.claim_idle_ms = 300;
  int gate[2];
  ASSERT_EQ(::pipe(gate), 0);
  // Both children are forked now, while this process has no other threads.
  wo.consumer_name = "victim";
  const pid_t victim = fork_worker(wo, -1);
  ASSERT_GT(victim, 0);
  wo.consumer_name = "successor";
  const pid_t successor = fork_worker(wo, gate[0]);
  ASSERT_GT(successor, 0);
  ::close(gate[0]);

  options_.writer_threads = 0;  // the workers write
  auto e = open_production(options_);
  Campaign c = e->create_campaign(spec(kQuantity));
  redis::CampaignKeys keys(options_.key_prefix, c.id);
  Answers answers;
  std::atomic<bool> loading{true};
  std::vector<std::thread> threads;
  for (int t = 0; t < 8; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < kQuantity / 8; ++i) {
        const std::string user = "w" + std::to_string(t) + "-" + std::to_string(i);
        try {
          answers.add(user, e->issue(c.id, req(user)));
        } catch (const Error& err) {
          answers.error(err);
        }
        if (i % 50 == 0) std::this_thread::sleep_for(std::chrono::milliseconds(2));
      }
    });
  }
  // Kill the worker while it holds delivered, unacknowledged grants, after it wrote some.
  redis::RedisConn r = redis();
  pg::Conn conn(options_.postgres_url);
  int64_t pending_at_kill = 0;
  const int64_t deadline = redis::steady_ms() + 20'000;
  while (redis::steady_ms() < deadline) {
    const int64_t rows = e->campaign_stats(c.id).rows;
    const int64_t pending = pending_of(r, keys.grants, "victim-0");
    if (rows > 0 && pending > 0) {
      ::kill(victim, SIGKILL);
      pending_at_kill = pending;
      break;
    }
  }
  int status = 0;
  ::waitpid(victim, &status, 0);
  ASSERT_GT(pending_at_kill, 0) << "the worker was never caught mid-batch";
  EXPECT_TRUE(WIFSIGNALED(status));
  for (auto& th : threads) th.join();
  loading = false;
  EXPECT_EQ(answers.unavailable + answers.other_errors, 0) << answers.first_error;
  // Grants pile up while no worker runs; the successor claims the dead one's pending entries.
  ASSERT_EQ(::write(gate[1], "g", 1), 1);
  ::close(gate[1]);
  EXPECT_TRUE(e->drain(30));
  EXPECT_EQ(pending_of(r, keys.grants, "victim-0"), 0);
  CampaignStats st = e->campaign_stats(c.id);
  EXPECT_EQ(st.rows, kQuantity);
  EXPECT_EQ(st.distinct_users, kQuantity);
  EXPECT_EQ(st.max_seq, kQuantity);
  expect_store_matches(*e, c.id, answers);
  ::kill(successor, SIGTERM);
  ::waitpid(successor, &status, 0);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << "worker exit status " << status;
}

// ---- several processes -----------------------------------------------------------------------

// A child process: reads the campaign id from `in_fd`, opens its own engine (no writers),
// issues from 4 threads to users drawn from a pool shared with the other processes, writes
// "seq user" for each ISSUED answer to `out_fd`, and exits (1 on any error).
[[noreturn]] void hammer_child(const ProductionOptions& o, int in_fd, int out_fd, int child) {
  int rc = 0;
  try {
    int64_t campaign_id = 0;
    if (::read(in_fd, &campaign_id, sizeof campaign_id) != sizeof campaign_id) ::_exit(3);
    ProductionOptions co = o;
    co.writer_threads = 0;
    co.client_name += "-child" + std::to_string(child);
    auto e = open_production(co);
    std::mutex mu;
    std::string out;
    std::atomic<int> errors{0};
    std::vector<std::thread> threads;
    for (int t = 0; t < 4; ++t) {
      threads.emplace_back([&, t] {
        std::mt19937 rng(child * 100 + t);
        for (int i = 0; i < 300; ++i) {
          const std::string user = "pu" + std::to_string(rng() % 5000);
          try {
            IssueResult r = e->issue(campaign_id, req(user));
            if (r.status == IssueStatus::kIssued) {
              std::lock_guard lock(mu);
              out += std::to_string(r.seq) + " " + user + "\n";
            }
          } catch (...) {
            errors++;
          }
        }
      });
    }
    for (auto& th : threads) th.join();
    e->close();
    for (std::size_t off = 0; off < out.size();) {
      const ssize_t n = ::write(out_fd, out.data() + off, out.size() - off);
      if (n <= 0) ::_exit(4);
      off += static_cast<std::size_t>(n);
    }
    rc = errors.load() == 0 ? 0 : 1;
  } catch (...) {
    rc = 2;
  }
  ::_exit(rc);
}

TEST_F(ProductionChaosTest, SeveralProcessesHammerOneCampaign) {
  constexpr int kChildren = 3;
  constexpr int kQuantity = 2000;
  // Fork first, while this process has no threads; the children wait for the campaign id.
  std::vector<pid_t> pids;
  std::vector<int> to_child, from_child;
  for (int c = 0; c < kChildren; ++c) {
    int in[2], out[2];
    ASSERT_EQ(::pipe(in), 0);
    ASSERT_EQ(::pipe(out), 0);
    const pid_t pid = ::fork();
    ASSERT_GE(pid, 0);
    if (pid == 0) {
      ::close(in[1]);
      ::close(out[0]);
      hammer_child(options_, in[0], out[1], c);
    }
    ::close(in[0]);
    ::close(out[1]);
    pids.push_back(pid);
    to_child.push_back(in[1]);
    from_child.push_back(out[0]);
  }
  options_.writer_threads = 2;
  auto e = open_production(options_);
  Campaign c = e->create_campaign(spec(kQuantity));
  for (int fd : to_child) {
    ASSERT_EQ(::write(fd, &c.id, sizeof c.id), static_cast<ssize_t>(sizeof c.id));
    ::close(fd);
  }
  Answers answers;
  std::vector<std::thread> readers;
  for (int fd : from_child) {
    readers.emplace_back([&answers, fd] {
      std::string buf;
      char chunk[4096];
      ssize_t n;
      while ((n = ::read(fd, chunk, sizeof chunk)) > 0) buf.append(chunk, static_cast<std::size_t>(n));
      ::close(fd);
      std::size_t pos = 0;
      while (pos < buf.size()) {
        const std::size_t end = buf.find('\n', pos);
        const std::string line = buf.substr(pos, end - pos);
        pos = end + 1;
        const std::size_t sp = line.find(' ');
        IssueResult r;
        r.status = IssueStatus::kIssued;
        r.seq = static_cast<uint32_t>(std::stoul(line.substr(0, sp)));
        answers.add(line.substr(sp + 1), r);
      }
    });
  }
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      std::mt19937 rng(1000 + t);
      for (int i = 0; i < 300; ++i) {
        const std::string user = "pu" + std::to_string(rng() % 5000);
        try {
          answers.add(user, e->issue(c.id, req(user)));
        } catch (const Error& err) {
          answers.error(err);
        }
      }
    });
  }
  for (auto& th : threads) th.join();
  for (auto& th : readers) th.join();
  for (pid_t pid : pids) {
    int status = 0;
    ::waitpid(pid, &status, 0);
    EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << "child status " << status;
  }
  EXPECT_EQ(answers.unavailable + answers.other_errors, 0) << answers.first_error;
  ASSERT_TRUE(e->drain(30));
  CampaignStats st = e->campaign_stats(c.id);
  EXPECT_EQ(st.rows, static_cast<int64_t>(answers.issued.size())) << "every grant was told to someone";
  EXPECT_EQ(st.rows, st.distinct_users);
  EXPECT_LE(st.rows, kQuantity);
  expect_store_matches(*e, c.id, answers);
}

// ---- the gate's connection, killed during the load ------------------------------------------

int kill_client(redis::RedisConn& r, const std::string& name) {
  redis::Reply list = r.command_checked(redis::Args{"CLIENT", "LIST"}, "CLIENT LIST");
  std::string_view text = list.str();
  int killed = 0;
  std::size_t pos = 0;
  while (pos < text.size()) {
    std::size_t end = text.find('\n', pos);
    if (end == std::string_view::npos) end = text.size();
    std::string_view line = text.substr(pos, end - pos);
    pos = end + 1;
    if (line.find(" name=" + name + " ") == std::string_view::npos) continue;
    std::string_view id = line.substr(3, line.find(' ') - 3);  // "id=NNN ..."
    redis::Reply k = r.command(redis::Args{"CLIENT", "KILL", "ID"}.add(id));
    if (k.is_integer() && k.integer() == 1) killed++;
  }
  return killed;
}

TEST_F(ProductionChaosTest, GateConnectionKilledDuringLoad) {
  constexpr int kQuantity = 3000;
  options_.gate_batch_requests_max = 32;  // many calls in flight when the kill lands
  auto e = open_production(options_);
  Campaign c = e->create_campaign(spec(kQuantity));
  Answers answers;
  std::atomic<int> kills{0};
  std::atomic<bool> loading{true};
  std::thread killer([&] {
    redis::RedisConn r = redis();
    while (loading.load()) {
      std::this_thread::sleep_for(std::chrono::milliseconds(25));
      kills += kill_client(r, options_.client_name + "-gate");
    }
  });
  std::vector<std::thread> threads;
  for (int t = 0; t < 8; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < 600; ++i) {
        const std::string user = "k" + std::to_string(t) + "-" + std::to_string(i);
        // Half the callers send request ids: a lost reply is re-asked and answered truly.
        const std::string rid = t % 2 ? "rq" + std::to_string(i) : "";
        try {
          answers.add(user, e->issue(c.id, req(user, rid)));
        } catch (const Error& err) {
          answers.error(err);
        }
      }
    });
  }
  for (auto& th : threads) th.join();
  loading = false;
  killer.join();
  EXPECT_GT(kills.load(), 0);
  EXPECT_EQ(answers.other_errors, 0) << "only answers or Unavailable: " << answers.first_error;
  EXPECT_GT(e->counters().redis_reconnects, 1u);
  ASSERT_TRUE(e->drain(30));
  // Grants whose callers heard Unavailable exist too (the outcome was unknown to them), so
  // rows >= ISSUED answers; every ISSUED answer is exactly its row.
  CampaignStats st = e->campaign_stats(c.id);
  EXPECT_GE(st.rows, static_cast<int64_t>(answers.issued.size()));
  EXPECT_EQ(st.rows, st.distinct_users);
  expect_store_matches(*e, c.id, answers);
  std::printf("[ info ] %d kills, %lld unavailable, %zu issued answers, %lld rows\n", kills.load(),
              static_cast<long long>(answers.unavailable), answers.issued.size(), static_cast<long long>(st.rows));
}

// ---- poison entries ----------------------------------------------------------------------------

TEST_F(ProductionChaosTest, PoisonEntriesGoToTheDeadLetterStreamAndDoNotBlockOthers) {
  options_.writer.claim_idle_ms = 150;
  options_.writer.claim_interval_ms = 50;
  options_.writer.dead_letter_after_deliveries = 3;
  auto e = open_production(options_);
  Campaign c = e->create_campaign(spec(100));
  for (int i = 0; i < 10; ++i) ASSERT_EQ(e->issue(c.id, req("u" + std::to_string(i))).status, IssueStatus::kIssued);
  ASSERT_TRUE(e->drain(10));
  redis::CampaignKeys keys(options_.key_prefix, c.id);
  redis::RedisConn r = redis();
  const std::string cid = std::to_string(c.id);
  // Malformed: cannot be parsed into a grant. Conflict: seq 1 already belongs to u0.
  r.command_checked(redis::Args{"XADD"}.add(keys.grants).add("*").add("c").add(cid).add("s").add("oops"), "XADD");
  r.command_checked(redis::Args{"XADD"}
                        .add(keys.grants)
                        .add("*")
                        .add("c").add(cid)
                        .add("s").add("1")
                        .add("u").add("mallory")
                        .add("o").add("1")
                        .add("r").add("")
                        .add("t").add(now_us()),
                    "XADD");
  // A batch entry (as the gate writes them) with a conflicting grant between two good ones, and
  // a batch entry with a malformed line.
  r.command_checked(redis::Args{"XADD"}
                        .add(keys.grants)
                        .add("*")
                        .add("c").add(cid)
                        .add("t").add(now_us())
                        .add("g").add("90 1 zed-1 \n2 1 mallory-2 r-9\n91 1 zed-2 "),
                    "XADD");
  r.command_checked(
      redis::Args{"XADD"}.add(keys.grants).add("*").add("c").add(cid).add("t").add(now_us()).add("g").add("92 1 "),
      "XADD");
  for (int i = 10; i < 20; ++i) ASSERT_EQ(e->issue(c.id, req("u" + std::to_string(i))).status, IssueStatus::kIssued);
  ASSERT_TRUE(e->drain(20));
  EXPECT_EQ(e->campaign_stats(c.id).rows, 22);  // the others were not blocked: u0..u19, zed-1, zed-2
  redis::Reply dl = r.command_checked(redis::Args{"XRANGE"}.add(keys.dead_letters).add("-").add("+"), "XRANGE");
  ASSERT_EQ(dl.size(), 4u);
  // The refused grant of the batch entry is a record of its own, with its fields.
  bool found_batch_grant = false;
  for (std::size_t i = 0; i < dl.size(); ++i) {
    const redisReply* fields = dl.at(i)->element[1];
    std::map<std::string, std::string> f;
    for (std::size_t k = 0; k + 1 < fields->elements; k += 2) {
      f[std::string(redis::reply_str(fields->element[k]))] = std::string(redis::reply_str(fields->element[k + 1]));
    }
    if (f["u"] == "mallory-2") {
      found_batch_grant = true;
      EXPECT_EQ(f["s"], "2");
      EXPECT_EQ(f["o"], "1");
      EXPECT_EQ(f["r"], "r-9");
      EXPECT_EQ(f["c"], cid);
      EXPECT_EQ(f["deliveries"], "3");
      EXPECT_EQ(f["reason"].substr(0, 9), "conflict:");
    }
  }
  EXPECT_TRUE(found_batch_grant);
  std::set<std::string> reasons;
  for (std::size_t i = 0; i < dl.size(); ++i) {
    const redisReply* fields = dl.at(i)->element[1];
    for (std::size_t k = 0; k + 1 < fields->elements; k += 2) {
      if (redis::reply_str(fields->element[k]) == "reason") {
        reasons.insert(std::string(redis::reply_str(fields->element[k + 1])).substr(0, 9));
      }
      if (redis::reply_str(fields->element[k]) == "deliveries" &&
          redis::reply_str(fields->element[k + 1]) != "1") {
        EXPECT_EQ(redis::reply_str(fields->element[k + 1]), "3");  // the conflict was retried
      }
    }
  }
  EXPECT_EQ(reasons, (std::set<std::string>{"malformed", "conflict:"}));
  EXPECT_EQ(e->counters().dead_lettered, 4u);
  EXPECT_EQ(r.command(redis::Args{"XLEN"}.add(keys.grants)).integer(), 0);
  pg::Conn conn(options_.postgres_url);
  EXPECT_EQ(conn.exec("SELECT count(*) FROM coupons WHERE user_id IN ('mallory', 'mallory-2')").i64(0, 0), 0);
  EXPECT_EQ(conn.exec("SELECT count(*) FROM coupons WHERE user_id IN ('zed-1', 'zed-2')").i64(0, 0), 2);
}

// ---- PostgreSQL restarted during the load -----------------------------------------------------

std::string postgres_version() {
  std::string best;
  for (const auto& d : std::filesystem::directory_iterator("/etc/postgresql")) {
    const std::string v = d.path().filename().string();
    if (std::filesystem::exists(d.path() / "main") && v > best) best = v;
  }
  return best;
}

TEST_F(ProductionChaosTest, PostgresRestartDuringLoadGrantsPileUpAndLandAfterwards) {
  const std::string version = postgres_version();
  ASSERT_FALSE(version.empty()) << "no cluster under /etc/postgresql/<version>/main";
  options_.writer.backoff_max_ms = 300;
  auto e = open_production(options_);
  Campaign c = e->create_campaign(spec(100'000));
  redis::CampaignKeys keys(options_.key_prefix, c.id);
  Answers answers;
  std::atomic<bool> loading{true};
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; loading.load(); ++i) {
        const std::string user = "p" + std::to_string(t) + "-" + std::to_string(i);
        try {
          answers.add(user, e->issue(c.id, req(user)));
        } catch (const Error& err) {
          answers.error(err);
        }
        std::this_thread::sleep_for(std::chrono::microseconds(500));
      }
    });
  }
  std::this_thread::sleep_for(std::chrono::milliseconds(500));
  const std::string cmd = "pg_ctlcluster --skip-systemctl-redirect " + version + " main restart";
  std::atomic<bool> restarting{true};
  int64_t max_backlog = 0;
  std::thread watcher([&] {
    redis::RedisConn r = redis();
    while (restarting.load()) {
      max_backlog = std::max<int64_t>(max_backlog, r.command(redis::Args{"XLEN"}.add(keys.grants)).integer());
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
  });
  const int rc = std::system(cmd.c_str());
  restarting = false;
  watcher.join();
  ASSERT_EQ(rc, 0) << cmd;
  std::this_thread::sleep_for(std::chrono::milliseconds(500));  // issuing goes on afterwards
  loading = false;
  for (auto& th : threads) th.join();
  EXPECT_EQ(answers.unavailable + answers.other_errors, 0) << "the gate does not need PostgreSQL: " << answers.first_error;
  EXPECT_GT(max_backlog, 50) << "grants waited in the stream while PostgreSQL was down";
  EXPECT_GT(e->counters().writer_failures, 0u);
  ASSERT_TRUE(e->drain(30));
  CampaignStats st = e->campaign_stats(c.id);  // the control connection reconnects by itself
  EXPECT_EQ(st.rows, static_cast<int64_t>(answers.issued.size()));
  expect_store_matches(*e, c.id, answers);
  std::printf("[ info ] %zu grants, backlog peaked at %lld during the restart, %llu writer failures\n",
              answers.issued.size(), static_cast<long long>(max_backlog),
              static_cast<unsigned long long>(e->counters().writer_failures));
}

}  // namespace
