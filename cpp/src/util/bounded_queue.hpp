// The one bounded queue of the engines: callers push work, an engine thread pops it in batches.
//
// Every engine queue (the embedded committer's, the Redis gate's, the wallet committers') is a
// BoundedQueue, so they share one limit rule, one error and one pair of numbers for metrics:
//   - Limit: the queue holds at most `capacity` units (requests, operations). A push of w units
//     waits while queued + w > capacity, up to full_wait_ms, then throws kUnavailable with the
//     message below; w > capacity can never fit and is kInvalidArgument at once.
//   - "the <name> queue is full (<capacity> waiting); try again"  (kUnavailable)
//   - depth() and refused() (pushes refused as full), read by the engines' counters.
// Lanes: one queue may feed several consumer threads (the wallet's committers, one lane each);
// the limit is shared by all lanes. After close(), pushes throw kClosed and pop() hands out
// what is left, then returns false.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

#include "couponcore/error.hpp"
#include "util/assert.hpp"

namespace couponcore {

template <typename T>
class BoundedQueue {
 public:
  BoundedQueue(std::string name, std::size_t capacity, int64_t full_wait_ms, std::size_t lanes = 1)
      : name_(std::move(name)), capacity_(capacity), full_wait_ms_(full_wait_ms), lanes_(lanes) {
    CC_ASSERT(capacity_ > 0 && lanes > 0, "a queue needs capacity and a lane");
  }
  BoundedQueue(const BoundedQueue&) = delete;
  BoundedQueue& operator=(const BoundedQueue&) = delete;

  void push(T item, std::size_t weight, std::size_t lane = 0) {
    CC_ASSERT(lane < lanes_.size(), "no such lane");
    if (weight > capacity_) {
      throw_invalid("a submission of " + std::to_string(weight) + " is larger than the " + name_ + " queue (" +
                    std::to_string(capacity_) + ")");
    }
    std::unique_lock lock(mu_);
    if (!space_cv_.wait_for(lock, std::chrono::milliseconds(full_wait_ms_),
                            [&] { return closed_ || queued_ + weight <= capacity_; })) {
      ++refused_;
      throw_unavailable("the " + name_ + " queue is full (" + std::to_string(capacity_) + " waiting); try again");
    }
    if (closed_) throw Error(ErrorCode::kClosed, "the engine is closed");
    queued_ += weight;
    lanes_[lane].items.emplace_back(std::move(item), weight);
    lanes_[lane].work_cv.notify_one();
  }

  // Puts items that were popped back at the front of their lane (a retry), in their order; they
  // were admitted once and are not counted against the limit's wait.
  void push_front(std::vector<std::pair<T, std::size_t>> items, std::size_t lane = 0) {
    std::lock_guard lock(mu_);
    for (auto it = items.rbegin(); it != items.rend(); ++it) {
      queued_ += it->second;
      lanes_[lane].items.push_front(std::move(*it));
    }
    lanes_[lane].work_cv.notify_one();
  }

  // Waits for work in the lane, then moves items from its front into *out while their weights
  // add up to at most weight_max (always at least one item). False once closed and empty.
  bool pop(std::vector<std::pair<T, std::size_t>>* out, std::size_t weight_max, std::size_t lane = 0) {
    std::unique_lock lock(mu_);
    Lane& l = lanes_[lane];
    l.work_cv.wait(lock, [&] { return closed_ || !l.items.empty(); });
    if (l.items.empty()) return false;
    std::size_t taken = 0;
    while (!l.items.empty() && (taken == 0 || taken + l.items.front().second <= weight_max)) {
      taken += l.items.front().second;
      out->push_back(std::move(l.items.front()));
      l.items.pop_front();
    }
    CC_ASSERT(taken <= queued_, "the queue handed out more than it held");
    queued_ -= taken;
    space_cv_.notify_all();
    return true;
  }

  void close() {
    std::lock_guard lock(mu_);
    closed_ = true;
    for (Lane& l : lanes_) l.work_cv.notify_all();
    space_cv_.notify_all();
  }
  bool closed() const {
    std::lock_guard lock(mu_);
    return closed_;
  }
  std::size_t depth() const {
    std::lock_guard lock(mu_);
    return queued_;
  }
  uint64_t refused() const {
    std::lock_guard lock(mu_);
    return refused_;
  }
  std::size_t capacity() const { return capacity_; }

 private:
  struct Lane {
    std::deque<std::pair<T, std::size_t>> items;
    std::condition_variable work_cv;
  };
  const std::string name_;
  const std::size_t capacity_;
  const int64_t full_wait_ms_;
  mutable std::mutex mu_;
  std::condition_variable space_cv_;
  std::vector<Lane> lanes_;
  std::size_t queued_ = 0;
  uint64_t refused_ = 0;
  bool closed_ = false;
};

}  // namespace couponcore
