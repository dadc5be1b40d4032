// The per-client-address limit of the HTTP layer, counted in Redis for the whole deployment
// (every app process, every engine on the key prefix): at most `limit` requests per address per
// fixed window of `window_ms`, the window aligned to the epoch on the Redis clock (TIME), like
// the gate's rate windows (docs/rate-limits.md).
//
//   key    P{addr}:<window_ms>   hash: *w the window it counts, a:<address> -> requests counted
//          (one key per window length, so apps configured differently never mix their counts;
//          the hash tag puts every such key in one slot on Redis Cluster); it expires at the
//          window's end
//   step   one Lua call (lua/address_limit.lua) for a batch: read, compare, count, per request
//
// Group commit: one connection, one call in flight. A caller that finds no call in flight
// becomes the batch's runner: it takes up to kAddressBatchMax queued requests (its own first),
// sends them in one Lua call and hands every caller its own answer, waking only those; callers
// that arrive meanwhile queue, and the runner hands the connection to the queue's head, which
// runs the next call for them. So concurrent requests cost one round trip per batch, not per
// request. A Redis error or an unreachable Redis gives every
// caller of that batch the same typed error (kUnavailable when Redis is down).
//
// Entry points: refuse_ms (AddressCounter), counts() (requests and Lua calls, for metrics).
#pragma once

#include <cstddef>
#include <cstdint>
#include <deque>
#include <mutex>
#include <string>
#include <string_view>
#include <vector>

#include "engine/pipeline.hpp"
#include "redis/redis.hpp"

namespace couponcore::redis {

// Requests in one Lua call at most: bounds the call's size and the time Redis spends in it.
inline constexpr std::size_t kAddressBatchMax = 1'000;

class RedisAddressLimit final : public detail::AddressCounter {
 public:
  RedisAddressLimit(const RedisUrl& url, RedisConnOptions options, std::string key_prefix);

  int64_t refuse_ms(std::string_view address, int32_t limit, int32_t window_ms) override;
  detail::AddressCounts counts() const override;

 private:
  struct Waiter;
  // Sends one batch in one Lua call; fills every waiter's answer (value or error). mu_ not held.
  void call(const std::vector<Waiter*>& batch);

  const std::string prefix_;
  mutable std::mutex mu_;
  std::deque<Waiter*> queue_;  // guarded by mu_; each entry's caller waits on its own Waiter
  bool in_flight_ = false;     // guarded by mu_; a runner owns conn_ while true
  uint64_t requests_ = 0;      // guarded by mu_
  uint64_t calls_ = 0;         // guarded by mu_
  RedisConn conn_;
  Script script_;
};

}  // namespace couponcore::redis
