// Redis Cluster: the slot function, the redis+cluster:// URL, the router against the test
// cluster (scripts/cluster.sh; COUPONCORE_TEST_REDIS_CLUSTER, set by scripts/with-test-env.sh),
// the production engine on it, a campaign's slot migrated to another master mid-sale, and bad
// clusters (no seed, a slot map with holes, a plain server, mixed URLs).
//
// The tests that need the cluster skip when COUPONCORE_TEST_REDIS_CLUSTER is unset (`make test`
// sets it); the hole test starts its own one-node cluster on a free port.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <fstream>
#include <map>
#include <mutex>
#include <set>
#include <thread>

#include "couponcore/engine.hpp"
#include "couponcore/error.hpp"
#include "production_test_util.hpp"
#include "redis/cluster.hpp"
#include "redis/keys.hpp"
#include "redis/redis.hpp"

using namespace couponcore;

namespace {

using testutil::cluster_url;
using testutil::delete_cluster_keys;

#define NEED_CLUSTER()                                                                     \
  do {                                                                                     \
    if (cluster_url().empty()) GTEST_SKIP() << "COUPONCORE_TEST_REDIS_CLUSTER is not set"; \
  } while (0)

// A loopback port that nothing listens on (bound, read, closed).
int free_port() {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a.sin_port = 0;
  EXPECT_EQ(::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a), 0);
  socklen_t len = sizeof a;
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len);
  ::close(fd);
  return ntohs(a.sin_port);
}

// A port P <= 55535 with P and P + 10000 (the cluster bus) both free.
int free_cluster_port() {
  std::mt19937 rng(std::random_device{}());
  for (int attempt = 0; attempt < 200; ++attempt) {
    const int p = 20000 + static_cast<int>(rng() % 35000);
    bool ok = true;
    for (int port : {p, p + 10000}) {
      const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
      sockaddr_in a{};
      a.sin_family = AF_INET;
      a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
      a.sin_port = htons(static_cast<uint16_t>(port));
      ok = ok && ::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0;
      ::close(fd);
    }
    if (ok) return p;
  }
  ADD_FAILURE() << "no free port pair for a cluster node";
  return 0;
}

redis::RedisConn plain(const std::string& addr, int64_t timeout_ms = 5000) {
  redis::RedisConnOptions o;
  o.command_timeout_ms = timeout_ms;
  return redis::RedisConn(redis::RedisUrl::parse("redis://" + addr), o);
}

std::string node_id(const std::string& addr) {
  redis::RedisConn c = plain(addr);
  return std::string(c.command_checked(redis::Args{"CLUSTER", "MYID"}, "MYID").str());
}

// Moves a slot to another master by the cluster's own protocol (what redis-cli --cluster
// reshard does): IMPORTING / MIGRATING, MIGRATE the keys `per_call` at a time, then NODE on
// every master. Returns the keys moved.
int64_t migrate_slot(int slot, const std::string& from, const std::string& to, const std::vector<std::string>& masters,
                     int per_call, int pause_ms) {
  redis::RedisConn src = plain(from), dst = plain(to);
  const std::string from_id = node_id(from), to_id = node_id(to);
  dst.command_checked(redis::Args{"CLUSTER", "SETSLOT"}.add(slot).add("IMPORTING").add(from_id), "IMPORTING");
  src.command_checked(redis::Args{"CLUSTER", "SETSLOT"}.add(slot).add("MIGRATING").add(to_id), "MIGRATING");
  const std::string to_host = to.substr(0, to.rfind(':'));
  const std::string to_port = to.substr(to.rfind(':') + 1);
  int64_t moved = 0;
  for (;;) {
    redis::Reply keys = src.command_checked(redis::Args{"CLUSTER", "GETKEYSINSLOT"}.add(slot).add(per_call), "GETKEYSINSLOT");
    if (keys.size() == 0) break;
    redis::Args mig{"MIGRATE"};
    mig.add(to_host).add(to_port).add("").add("0").add("5000").add("KEYS");
    for (std::size_t i = 0; i < keys.size(); ++i) mig.add(redis::reply_str(keys.at(i)));
    src.command_checked(mig, "MIGRATE");
    moved += static_cast<int64_t>(keys.size());
    if (pause_ms > 0) std::this_thread::sleep_for(std::chrono::milliseconds(pause_ms));
  }
  dst.command_checked(redis::Args{"CLUSTER", "SETSLOT"}.add(slot).add("NODE").add(to_id), "NODE");
  src.command_checked(redis::Args{"CLUSTER", "SETSLOT"}.add(slot).add("NODE").add(to_id), "NODE");
  for (const std::string& m : masters) {
    if (m == from || m == to) continue;
    plain(m).command_checked(redis::Args{"CLUSTER", "SETSLOT"}.add(slot).add("NODE").add(to_id), "NODE");
  }
  return moved;
}

