// What the partner service needs from a database: partners, their API key hashes, and the key
// lookup. Implemented on SQLite (store/sqlite_partners.cpp) and PostgreSQL
// (postgres/pg_partners.cpp). Keys are only ever passed as SHA-256 hex; nothing here sees a key.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "couponcore/auth.hpp"

namespace couponcore::auth {

struct KeyRecord {
  Partner partner;
  std::string key_sha256_hex;
  bool revoked = false;
};

// What rotate/revoke changed: the partner after the change and the hashes of the keys that
// were revoked (so caches can drop exactly those).
struct KeyChange {
  Partner partner;
  std::vector<std::string> revoked_sha256_hex;
};

class PartnerStore {
 public:
  virtual ~PartnerStore() = default;
  // A new partner and its first key, in one transaction.
  virtual Partner insert_partner(const std::string& name, const std::string& key_sha256_hex,
                                 const std::string& key_hint, int64_t now_us) = 0;
  // Revokes every active key of the partner and adds the new one, in one transaction.
  // nullopt: no such partner.
  virtual std::optional<KeyChange> rotate_key(int64_t partner_id, const std::string& key_sha256_hex,
                                              const std::string& key_hint, int64_t now_us) = 0;
  virtual std::optional<KeyChange> revoke_keys(int64_t partner_id, int64_t now_us) = 0;
  virtual std::optional<Partner> get(int64_t partner_id) = 0;
  // Ordered by id, after after_id, at most limit.
  virtual std::vector<Partner> list(int64_t after_id, int32_t limit) = 0;
  // One indexed lookup by hash (revoked keys are returned with revoked = true).
  virtual std::optional<KeyRecord> find_key(const std::string& key_sha256_hex) = 0;
};

}  // namespace couponcore::auth
