// The per-client-address limit in Redis, batched; see address_limit.hpp.
#include "redis/address_limit.hpp"

#include <algorithm>
#include <condition_variable>

#include "redis/lua_scripts.hpp"
#include "util/assert.hpp"

namespace couponcore::redis {

struct RedisAddressLimit::Waiter {
  std::string_view address;
  int32_t limit = 0;
  int32_t window_ms = 0;
  Answer<int64_t> answer;  // written by the runner, read by the caller once done
  bool done = false;       // guarded by mu_
  bool runs = false;       // guarded by mu_: the previous runner handed the connection over
  std::condition_variable wake;  // done or runs; one per caller, so a batch wakes only its own
};

RedisAddressLimit::RedisAddressLimit(const RedisUrl& url, RedisConnOptions options, std::string key_prefix)
    : prefix_(std::move(key_prefix)), conn_(url, std::move(options)), script_(lua::kAddressLimit) {}

int64_t RedisAddressLimit::refuse_ms(std::string_view address, int32_t limit, int32_t window_ms) {
  Waiter me;
  me.address = address;
  me.limit = limit;
  me.window_ms = window_ms;
  std::unique_lock lock(mu_);
  queue_.push_back(&me);
  ++requests_;
  if (in_flight_) {
    me.wake.wait(lock, [&me] { return me.done || me.runs; });
    if (me.done) return me.answer.take();
  }
  // This caller runs the next batch: the oldest requests, its own first among them (a runner is
  // the queue's head: it found the queue empty, or it was handed the connection as the head).
  CC_ASSERT(queue_.front() == &me, "the runner heads the queue");
  in_flight_ = true;
  const std::size_t n = std::min(queue_.size(), kAddressBatchMax);
  std::vector<Waiter*> batch(queue_.begin(), queue_.begin() + static_cast<std::ptrdiff_t>(n));
  queue_.erase(queue_.begin(), queue_.begin() + static_cast<std::ptrdiff_t>(n));
  ++calls_;
  lock.unlock();
  call(batch);
  lock.lock();
  for (Waiter* w : batch) {
    w->done = true;
    if (w != &me) w->wake.notify_one();
  }
  if (queue_.empty()) {
    in_flight_ = false;
  } else {
    queue_.front()->runs = true;  // in_flight_ stays true: the connection passes to the new head
    queue_.front()->wake.notify_one();
  }
  return me.answer.take();
}

void RedisAddressLimit::call(const std::vector<Waiter*>& batch) {
  try {
    std::vector<std::string> keys;
    keys.reserve(batch.size());
    Args args;
    for (const Waiter* w : batch) {
      keys.push_back(prefix_ + "{addr}:" + std::to_string(w->window_ms));
      args.add(w->address).add(w->limit).add(w->window_ms);
    }
    Reply r = eval(conn_, script_, keys, args);
    check_reply(r, "address limit");
    if (!r.is_array() || r.size() != batch.size()) {
      throw Error(ErrorCode::kInternal, "address limit: unexpected reply");
    }
    for (std::size_t i = 0; i < batch.size(); ++i) {
      long long ms = 0;
      if (!reply_int(r.at(i), &ms) || ms < 0 || ms > batch[i]->window_ms) {
        throw Error(ErrorCode::kInternal, "address limit: unexpected reply");
      }
      batch[i]->answer.value = ms;
    }
  } catch (...) {
    // The whole batch was one call: every caller of it gets a copy of the same error.
    const Error e = error_from(std::current_exception());
    for (Waiter* w : batch) w->answer.error = e;
  }
}

detail::AddressCounts RedisAddressLimit::counts() const {
  std::lock_guard lock(mu_);
  return detail::AddressCounts{requests_, calls_};
}

}  // namespace couponcore::redis
