// writer/liveness: beats on the Redis clock, retire, and the reaping that must never drop a
// consumer still holding entries (XGROUP DELCONSUMER would drop them with it). The takeover
// after SIGKILL, with real processes, is in tests/python/test_writer_liveness.py.
#include <gtest/gtest.h>

#include <thread>

#include "couponcore/error.hpp"
#include "production_test_util.hpp"
#include "redis/keys.hpp"
#include "redis/redis.hpp"
#include "writer/liveness.hpp"

using namespace couponcore;

namespace {

class WriterLivenessTest : public ::testing::Test {
 protected:
  void SetUp() override { prefix_ = testutil::key_prefix(testutil::current_test_name()); }
  void TearDown() override { testutil::delete_keys(prefix_); }
  redis::RedisConn conn() { return redis::RedisConn(redis::RedisUrl::parse(testutil::redis_url()), {}); }
  int64_t beat_of(redis::RedisConn& c, const std::string& consumer) {
    for (const writer::BeatRecord& b : writer::read_registry(c, prefix_).beats) {
      if (b.consumer == consumer) return b.beat_ms;
    }
    return -1;
  }
  std::string prefix_;
};

TEST_F(WriterLivenessTest, BeatsOnTheServerClockUntilRetiredOrStopped) {
  redis::RedisConn c = conn();
  writer::Heartbeat hb(prefix_, redis::RedisUrl::parse(testutil::redis_url()), {}, 20, {"a", "b"});
  writer::RegistrySnapshot s = writer::read_registry(c, prefix_);
  ASSERT_EQ(s.beats.size(), 2u);  // the first beat is done when the constructor returns
  for (const writer::BeatRecord& b : s.beats) {
    EXPECT_LE(b.beat_ms, s.now_ms);
    EXPECT_GT(b.beat_ms, s.now_ms - 1000);
  }
  const int64_t first = beat_of(c, "a");
  std::this_thread::sleep_for(std::chrono::milliseconds(150));
  EXPECT_GT(beat_of(c, "a"), first);
  EXPECT_TRUE(hb.is_ours("a") && !hb.is_ours("c"));

  hb.retire("b", c);
  EXPECT_EQ(beat_of(c, "b"), -1);
  std::this_thread::sleep_for(std::chrono::milliseconds(100));
  EXPECT_EQ(beat_of(c, "b"), -1) << "a retired consumer came back";

  hb.stop();  // a consumer not retired keeps its last beat: it is judged dead, not forgotten
  const int64_t last = beat_of(c, "a");
  std::this_thread::sleep_for(std::chrono::milliseconds(100));
  EXPECT_EQ(beat_of(c, "a"), last);
}

TEST_F(WriterLivenessTest, ReapNeverDropsAConsumerHoldingEntries) {
  redis::RedisConn c = conn();
  redis::CampaignKeys k(prefix_, 1);
  c.command_checked(redis::Args{"XGROUP", "CREATE"}.add(k.grants).add(redis::kWriterGroup).add("0").add("MKSTREAM"), "g");
  redis::Reply id = c.command_checked(redis::Args{"XADD"}.add(k.grants).add("*").add("x").add("1"), "XADD");
  c.command_checked(redis::Args{"XREADGROUP", "GROUP"}.add(redis::kWriterGroup).add("ghost").add("STREAMS").add(k.grants).add(">"),
                    "XREADGROUP");
  c.command_checked(redis::Args{"HSET"}.add(writer::registry_key(prefix_)).add("ghost").add("1000"), "HSET");
  writer::BeatRecord ghost{"ghost", "1000", 1000};
  const std::vector<std::string> streams{k.grants, redis::CampaignKeys(prefix_, 2).grants};  // 2: no stream

  EXPECT_FALSE(writer::reap(c, prefix_, streams, ghost));
  EXPECT_EQ(beat_of(c, "ghost"), 1000);
  std::vector<writer::PendingByConsumer> p = writer::pending_summaries(c, streams);
  ASSERT_EQ(p[0].size(), 1u);
  EXPECT_EQ(p[0][0], std::make_pair(std::string("ghost"), int64_t{1}));
  EXPECT_TRUE(p[1].empty());

  std::vector<WriterInfo> w = writer::list_writers(c, prefix_, streams, 3000);
  ASSERT_EQ(w.size(), 1u);
  EXPECT_EQ(w[0].consumer, "ghost");
  EXPECT_FALSE(w[0].alive);
  EXPECT_EQ(w[0].pending, 1);

  // It beat again since it was judged dead: not forgotten, even once it holds nothing.
  c.command_checked(redis::Args{"XACK"}.add(k.grants).add(redis::kWriterGroup).add(id.str()), "XACK");
  c.command_checked(redis::Args{"HSET"}.add(writer::registry_key(prefix_)).add("ghost").add("2000"), "HSET");
  EXPECT_FALSE(writer::reap(c, prefix_, streams, ghost));
  EXPECT_EQ(beat_of(c, "ghost"), 2000);
  // Judged on its current beat and holding nothing: out of the group and the registry.
  ghost.raw = "2000";
  EXPECT_TRUE(writer::reap(c, prefix_, streams, ghost));
  EXPECT_EQ(beat_of(c, "ghost"), -1);
  redis::Reply consumers = c.command_checked(redis::Args{"XINFO", "CONSUMERS"}.add(k.grants).add(redis::kWriterGroup), "XINFO");
  EXPECT_EQ(consumers.size(), 0u);
  EXPECT_TRUE(writer::list_writers(c, prefix_, streams, 3000).empty());
}

TEST_F(WriterLivenessTest, OptionsAreChecked) {
  WriterOptions o;
  EXPECT_NO_THROW(writer::check_liveness_options(o));
  EXPECT_EQ(writer::takeover_min_idle_ms(o), 1000);
  for (auto [interval, dead] : {std::pair<int64_t, int64_t>{9, 3000}, {60'001, 3'600'000}, {1000, 2999}, {1000, 3'600'001}}) {
    o.heartbeat_interval_ms = interval;
    o.dead_after_ms = dead;
    try {
      writer::check_liveness_options(o);
      ADD_FAILURE() << interval << " / " << dead << " accepted";
    } catch (const Error& e) {
      EXPECT_EQ(e.code(), ErrorCode::kInvalidArgument);
    }
  }
}

}  // namespace