// Leaves a slot STABLE on every master when a test that migrates it ends, even half-way (a
// failed run must not leave the shared test cluster with a slot stuck in MIGRATING).
struct SlotStabilizer {
  int slot;
  std::vector<std::string> masters;
  ~SlotStabilizer() {
    for (const std::string& m : masters) {
      try {
        plain(m).command(redis::Args{"CLUSTER", "SETSLOT"}.add(slot).add("STABLE"));
      } catch (const Error&) {
      }
    }
  }
};

IssueRequest req(std::string user, std::string request_id = "") { return {std::move(user), std::move(request_id)}; }

CampaignSpec spec(int64_t quantity, int32_t limit = 1) {
  CampaignSpec s;
  s.name = "cluster";
  s.quantity = quantity;
  s.per_user_limit = limit;
  return s;
}

// ---- the slot function and the URL -------------------------------------------------------------

TEST(RedisClusterSlots, Crc16AndHashTagsMatchTheSpec) {
  EXPECT_EQ(redis::crc16("123456789"), 0x31C3);  // the Redis Cluster spec's test vector
  EXPECT_EQ(redis::key_slot("foo"), 12182);       // CLUSTER KEYSLOT foo
  EXPECT_EQ(redis::key_slot("bar"), 5061);
  EXPECT_EQ(redis::key_slot("{user1000}.following"), redis::key_slot("{user1000}.followers"));
  EXPECT_EQ(redis::key_slot("foo{}{bar}"), redis::crc16("foo{}{bar}") & 16383);  // empty tag: the whole key
  EXPECT_EQ(redis::key_slot("foo{{bar}}zap"), redis::crc16("{bar") & 16383);
  EXPECT_EQ(redis::key_slot("foo{bar}{zap}"), redis::key_slot("bar"));
  // Every key of a campaign shares its slot; the set of campaigns is elsewhere.
  redis::CampaignKeys k("pfx:", 42);
  for (const std::string& key : {k.holders, k.grants, k.dead_letters, k.reasons, k.answers(7)}) {
    EXPECT_EQ(redis::key_slot(key), redis::key_slot(k.meta)) << key;
  }
  EXPECT_EQ(redis::key_slot(k.meta), redis::key_slot("c42"));
}

TEST(RedisClusterSlots, KeySlotAgreesWithTheServer) {
  NEED_CLUSTER();
  redis::RedisConn c(redis::RedisUrl::parse(cluster_url()), {});
  std::vector<std::string> keys = {"foo", "bar", "", "a", "{", "}", "{}", "x{y}z", "cctest:{c1}:m", "cctest:campaigns"};
  for (int i = 0; i < 200; ++i) keys.push_back("p" + std::to_string(i * 7919) + ":{c" + std::to_string(i) + "}:g");
  for (const std::string& key : keys) {
    redis::Reply r = c.command_checked(redis::Args{"CLUSTER", "KEYSLOT"}.add(key), "KEYSLOT");
    EXPECT_EQ(r.integer(), redis::key_slot(key)) << key;
  }
}

TEST(RedisClusterUrl, SeedsAndTypedErrors) {
  redis::RedisUrl u = redis::RedisUrl::parse("redis+cluster://bob:s%40cret@127.0.0.1:7000,localhost:7001,[::1]:7002/0");
  ASSERT_TRUE(u.cluster());
  ASSERT_EQ(u.cluster_seeds.size(), 3u);
  EXPECT_EQ(u.cluster_seeds[1], std::make_pair(std::string("localhost"), 7001));
  EXPECT_EQ(u.cluster_seeds[2], std::make_pair(std::string("::1"), 7002));
  EXPECT_EQ(u.username, "bob");
  EXPECT_EQ(u.password, "s@cret");
  EXPECT_EQ(u.redacted().find("cret"), std::string::npos);
  EXPECT_FALSE(redis::RedisUrl::parse("redis://127.0.0.1:6379/2").cluster());
  EXPECT_EQ(redis::RedisUrl::parse("redis://:pa,ss@127.0.0.1:6379").password, "pa,ss");  // a comma in a password
  EXPECT_EQ(redis::RedisUrl::parse("redis+cluster://:pa,ss@127.0.0.1:7000").password, "pa,ss");

  auto expect_invalid = [](const std::string& url, const std::string& words) {
    try {
      redis::RedisUrl::parse(url);
      ADD_FAILURE() << url << " was accepted";
    } catch (const Error& e) {
      EXPECT_EQ(e.code(), ErrorCode::kInvalidArgument) << url;
      EXPECT_NE(std::string(e.what()).find(words), std::string::npos) << url << ": " << e.what();
    }
  };
  expect_invalid("redis://127.0.0.1:7000,127.0.0.1:7001", "mixes the cluster and single-node forms");
  expect_invalid("redis+cluster://127.0.0.1:7000,redis://127.0.0.1:6379", "mixes the cluster and single-node forms");
  expect_invalid("redis+cluster://127.0.0.1:7000/3", "database 0 only");
  expect_invalid("redis+cluster://127.0.0.1:7000,,127.0.0.1:7001", "empty seed");
  expect_invalid("redis+cluster://127.0.0.1", "needs a port");
  expect_invalid("redis+cluster://127.0.0.1:99999", "port");
  expect_invalid("rediss+cluster://127.0.0.1:7000", "redis+cluster://");
}

