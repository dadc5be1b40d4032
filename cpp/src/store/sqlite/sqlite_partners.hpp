// Partners and API key hashes on the embedded SQLite store (auth::PartnerStore). Shares
// SqliteStore's connection and lock. Schema: migration list "auth", applied by the constructor
// (same logical shape as postgres/pg_partners.cpp). Partner 0, the embedded default, is a row
// without keys.
#pragma once

#include "auth/partner_store.hpp"
#include "store/sqlite/sqlite_store.hpp"

namespace couponcore {

class SqlitePartnerStore final : public auth::PartnerStore {
 public:
  explicit SqlitePartnerStore(SqliteStore& store);

  Partner insert_partner(const std::string& name, const std::string& key_sha256_hex, const std::string& key_hint,
                         int64_t now_us) override;
  std::optional<auth::KeyChange> rotate_key(int64_t partner_id, const std::string& key_sha256_hex,
                                            const std::string& key_hint, int64_t now_us) override;
  std::optional<auth::KeyChange> revoke_keys(int64_t partner_id, int64_t now_us) override;
  std::optional<Partner> get(int64_t partner_id) override;
  std::vector<Partner> list(int64_t after_id, int32_t limit) override;
  std::optional<auth::KeyRecord> find_key(const std::string& key_sha256_hex) override;

 private:
  std::optional<Partner> get_locked(int64_t partner_id);
  std::vector<std::string> revoke_locked(int64_t partner_id, int64_t now_us);
  void add_key_locked(int64_t partner_id, const std::string& hash, const std::string& hint, int64_t now_us);

  SqliteStore& store_;
};

}  // namespace couponcore
