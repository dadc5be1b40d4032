// The shared authentication cache of the production deployment: API key hash -> partner in
// Redis, between each engine's in-process cache and PostgreSQL (auth/partner_service.hpp).
//
//   key    <prefix>auth:<sha256 hex>     (the hash is 64 hex characters: safe in a key name)
//   value  "<partner id>\n<created_at_us>\n<name>"   (names hold no control characters)
//   TTL    the engine's AuthOptions::cache_ttl_ms (PX), so a revocation that could not erase
//          an entry is still bounded by one TTL
//
// One connection of its own behind a mutex (authentication is not a hot Redis path once the
// in-process caches are warm). Redis down: get/put/erase throw kUnavailable, which the
// partner service treats as a miss.
#pragma once

#include <mutex>
#include <string>

#include "auth/partner_service.hpp"
#include "redis/redis.hpp"

namespace couponcore::redis {

class RedisKeyCache final : public auth::SharedKeyCache {
 public:
  RedisKeyCache(const RedisUrl& url, RedisConnOptions options, std::string key_prefix);

  std::optional<Hit> get(const std::string& key_sha256_hex) override;
  void put(const std::string& key_sha256_hex, const Partner& partner, int64_t ttl_ms) override;
  void erase(const std::string& key_sha256_hex) override;

 private:
  std::string key(const std::string& hash) const { return prefix_ + "auth:" + hash; }

  const std::string prefix_;
  std::mutex mu_;
  RedisConn conn_;
};

}  // namespace couponcore::redis