// ---- the router against the test cluster -------------------------------------------------------

class RedisClusterTest : public ::testing::Test {
 protected:
  void SetUp() override {
    NEED_CLUSTER();
    prefix_ = testutil::key_prefix(testutil::current_test_name());
  }
  void TearDown() override {
    if (!prefix_.empty()) delete_cluster_keys(prefix_);
  }
  ProductionOptions options() {
    ProductionOptions o = testutil::production_options(testutil::current_test_name());
    o.redis_url = cluster_url();
    o.key_prefix = prefix_;
    return o;
  }
  std::string prefix_;
};

TEST_F(RedisClusterTest, RoutesPipelinesScriptsAndCommandsAcrossMasters) {
  redis::RedisConn c(redis::RedisUrl::parse(cluster_url()), {});
  c.ensure_connected();
  ASSERT_EQ(c.cluster()->masters(), 3u);
  std::set<std::string> owners;
  for (int i = 0; i < 60; ++i) {
    const std::string key = prefix_ + "{k" + std::to_string(i) + "}";
    owners.insert(c.cluster()->master_of(redis::key_slot(key)));
    c.append(redis::Args{"SET"}.add(key).add(i));
  }
  EXPECT_EQ(owners.size(), 3u) << "60 tags land on every master";
  for (int i = 0; i < 60; ++i) EXPECT_EQ(c.read_reply().str(), "OK");
  for (int i = 0; i < 60; ++i) c.append(redis::Args{"GET"}.add(prefix_ + "{k" + std::to_string(i) + "}"));
  for (int i = 0; i < 60; ++i) EXPECT_EQ(c.read_reply().str(), std::to_string(i)) << i;
  // A script is loaded on every master: EVALSHA works whichever master a key lives on.
  redis::Script s("return redis.call('INCRBY', KEYS[1], ARGV[1])");
  for (int i = 0; i < 60; ++i) {
    redis::Reply r = redis::eval(c, s, {prefix_ + "{k" + std::to_string(i) + "}"}, redis::Args{}.add(int64_t{100}));
    ASSERT_TRUE(r.is_integer()) << r.str();
    EXPECT_EQ(r.integer(), i + 100);
  }
  // Keyless commands go to one master.
  EXPECT_EQ(c.command_checked(redis::Args{"TIME"}, "TIME").size(), 2u);
}

TEST_F(RedisClusterTest, FollowsAskDuringAMigrationAndMovedAfterIt) {
  redis::RedisConn c(redis::RedisUrl::parse(cluster_url()), {});
  c.ensure_connected();
  const std::string tag = "{mig" + std::to_string(::getpid()) + "}";
  const std::string a = prefix_ + tag + ":a", b = prefix_ + tag + ":b", cc = prefix_ + tag + ":c";
  const int slot = redis::key_slot(a);
  c.command_checked(redis::Args{"SET"}.add(a).add("1"), "SET");
  c.command_checked(redis::Args{"SET"}.add(b).add("2"), "SET");
  const std::string from = c.cluster()->master_of(slot);
  const std::vector<std::string> masters = c.cluster()->master_addrs();
  SlotStabilizer stable{slot, masters};
  std::string to;
  for (const std::string& m : masters) {
    if (m != from) to = m;
  }
  // Half-way: `a` moved, `b` not. A GET of `a` is ASKed to the target, of `b` served at home;
  // the router's map still names the source.
  redis::RedisConn src = plain(from), dst = plain(to);
  dst.command_checked(redis::Args{"CLUSTER", "SETSLOT"}.add(slot).add("IMPORTING").add(node_id(from)), "IMPORTING");
  src.command_checked(redis::Args{"CLUSTER", "SETSLOT"}.add(slot).add("MIGRATING").add(node_id(to)), "MIGRATING");
  src.command_checked(redis::Args{"MIGRATE"}.add(to.substr(0, to.rfind(':'))).add(to.substr(to.rfind(':') + 1)).add(a).add("0").add("5000"), "MIGRATE");
  EXPECT_EQ(c.command_checked(redis::Args{"GET"}.add(a), "GET").str(), "1");
  EXPECT_EQ(c.command_checked(redis::Args{"GET"}.add(b), "GET").str(), "2");
  c.append(redis::Args{"GET"}.add(a));
  c.append(redis::Args{"GET"}.add(b));
  EXPECT_EQ(c.read_reply().str(), "1");
  EXPECT_EQ(c.read_reply().str(), "2");
  EXPECT_EQ(c.cluster()->master_of(slot), from) << "ASK does not change the map";
  // A write of a key that exists nowhere yet goes to the target (ASK).
  c.command_checked(redis::Args{"SET"}.add(cc).add("3"), "SET");
  // Finish: the rest moves, the slot is the target's; the router learns it from MOVED.
  src.command_checked(redis::Args{"MIGRATE"}.add(to.substr(0, to.rfind(':'))).add(to.substr(to.rfind(':') + 1)).add(b).add("0").add("5000"), "MIGRATE");
  for (const std::string& m : masters) {
    plain(m).command_checked(redis::Args{"CLUSTER", "SETSLOT"}.add(slot).add("NODE").add(node_id(to)), "NODE");
  }
  c.append(redis::Args{"GET"}.add(b));
  c.append(redis::Args{"GET"}.add(cc));
  EXPECT_EQ(c.read_reply().str(), "2");
  EXPECT_EQ(c.read_reply().str(), "3");
  EXPECT_EQ(c.cluster()->master_of(slot), to) << "MOVED refreshed the map";
  // And back, so the cluster keeps its shape.
  migrate_slot(slot, to, from, masters, 10, 0);
  EXPECT_EQ(c.command_checked(redis::Args{"GET"}.add(a), "GET").str(), "1");
  EXPECT_EQ(c.cluster()->master_of(slot), from);
}

