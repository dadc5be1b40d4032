// The in-process authentication cache; see key_cache.hpp.
#include "auth/key_cache.hpp"

#include <algorithm>

#include "auth/api_key.hpp"

namespace couponcore::auth {

KeyCache::KeyCache(std::size_t entries_max, int64_t ttl_ms) : entries_max_(entries_max), ttl_ms_(ttl_ms) {}

std::optional<std::optional<Partner>> KeyCache::get(const std::string& hash, int64_t now_ms) {
  if (!enabled()) return std::nullopt;
  std::lock_guard lock(mu_);
  auto it = entries_.find(hash);
  if (it == entries_.end()) return std::nullopt;
  if (it->second.expires_at_ms <= now_ms || !constant_time_equal(it->second.key_sha256_hex, hash)) {
    entries_.erase(it);  // its FIFO slot goes stale and is skipped later
    return std::nullopt;
  }
  return it->second.partner;
}

void KeyCache::put(const std::string& hash, std::optional<Partner> partner, int64_t now_ms) {
  put_for(hash, std::move(partner), now_ms, ttl_ms_);
}

void KeyCache::put_for(const std::string& hash, std::optional<Partner> partner, int64_t now_ms, int64_t ttl_ms) {
  if (!enabled() || ttl_ms <= 0) return;
  std::lock_guard lock(mu_);
  const uint64_t generation = next_generation_++;
  auto it = entries_.find(hash);
  if (it == entries_.end()) {
    while (entries_.size() >= entries_max_) evict_oldest_locked();
    it = entries_.emplace(hash, Entry{}).first;
  }
  it->second = Entry{hash, std::move(partner), now_ms + std::min(ttl_ms, ttl_ms_), generation};
  order_.emplace_back(hash, generation);
  // Stale FIFO slots (erased or refreshed entries) are bounded too: compact when they dominate.
  if (order_.size() > 2 * entries_max_ + 16) {
    std::deque<std::pair<std::string, uint64_t>> live;
    for (auto& slot : order_) {
      auto e = entries_.find(slot.first);
      if (e != entries_.end() && e->second.generation == slot.second) live.push_back(std::move(slot));
    }
    order_.swap(live);
  }
}

void KeyCache::evict_oldest_locked() {
  while (!order_.empty()) {
    auto [hash, generation] = std::move(order_.front());
    order_.pop_front();
    auto it = entries_.find(hash);
    if (it != entries_.end() && it->second.generation == generation) {
      entries_.erase(it);
      return;
    }
  }
  entries_.clear();  // cannot happen: every entry has a live slot
}

void KeyCache::erase(const std::string& hash) {
  std::lock_guard lock(mu_);
  entries_.erase(hash);
}

std::size_t KeyCache::size() const {
  std::lock_guard lock(mu_);
  return entries_.size();
}

}  // namespace couponcore::auth
