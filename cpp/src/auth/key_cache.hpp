// The in-process authentication cache: key hash -> partner (or "no such key"), each entry
// living ttl_ms. Bounded: at entries_max the oldest entry is evicted first (FIFO by insertion),
// so memory stays fixed however many distinct keys are tried. Negative answers are cached too:
// a flood of well-formed but unknown keys then costs one database query per key per TTL.
// Thread-safe (one mutex; entries are small and operations O(1)).
#pragma once

#include <cstddef>
#include <cstdint>
#include <deque>
#include <mutex>
#include <optional>
#include <string>
#include <unordered_map>

#include "couponcore/auth.hpp"

namespace couponcore::auth {

class KeyCache {
 public:
  KeyCache(std::size_t entries_max, int64_t ttl_ms);

  // nullopt: not cached (or expired). Otherwise the cached answer: a partner, or nullopt for
  // "no such key / revoked".
  std::optional<std::optional<Partner>> get(const std::string& key_sha256_hex, int64_t now_ms);
  void put(const std::string& key_sha256_hex, std::optional<Partner> partner, int64_t now_ms);
  // The same, living at most ttl_ms (capped by the cache's own TTL): for answers taken from a
  // shared cache, whose entry is already partly through its life.
  void put_for(const std::string& key_sha256_hex, std::optional<Partner> partner, int64_t now_ms, int64_t ttl_ms);
  void erase(const std::string& key_sha256_hex);
  std::size_t size() const;
  bool enabled() const { return ttl_ms_ > 0 && entries_max_ > 0; }

 private:
  struct Entry {
    std::string key_sha256_hex;  // compared in constant time on a hit
    std::optional<Partner> partner;
    int64_t expires_at_ms = 0;
    uint64_t generation = 0;  // which insertion this is, to match the FIFO entry
  };
  void evict_oldest_locked();

  const std::size_t entries_max_;
  const int64_t ttl_ms_;
  mutable std::mutex mu_;
  std::unordered_map<std::string, Entry> entries_;
  std::deque<std::pair<std::string, uint64_t>> order_;  // insertion order, possibly stale
  uint64_t next_generation_ = 1;
};

}  // namespace couponcore::auth