// ---- the production engine on the cluster -------------------------------------------------------

// What callers were told, collected across threads.
struct Tally {
  std::mutex mu;
  std::map<uint32_t, std::string> issued;  // seq -> user
  int64_t requests = 0, unavailable = 0, other_errors = 0;
  std::string first_error;
  void add(const std::string& user, const IssueResult& r) {
    std::lock_guard lock(mu);
    requests++;
    if (r.status != IssueStatus::kIssued) return;
    auto [it, inserted] = issued.emplace(r.seq, user);
    if (!inserted && it->second != user) ADD_FAILURE() << "seq " << r.seq << " told to " << it->second << " and " << user;
  }
  void error(const Error& e) {
    std::lock_guard lock(mu);
    requests++;
    (e.code() == ErrorCode::kUnavailable ? unavailable : other_errors)++;
    if (first_error.empty()) first_error = e.what();
  }
};

struct StoreCount {
  int64_t rows = 0, distinct_seqs = 0, distinct_users = 0, max_seq = 0, lost = 0, wrong_user = 0;
};

// Counted in PostgreSQL itself: rows, duplicates, and every ISSUED answer looked up.
StoreCount count_in_store(const std::string& pg_url, int64_t campaign_id, const Tally& t) {
  pg::Conn conn(pg_url);
  pg::Result r = conn.exec(
      "SELECT count(*), count(DISTINCT seq), count(DISTINCT user_id), coalesce(max(seq), 0) FROM coupons WHERE campaign_id = $1",
      pg::Params().add(campaign_id));
  StoreCount s;
  s.rows = r.i64(0, 0);
  s.distinct_seqs = r.i64(0, 1);
  s.distinct_users = r.i64(0, 2);
  s.max_seq = r.i64(0, 3);
  pg::Result all = conn.exec("SELECT seq, user_id FROM coupons WHERE campaign_id = $1", pg::Params().add(campaign_id));
  std::map<int64_t, std::string> rows;
  for (int i = 0; i < all.rows(); ++i) rows[all.i64(i, 0)] = std::string(all.text(i, 1));
  for (const auto& [seq, user] : t.issued) {
    auto it = rows.find(seq);
    if (it == rows.end()) {
      s.lost++;
    } else if (it->second != user) {
      s.wrong_user++;
    }
  }
  return s;
}

TEST_F(RedisClusterTest, ProductionEngineDecidesCampaignsOnEveryMaster) {
  ProductionOptions o = options();
  o.writer_threads = 2;
  auto e = open_production(o);
  redis::RedisConn c(redis::RedisUrl::parse(cluster_url()), {});
  c.ensure_connected();
  // Campaigns until every master holds at least one.
  std::vector<Campaign> campaigns;
  std::set<std::string> masters;
  while (campaigns.size() < 12 && (masters.size() < 3 || campaigns.size() < 6)) {
    campaigns.push_back(e->create_campaign(spec(150)));
    masters.insert(c.cluster()->master_of(redis::key_slot(redis::CampaignKeys(o.key_prefix, campaigns.back().id).meta)));
  }
  EXPECT_EQ(masters.size(), 3u);
  std::vector<Tally> tallies(campaigns.size());
  std::vector<std::thread> threads;
  for (int t = 0; t < 8; ++t) {
    threads.emplace_back([&, t] {
      std::mt19937 rng(t);
      for (int i = 0; i < 150; ++i) {
        const std::size_t ci = rng() % campaigns.size();
        const std::string user = "u" + std::to_string(rng() % 400);
        try {
          tallies[ci].add(user, e->issue(campaigns[ci].id, req(user, "r" + std::to_string(t) + "-" + std::to_string(i))));
        } catch (const Error& err) {
          tallies[ci].error(err);
        }
      }
    });
  }
  for (auto& th : threads) th.join();
  ASSERT_TRUE(e->drain(30));
  int64_t issued = 0;
  for (std::size_t i = 0; i < campaigns.size(); ++i) {
    EXPECT_EQ(tallies[i].unavailable + tallies[i].other_errors, 0) << tallies[i].first_error;
    const StoreCount s = count_in_store(o.postgres_url, campaigns[i].id, tallies[i]);
    EXPECT_EQ(s.rows, static_cast<int64_t>(tallies[i].issued.size()));
    EXPECT_EQ(s.rows, s.distinct_seqs);
    EXPECT_EQ(s.rows, s.distinct_users);
    EXPECT_EQ(s.lost + s.wrong_user, 0);
    EXPECT_LE(s.rows, 150);
    ReconcileReport rep = e->reconcile(campaigns[i].id);
    EXPECT_TRUE(rep.consistent) << "campaign " << campaigns[i].id;
    EXPECT_EQ(rep.gate_issued, s.rows);
    issued += s.rows;
  }
  EXPECT_GT(issued, 0);
  // Rules and the sold-out fast path work on the cluster too.
  e->pause_campaign(0, campaigns[0].id);
  EXPECT_EQ(e->issue(campaigns[0].id, req("late")).status, IssueStatus::kNotOpen);
}

