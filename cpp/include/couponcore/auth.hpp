// Partners and their API keys.
//
// A partner is a tenant: every campaign belongs to one (partner 0 is the embedded default and
// holds no keys). A key looks like `cc_live_` + 52 base32 characters (32 bytes from the kernel
// CSPRNG); it is shown once, when created or rotated, and stored only as its SHA-256. Unknown,
// revoked and malformed keys all fail with the same kUnauthenticated error.
//
// authenticate() is cache-aside: in-process TTL cache -> (production) Redis -> database.
// A revocation or rotation invalidates this engine's cache at once; other engines on the same
// database see it within AuthOptions::cache_ttl_ms (the stated revocation bound).
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace couponcore {

inline constexpr std::string_view kApiKeyPrefix = "cc_live_";

struct Partner {
  int64_t id = 0;
  std::string name;
  int64_t created_at_us = 0;
  int64_t active_keys = 0;  // keys not revoked (0 or 1 after create/rotate; 0 after revoke)
};

// What create_partner / rotate_partner_key return: the only time the key is visible.
struct PartnerKey {
  Partner partner;
  std::string api_key;
};

struct AuthOptions {
  int64_t cache_ttl_ms = 30'000;         // 0 disables the cache; at most limits::kAuthCacheTtlMsMax
  std::size_t cache_entries_max = 10'000;  // at most limits::kAuthCacheEntriesMax; oldest evicted first
};

// Monotonic counters since open.
struct AuthCounters {
  uint64_t authentications = 0;  // authenticate() calls
  uint64_t failures = 0;         // of which kUnauthenticated
  uint64_t cache_hits = 0;       // answered by the in-process cache
  uint64_t l2_hits = 0;          // answered by the shared cache (Redis), production only
  uint64_t db_queries = 0;       // key lookups that reached the database
};

}  // namespace couponcore
