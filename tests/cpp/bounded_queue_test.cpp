// The one bounded queue of the engines (util/bounded_queue.hpp): its limit rule, its errors, its
// lanes and close(), and under real concurrency: many producers, a consumer per lane, nothing
// lost or handed out twice, the limit never exceeded. No servers.
#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <set>
#include <thread>
#include <vector>

#include "util/bounded_queue.hpp"
#include "test_util.hpp"

using namespace couponcore;
using testutil::catch_error;

namespace {

using Batch = std::vector<std::pair<int, std::size_t>>;

TEST(BoundedQueue, AdmitsUpToCapacityThenSaysFullAndOversizedIsInvalid) {
  BoundedQueue<int> q("issue", 10, /*full_wait_ms=*/20);
  q.push(1, 6);
  q.push(2, 4);  // exactly full
  EXPECT_EQ(q.depth(), 10u);
  auto full = catch_error([&] { q.push(3, 1); });
  EXPECT_EQ(full.code, ErrorCode::kUnavailable);
  EXPECT_EQ(full.message, "the issue queue is full (10 waiting); try again");
  EXPECT_EQ(q.refused(), 1u);
  // Larger than the whole queue: it could never fit, so it is refused at once, even when empty.
  Batch taken;
  ASSERT_TRUE(q.pop(&taken, 100));
  EXPECT_EQ(q.depth(), 0u);
  auto big = catch_error([&] { q.push(4, 11); });
  EXPECT_EQ(big.code, ErrorCode::kInvalidArgument);
  EXPECT_EQ(q.depth(), 0u);
  EXPECT_EQ(q.refused(), 1u);  // not counted as "full"
}

TEST(BoundedQueue, PopTakesWholeItemsUpToTheWeightAndAtLeastOne) {
  BoundedQueue<int> q("issue", 200, 0);
  q.push(1, 30);
  q.push(2, 30);
  q.push(3, 50);
  Batch b;
  ASSERT_TRUE(q.pop(&b, 60));
  ASSERT_EQ(b.size(), 2u);
  EXPECT_EQ(b[0].first, 1);
  EXPECT_EQ(b[1].first, 2);
  b.clear();
  ASSERT_TRUE(q.pop(&b, 10));  // heavier than the limit: taken alone rather than never
  ASSERT_EQ(b.size(), 1u);
  EXPECT_EQ(b[0].first, 3);
  // A retry goes back to the front, in its order.
  q.push(4, 1);
  q.push_front({{5, 1}, {6, 1}});
  b.clear();
  ASSERT_TRUE(q.pop(&b, 100));
  ASSERT_EQ(b.size(), 3u);
  EXPECT_EQ(b[0].first, 5);
  EXPECT_EQ(b[1].first, 6);
  EXPECT_EQ(b[2].first, 4);
}

TEST(BoundedQueue, AWaitingPushGoesInWhenSpaceIsMade) {
  BoundedQueue<int> q("wallet", 2, /*full_wait_ms=*/10'000);
  q.push(1, 2);
  std::atomic<bool> pushed{false};
  std::thread producer([&] {
    q.push(2, 1);
    pushed = true;
  });
  std::this_thread::sleep_for(std::chrono::milliseconds(50));
  EXPECT_FALSE(pushed.load());  // waiting, not refused
  Batch b;
  ASSERT_TRUE(q.pop(&b, 10));
  producer.join();
  EXPECT_TRUE(pushed.load());
  EXPECT_EQ(q.depth(), 1u);
  EXPECT_EQ(q.refused(), 0u);
}

TEST(BoundedQueue, CloseHandsOutWhatIsLeftThenStopsAndRefusesPushes) {
  BoundedQueue<int> q("issue", 10, 1'000);
  q.push(1, 1);
  q.push(2, 1, 0);
  q.close();
  EXPECT_EQ(catch_error([&] { q.push(3, 1); }).code, ErrorCode::kClosed);
  Batch b;
  ASSERT_TRUE(q.pop(&b, 10));
  EXPECT_EQ(b.size(), 2u);
  EXPECT_FALSE(q.pop(&b, 10));
}

// Many producers over several lanes, one consumer per lane: every item handed out exactly once,
// to its own lane, in push order per producer and lane, and the depth never above capacity.
TEST(BoundedQueue, ManyProducersAndLanesLoseNothingAndNeverExceedTheLimit) {
  constexpr int kProducers = 8, kPerProducer = 5'000, kLanes = 3;
  constexpr std::size_t kCapacity = 64;
  BoundedQueue<int> q("wallet", kCapacity, /*full_wait_ms=*/60'000, kLanes);
  std::atomic<std::size_t> max_depth{0};
  std::vector<std::vector<int>> got(kLanes);
  std::vector<std::thread> consumers;
  for (int lane = 0; lane < kLanes; ++lane) {
    consumers.emplace_back([&, lane] {
      Batch b;
      while (q.pop(&b, 7, lane)) {
        for (auto& [item, w] : b) got[lane].push_back(item);
        b.clear();
      }
    });
  }
  std::vector<std::thread> producers;
  for (int p = 0; p < kProducers; ++p) {
    producers.emplace_back([&, p] {
      for (int i = 0; i < kPerProducer; ++i) {
        const int item = p * kPerProducer + i;
        q.push(item, 1 + static_cast<std::size_t>(i % 3), static_cast<std::size_t>(item % kLanes));
        std::size_t d = q.depth(), m = max_depth.load();
        while (d > m && !max_depth.compare_exchange_weak(m, d)) {
        }
      }
    });
  }
  for (auto& t : producers) t.join();
  q.close();
  for (auto& t : consumers) t.join();
  std::set<int> all;
  for (int lane = 0; lane < kLanes; ++lane) {
    std::vector<int> last(kProducers, -1);
    for (int item : got[lane]) {
      EXPECT_EQ(item % kLanes, lane);
      EXPECT_TRUE(all.insert(item).second) << "handed out twice: " << item;
      const int p = item / kPerProducer;
      EXPECT_GT(item, last[p]) << "out of order within a producer";
      last[p] = item;
    }
  }
  EXPECT_EQ(all.size(), static_cast<std::size_t>(kProducers * kPerProducer));
  EXPECT_LE(max_depth.load(), kCapacity);
  EXPECT_EQ(q.depth(), 0u);
  EXPECT_EQ(q.refused(), 0u);
}

}  // namespace