TEST_F(RedisClusterTest, ReshardingAHotCampaignMidSaleLosesAndDuplicatesNothing) {
  constexpr int kQuantity = 2500;
  constexpr int kThreads = 8;
  constexpr int kPerThreadMin = 500;  // and on until the slot is back home
  ProductionOptions o = options();
  o.writer_threads = 2;
  auto e = open_production(o);
  Campaign c = e->create_campaign(spec(kQuantity));
  redis::RedisConn router(redis::RedisUrl::parse(cluster_url()), {});
  router.ensure_connected();
  const int slot = redis::key_slot(redis::CampaignKeys(o.key_prefix, c.id).meta);
  const std::string from = router.cluster()->master_of(slot);
  const std::vector<std::string> masters = router.cluster()->master_addrs();
  SlotStabilizer stable{slot, masters};
  std::string to;
  for (const std::string& m : masters) {
    if (m != from) to = m;
  }
  Tally tally;
  std::atomic<int64_t> answered{0};
  std::atomic<bool> stop{false};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      std::mt19937 rng(t + 100);
      for (int i = 0; i < kPerThreadMin || !stop.load(); ++i) {
        const std::string user = "u" + std::to_string(rng() % 6000);
        try {
          tally.add(user, e->issue(c.id, req(user, "r" + std::to_string(t) + "-" + std::to_string(i))));
        } catch (const Error& err) {
          tally.error(err);
        }
        answered++;
      }
    });
  }
  auto issued_now = [&] {
    std::lock_guard lock(tally.mu);
    return static_cast<int64_t>(tally.issued.size());
  };
  // Mid-sale: a few hundred answers in, the slot moves, one key per MIGRATE with pauses so that
  // the gate and the writers meet ASK and TRYAGAIN; then it moves back the same way.
  while (answered.load() < 400) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  const redis::ClusterEvents ev0 = redis::cluster_events();
  const int64_t keys_there = migrate_slot(slot, from, to, masters, 1, 20);
  const int64_t issued_after_move = issued_now();
  const int64_t answered_mid = answered.load();
  while (answered.load() < answered_mid + 400) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  const int64_t keys_back = migrate_slot(slot, to, from, masters, 1, 20);
  stop = true;
  for (auto& th : threads) th.join();
  const redis::ClusterEvents ev1 = redis::cluster_events();
  ASSERT_TRUE(e->drain(30));
  const StoreCount s = count_in_store(o.postgres_url, c.id, tally);
  ReconcileReport rep = e->reconcile(c.id);
  std::printf("[ resharding ] slot %d %s -> %s (%lld keys) -> back (%lld keys); ISSUED when the first move ended: %lld; "
              "routers met MOVED %llu, ASK %llu, TRYAGAIN %llu; requests %lld, ISSUED %zu, unavailable %lld, "
              "rows %lld, duplicates %lld, lost %lld, reconcile %s\n",
              slot, from.c_str(), to.c_str(), static_cast<long long>(keys_there), static_cast<long long>(keys_back),
              static_cast<long long>(issued_after_move), static_cast<unsigned long long>(ev1.moved - ev0.moved),
              static_cast<unsigned long long>(ev1.ask - ev0.ask), static_cast<unsigned long long>(ev1.tryagain - ev0.tryagain),
              static_cast<long long>(tally.requests), tally.issued.size(), static_cast<long long>(tally.unavailable),
              static_cast<long long>(s.rows), static_cast<long long>(s.rows - s.distinct_seqs),
              static_cast<long long>(s.lost), rep.consistent ? "clean" : "NOT clean");
  // The slot moved while the campaign was still selling (a generous bound: ~100 ms of moving
  // against a stock that takes the threads about a second), and the routers were redirected.
  EXPECT_LT(issued_after_move, kQuantity);
  EXPECT_GE(ev1.moved - ev0.moved, 2u) << "the gate and the writers followed MOVED";
  EXPECT_GE(keys_there, 4) << "the campaign's keys moved";
  EXPECT_EQ(tally.other_errors, 0) << tally.first_error;
  EXPECT_GE(tally.requests, kThreads * kPerThreadMin);
  EXPECT_LE(s.rows, kQuantity) << "over-issue";
  EXPECT_EQ(s.rows, s.distinct_seqs) << "duplicate rows";
  EXPECT_EQ(s.rows, s.distinct_users) << "per-user limit 1";
  EXPECT_EQ(s.max_seq, s.rows) << "seqs 1..rows";
  EXPECT_EQ(s.lost, 0) << "an ISSUED answer without a row";
  EXPECT_EQ(s.wrong_user, 0);
  // Every grant is a row: what callers were told, plus grants whose answer was lost (Unavailable).
  EXPECT_GE(s.rows, static_cast<int64_t>(tally.issued.size()));
  EXPECT_LE(s.rows - static_cast<int64_t>(tally.issued.size()), tally.unavailable);
  EXPECT_TRUE(rep.consistent) << "missing " << rep.missing_in_store << " unexpected " << rep.unexpected_in_store
                              << " holders " << rep.holder_mismatches;
  EXPECT_EQ(rep.gate_issued, s.rows);
  EXPECT_EQ(router.cluster()->master_of(slot), from);
}

