// Sharded campaigns (gate/shards.hpp), the parts that need no server: routing, initial ranges,
// the free-seq format, stream ids and tag placement. The cluster behaviour is tested in
// tests/python/test_shards.py.
#include <gtest/gtest.h>

#include <set>

#include "couponcore/error.hpp"
#include "couponcore/limits.hpp"
#include "gate/shards.hpp"
#include "redis/cluster.hpp"
#include "redis/keys.hpp"

namespace couponcore {
namespace {

TEST(ShardsTest, RoutingIsFnv1aModuloShardsAndNeverChanges) {
  // Fixed values: the routing decides where holders live (tests/python/test_shards.py agrees).
  EXPECT_EQ(redis::shard_of_user("alice", 3), 0);
  EXPECT_EQ(redis::shard_of_user("bob", 3), 1);
  EXPECT_EQ(redis::shard_of_user("u1", 3), 2);
  EXPECT_EQ(redis::shard_of_user("", 3), 1);
  EXPECT_EQ(redis::shard_of_user("alice", 16), 5);
  EXPECT_EQ(redis::shard_of_user("u1", 16), 9);
  EXPECT_EQ(redis::shard_of_user("anyone", 1), 0);
}

TEST(ShardsTest, InitialRangesSplitTheQuantityExactly) {
  for (int64_t q : {16, 17, 100, 1001, 999'999'999}) {
    for (int k = 1; k <= limits::kShardsMax && k <= q; ++k) {
      int64_t next = 1;
      for (int s = 0; s < k; ++s) {
        auto [lo, hi] = gate::initial_range(q, k, s);
        EXPECT_EQ(lo, next);
        EXPECT_GE(hi, lo);
        EXPECT_LE(hi - lo, q / k);  // sizes differ by at most one
        next = hi + 1;
      }
      EXPECT_EQ(next, q + 1);
    }
  }
}

TEST(ShardsTest, FreeSeqsFormatRoundTripsAndRefusesGarbage) {
  const gate::SeqRanges r = {{1, 5}, {9, 9}, {20, 30}};
  EXPECT_EQ(gate::format_ranges(r), "1-5,9-9,20-30");
  EXPECT_EQ(gate::parse_ranges("1-5,9-9,20-30"), r);
  EXPECT_EQ(gate::count_ranges(r), 5 + 1 + 11);
  EXPECT_TRUE(gate::parse_ranges("").empty());
  for (const char* bad : {"5-1", "0-3", "x", "1-", "1-2,", "-1-2"}) {
    try {
      gate::parse_ranges(bad);
      ADD_FAILURE() << bad;
    } catch (const Error& e) {
      EXPECT_EQ(e.code(), ErrorCode::kUnavailable) << bad;
    }
  }
}

TEST(ShardsTest, StreamIdsRoundTripAndOneShardIsTheOldLayout) {
  redis::CampaignKeys plain("p:", 42);
  EXPECT_EQ(plain.stream_id, 42);
  EXPECT_EQ(plain.meta, "p:{c42}:m");
  redis::CampaignKeys back;
  ASSERT_TRUE(redis::CampaignKeys::from_stream_id("p:", 42, &back));
  EXPECT_EQ(back.grants, plain.grants);
  for (int k : {2, 3, 16}) {
    for (int s = 0; s < k; ++s) {
      redis::CampaignKeys sk("p:", 42, s, k);
      ASSERT_TRUE(redis::CampaignKeys::from_stream_id("p:", sk.stream_id, &back));
      EXPECT_EQ(back.grants, sk.grants);
      EXPECT_EQ(back.campaign_id, 42);
      EXPECT_EQ(back.shard, s);
    }
  }
  for (int64_t bad : {int64_t{0}, int64_t{-1}, (int64_t{1} << 32) + 42, (int64_t{3} << 32) + (int64_t{2} << 40) + 42,
                      (int64_t{17} << 40) + 42, (int64_t{1} << 31)}) {
    EXPECT_FALSE(redis::CampaignKeys::from_stream_id("p:", bad, &back)) << bad;
  }
}

TEST(ShardsTest, EachShardsTagLiesInItsBandOfSlots) {
  for (int64_t id : {1, 7, 123456}) {
    for (int k : {2, 3, 5, 16}) {
      std::set<std::string> tags;
      for (int s = 0; s < k; ++s) {
        redis::CampaignKeys sk("p:", id, s, k);
        const int slot = redis::key_slot(sk.meta);
        EXPECT_EQ(slot * k / redis::kClusterSlots, s);
        EXPECT_EQ(redis::key_slot(sk.grants), slot);  // every key of a shard in one slot
        EXPECT_EQ(redis::key_slot(sk.transfers), slot);
        tags.insert(sk.meta);
      }
      EXPECT_EQ(tags.size(), static_cast<std::size_t>(k));
    }
  }
}

}  // namespace
}  // namespace couponcore
