// The per-client-address limit of the HTTP layer, counted in Redis for the whole deployment
// (every app process, every engine on the key prefix): at most `limit` requests per address per
// fixed window of `window_ms`, the window aligned to the epoch on the Redis clock (TIME), like
// the gate's rate windows (docs/rate-limits.md).
//
//   key    P{addr}:<window_ms>   hash: *w the window it counts, a:<address> -> requests counted
//          (one key per window length, so apps configured differently never mix their counts;
//          the hash tag puts it in one slot on Redis Cluster); it expires at the window's end
//   step   one Lua call (lua/address_limit.lua): read, compare, count
//
// One connection of its own behind a mutex. Redis down: kUnavailable.
#pragma once

#include <cstdint>
#include <mutex>
#include <string>
#include <string_view>

#include "engine/pipeline.hpp"
#include "redis/redis.hpp"

namespace couponcore::redis {

class RedisAddressLimit final : public detail::AddressCounter {
 public:
  RedisAddressLimit(const RedisUrl& url, RedisConnOptions options, std::string key_prefix);

  int64_t refuse_ms(std::string_view address, int32_t limit, int32_t window_ms) override;

 private:
  const std::string prefix_;
  std::mutex mu_;
  RedisConn conn_;
  Script script_;
};

}  // namespace couponcore::redis