// Kills, on every master, the connections whose client name starts with `name` (this engine's:
// gate, writers, control); returns how many.
int kill_clients(const std::vector<std::string>& masters, const std::string& name) {
  int killed = 0;
  for (const std::string& m : masters) {
    redis::RedisConn c = plain(m);
    const std::string list(c.command_checked(redis::Args{"CLIENT", "LIST"}, "CLIENT LIST").str());
    std::size_t pos = 0;
    while (pos < list.size()) {
      std::size_t end = list.find('\n', pos);
      if (end == std::string::npos) end = list.size();
      const std::string line = list.substr(pos, end - pos);
      pos = end + 1;
      const std::size_t n = line.find(" name=");
      if (n == std::string::npos || line.compare(n + 6, name.size(), name) != 0) continue;
      const std::string id = line.substr(3, line.find(' ') - 3);  // "id=N ..."
      redis::Reply r = c.command(redis::Args{"CLIENT", "KILL", "ID"}.add(id));
      if (r.is_integer()) killed += static_cast<int>(r.integer());
    }
  }
  return killed;
}

TEST_F(RedisClusterTest, ConnectionsKilledOnEveryMasterMidSaleLoseNothing) {
  ProductionOptions o = options();
  o.writer_threads = 2;
  auto e = open_production(o);
  redis::RedisConn router(redis::RedisUrl::parse(cluster_url()), {});
  router.ensure_connected();
  const std::vector<std::string> masters = router.cluster()->master_addrs();
  std::vector<Campaign> campaigns;
  for (int i = 0; i < 4; ++i) campaigns.push_back(e->create_campaign(spec(1000)));
  std::vector<Tally> tallies(campaigns.size());
  std::atomic<int64_t> answered{0};
  std::atomic<bool> stop{false};
  std::vector<std::thread> threads;
  for (int t = 0; t < 8; ++t) {
    threads.emplace_back([&, t] {
      std::mt19937 rng(t + 7);
      for (int i = 0; i < 300 || !stop.load(); ++i) {
        const std::size_t ci = rng() % campaigns.size();
        const std::string user = "u" + std::to_string(rng() % 3000);
        try {
          tallies[ci].add(user, e->issue(campaigns[ci].id, req(user, "r" + std::to_string(t) + "-" + std::to_string(i))));
        } catch (const Error& err) {
          tallies[ci].error(err);
        }
        answered++;
      }
    });
  }
  int killed = 0;
  for (int round = 0; round < 3; ++round) {
    const int64_t at = answered.load();
    while (answered.load() < at + 300) std::this_thread::sleep_for(std::chrono::milliseconds(1));
    killed += kill_clients(masters, o.client_name);
  }
  stop = true;
  for (auto& th : threads) th.join();
  EXPECT_GE(killed, 3) << "connections of this engine were killed";
  ASSERT_TRUE(e->drain(30));
  int64_t requests = 0, issued = 0, unavailable = 0, rows = 0, lost = 0;
  for (std::size_t i = 0; i < campaigns.size(); ++i) {
    requests += tallies[i].requests;
    issued += static_cast<int64_t>(tallies[i].issued.size());
    unavailable += tallies[i].unavailable;
    const StoreCount s = count_in_store(o.postgres_url, campaigns[i].id, tallies[i]);
    rows += s.rows;
    lost += s.lost;
  }
  std::printf("[ killed ] %d connections killed in 3 rounds: requests %lld, ISSUED %lld, unavailable %lld, rows %lld, "
              "lost %lld\n",
              killed, static_cast<long long>(requests), static_cast<long long>(issued),
              static_cast<long long>(unavailable), static_cast<long long>(rows), static_cast<long long>(lost));
  for (std::size_t i = 0; i < campaigns.size(); ++i) {
    const Tally& t = tallies[i];
    EXPECT_EQ(t.other_errors, 0) << t.first_error;
    const StoreCount s = count_in_store(o.postgres_url, campaigns[i].id, t);
    EXPECT_LE(s.rows, 1000);
    EXPECT_EQ(s.rows, s.distinct_seqs);
    EXPECT_EQ(s.rows, s.distinct_users);
    EXPECT_EQ(s.max_seq, s.rows);
    EXPECT_EQ(s.lost + s.wrong_user, 0);
    EXPECT_GE(s.rows, static_cast<int64_t>(t.issued.size()));
    EXPECT_LE(s.rows - static_cast<int64_t>(t.issued.size()), t.unavailable);
    ReconcileReport rep = e->reconcile(campaigns[i].id);
    EXPECT_TRUE(rep.consistent) << "campaign " << campaigns[i].id;
    EXPECT_EQ(rep.gate_issued, s.rows);
  }
}

