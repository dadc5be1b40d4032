// Partners, API keys and authentication over a PartnerStore, shared by both deployments.
//
//   create(name)            a partner and its first key (the key is returned once, never stored)
//   rotate(partner_id)      a new key; older keys revoked in the same transaction
//   revoke(partner_id)      every key revoked
//   authenticate(key)       cache-aside: in-process KeyCache -> SharedKeyCache (Redis, when the
//                           deployment has one) -> PartnerStore; counts every database query
//
// Revocation bound: rotate/revoke drop the revoked hashes from this engine's cache and from the
// shared cache at once; another engine's in-process cache holds a revoked key at most
// AuthOptions::cache_ttl_ms longer. Unknown, revoked and malformed keys get one error, with one
// message, and a malformed key is refused before anything is hashed or looked up.
#pragma once

#include <atomic>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "auth/key_cache.hpp"
#include "auth/partner_store.hpp"
#include "couponcore/auth.hpp"

namespace couponcore::auth {

// A cache shared by engines (production: Redis, keys under the deployment's prefix). Holds
// positive answers only, with a TTL; must be thread-safe. Failures may throw: authentication
// then falls through to the database, and a failed erase is bounded by the entry's TTL.
class SharedKeyCache {
 public:
  struct Hit {
    Partner partner;
    int64_t ttl_left_ms = 0;  // what remains of the entry's life: the local copy lives no longer
  };
  virtual ~SharedKeyCache() = default;
  virtual std::optional<Hit> get(const std::string& key_sha256_hex) = 0;
  virtual void put(const std::string& key_sha256_hex, const Partner& partner, int64_t ttl_ms) = 0;
  virtual void erase(const std::string& key_sha256_hex) = 0;
};

class PartnerService {
 public:
  PartnerService(PartnerStore& store, const AuthOptions& options, SharedKeyCache* shared = nullptr);

  PartnerKey create(const std::string& name);
  PartnerKey rotate(int64_t partner_id);
  Partner revoke(int64_t partner_id);
  Partner get(int64_t partner_id);
  std::vector<Partner> list(int64_t after_id, int32_t limit);
  bool exists(int64_t partner_id);
  Partner authenticate(std::string_view api_key);
  AuthCounters counters() const;

 private:
  void forget(const std::vector<std::string>& revoked_hashes);
  static void check_keyed_partner(int64_t partner_id);

  PartnerStore& store_;
  AuthOptions options_;
  SharedKeyCache* shared_;
  KeyCache cache_;
  std::atomic<uint64_t> authentications_{0};
  std::atomic<uint64_t> failures_{0};
  std::atomic<uint64_t> cache_hits_{0};
  std::atomic<uint64_t> l2_hits_{0};
  std::atomic<uint64_t> db_queries_{0};
  std::atomic<uint64_t> revocation_epoch_{0};  // bumped after every rotate/revoke commit
};

// The one error for unknown, revoked and malformed keys.
[[noreturn]] void throw_unauthenticated();
void check_auth_options(const AuthOptions& options);
void check_partner_name(const std::string& name);

}  // namespace couponcore::auth