// One master stops answering (CLIENT PAUSE, longer than the command timeout): campaigns on the
// other masters go on being answered, without a single Unavailable, while that master's campaign
// answers Unavailable; afterwards everything acknowledged is in the store.
TEST_F(RedisClusterTest, AStalledMasterDoesNotFailCampaignsOnTheOthers) {
  ProductionOptions o = options();
  o.writer_threads = 1;
  o.redis_command_timeout_ms = 300;
  o.gate_retries_max = 0;  // a lost answer is Unavailable at once: what this test counts
  auto e = open_production(o);
  redis::RedisConn router(redis::RedisUrl::parse(cluster_url()), {});
  router.ensure_connected();
  auto master_of = [&](const Campaign& c) {
    return router.cluster()->master_of(redis::key_slot(redis::CampaignKeys(o.key_prefix, c.id).meta));
  };
  Campaign stalled = e->create_campaign(spec(100000));
  Campaign healthy = e->create_campaign(spec(100000));
  while (master_of(healthy) == master_of(stalled)) healthy = e->create_campaign(spec(100000));
  Tally on_stalled, on_healthy;
  std::atomic<bool> paused{false}, stop{false};
  std::atomic<int64_t> healthy_during_pause{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 6; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; !stop.load(); ++i) {
        const bool h = t % 2 == 0;
        const std::string user = "u" + std::to_string(t) + "-" + std::to_string(i);
        Tally& tally = h ? on_healthy : on_stalled;
        try {
          tally.add(user, e->issue((h ? healthy : stalled).id, req(user)));
          if (h && paused.load()) healthy_during_pause++;
        } catch (const Error& err) {
          tally.error(err);
        }
      }
    });
  }
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  plain(master_of(stalled)).command_checked(redis::Args{"CLIENT", "PAUSE", "1500", "ALL"}, "CLIENT PAUSE");
  paused = true;
  std::this_thread::sleep_for(std::chrono::milliseconds(1500));
  paused = false;
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  stop = true;
  for (auto& th : threads) th.join();
  std::printf("[ stalled master ] healthy campaign: %lld requests, %zu ISSUED (%lld during the pause), %lld unavailable; "
              "stalled campaign: %lld requests, %zu ISSUED, %lld unavailable\n",
              static_cast<long long>(on_healthy.requests), on_healthy.issued.size(),
              static_cast<long long>(healthy_during_pause.load()), static_cast<long long>(on_healthy.unavailable),
              static_cast<long long>(on_stalled.requests), on_stalled.issued.size(),
              static_cast<long long>(on_stalled.unavailable));
  EXPECT_EQ(on_healthy.unavailable + on_healthy.other_errors, 0) << on_healthy.first_error;
  EXPECT_GT(healthy_during_pause.load(), 0) << "the healthy campaign was answered while the other master stalled";
  EXPECT_GT(on_stalled.unavailable, 0) << "the stalled master's campaign saw the stall";
  EXPECT_EQ(on_stalled.other_errors, 0) << on_stalled.first_error;
  ASSERT_TRUE(e->drain(30));
  for (const auto& [c, t] : {std::make_pair(&stalled, &on_stalled), std::make_pair(&healthy, &on_healthy)}) {
    const StoreCount s = count_in_store(o.postgres_url, c->id, *t);
    EXPECT_EQ(s.rows, s.distinct_seqs);
    EXPECT_EQ(s.max_seq, s.rows);
    EXPECT_EQ(s.lost + s.wrong_user, 0);
    EXPECT_GE(s.rows, static_cast<int64_t>(t->issued.size()));
    EXPECT_LE(s.rows - static_cast<int64_t>(t->issued.size()), t->unavailable);
    EXPECT_TRUE(e->reconcile(c->id).consistent) << "campaign " << c->id;
  }
}

// ---- bad clusters -------------------------------------------------------------------------------

TEST(RedisClusterBad, NoReachableSeedIsUnavailableAndWritesNothing) {
  ProductionOptions o = testutil::production_options("noseed");
  o.redis_url = "redis+cluster://127.0.0.1:" + std::to_string(free_port()) + ",127.0.0.1:" + std::to_string(free_port());
  o.redis_connect_timeout_ms = 500;
  pg::Conn pgc(o.postgres_url);
  const int64_t before = pgc.exec("SELECT count(*) FROM campaigns").i64(0, 0);
  try {
    open_production(o);
    ADD_FAILURE() << "opened with no reachable seed";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::kUnavailable);
    EXPECT_NE(std::string(e.what()).find("no seed answered"), std::string::npos) << e.what();
  }
  EXPECT_EQ(pgc.exec("SELECT count(*) FROM campaigns").i64(0, 0), before);
}

TEST(RedisClusterBad, APlainServerIsNotACluster) {
  ProductionOptions o = testutil::production_options("plain");
  redis::RedisUrl single = redis::RedisUrl::parse(testutil::redis_url());
  o.redis_url = "redis+cluster://" + single.host + ":" + std::to_string(single.port);
  try {
    open_production(o);
    ADD_FAILURE() << "opened a plain server as a cluster";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::kInvalidArgument) << e.what();
    EXPECT_NE(std::string(e.what()).find("not a cluster node"), std::string::npos) << e.what();
  }
}

// A one-node cluster of our own, on a free port, in a temporary directory.
class MiniCluster {
 public:
  MiniCluster() : port_(free_cluster_port()), dir_(testutil::temp_path("minicluster")) {
    const std::string cmd = "mkdir -p '" + dir_ + "' && redis-server --port " + std::to_string(port_) +
                            " --bind 127.0.0.1 --cluster-enabled yes --cluster-config-file nodes.conf --save '' "
                            "--appendonly no --daemonize yes --dir '" + dir_ + "' --pidfile '" + dir_ +
                            "/redis.pid' --logfile '" + dir_ + "/redis.log'";
    EXPECT_EQ(std::system(cmd.c_str()), 0);
    for (int i = 0; i < 100; ++i) {
      try {
        plain(addr(), 1000).command_checked(redis::Args{"PING"}, "PING");
        return;
      } catch (const Error&) {
        std::this_thread::sleep_for(std::chrono::milliseconds(50));
      }
    }
  }
  ~MiniCluster() {
    std::ifstream f(dir_ + "/redis.pid");
    pid_t pid = 0;
    if (f >> pid && pid > 0) ::kill(pid, SIGTERM);
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    std::system(("rm -rf '" + dir_ + "'").c_str());
  }
  std::string addr() const { return "127.0.0.1:" + std::to_string(port_); }
  redis::Reply cmd(const redis::Args& a) { return plain(addr()).command_checked(a, "mini cluster"); }

 private:
  int port_;
  std::string dir_;
};

TEST(RedisClusterBad, ASlotMapWithHolesIsRefusedThenAnUncoveredSlotIsUnavailable) {
  MiniCluster mini;
  mini.cmd(redis::Args{"CLUSTER", "ADDSLOTSRANGE", "0", "8191"});
  ProductionOptions o = testutil::production_options("holes");
  o.redis_url = "redis+cluster://" + mini.addr();
  try {
    open_production(o);
    ADD_FAILURE() << "opened on a slot map with holes";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::kUnavailable);
    EXPECT_NE(std::string(e.what()).find("8192 of 16384 slots are served by no master (the first: 8192-16383)"),
              std::string::npos)
        << e.what();
  }
  EXPECT_EQ(mini.cmd(redis::Args{"DBSIZE"}).integer(), 0) << "nothing written";
  // Whole, then a slot is deleted under a router that knew it.
  mini.cmd(redis::Args{"CLUSTER", "ADDSLOTSRANGE", "8192", "16383"});
  redis::RedisConnOptions ro;
  ro.command_timeout_ms = 300;  // the CLUSTERDOWN retry budget
  redis::RedisConn c(redis::RedisUrl::parse(o.redis_url), ro);
  std::string key_in_0;
  for (int i = 0; key_in_0.empty(); ++i) {
    if (redis::key_slot("k" + std::to_string(i)) == 100) key_in_0 = "k" + std::to_string(i);
  }
  for (int i = 0; i < 100; ++i) {  // the node calls itself ok once it owns every slot
    redis::Reply r = c.command(redis::Args{"SET"}.add(key_in_0).add("1"));
    if (!r.is_error()) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  ASSERT_EQ(c.command_checked(redis::Args{"GET"}.add(key_in_0), "GET").str(), "1");
  mini.cmd(redis::Args{"CLUSTER", "DELSLOTS", "100"});
  // The node answers CLUSTERDOWN; the router reloads the map, finds slot 100 without a master.
  for (int attempt = 0; attempt < 2; ++attempt) {
    try {
      c.command(redis::Args{"SET"}.add(key_in_0).add("2"));
      ADD_FAILURE() << "a command for an uncovered slot succeeded";
    } catch (const Error& e) {
      EXPECT_EQ(e.code(), ErrorCode::kUnavailable);
      EXPECT_NE(std::string(e.what()).find("slot 100"), std::string::npos) << e.what();
      EXPECT_NE(std::string(e.what()).find("not served by any master"), std::string::npos) << e.what();
    }
  }
  // Nothing changed by the refused commands.
  mini.cmd(redis::Args{"CLUSTER", "ADDSLOTS", "100"});
  EXPECT_EQ(plain(mini.addr()).command(redis::Args{"GET"}.add(key_in_0)).str(), "1");
}

}  // namespace
