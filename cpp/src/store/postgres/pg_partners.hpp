// Partners and API key hashes on PostgreSQL (auth::PartnerStore). Schema: migration "auth"
// (postgres/migrations.cpp), the same logical shape as store/sqlite_partners.cpp. Creation,
// rotation and revocation are one transaction each; rotation and revocation lock the partner
// row (FOR UPDATE) so two rotations of one partner queue instead of leaving two live keys.
#pragma once

#include "auth/partner_store.hpp"
#include "store/postgres/conn_pool.hpp"

namespace couponcore {

class PgPartnerStore final : public auth::PartnerStore {
 public:
  explicit PgPartnerStore(pg::ConnPool& pool) : pool_(pool) {}

  Partner insert_partner(const std::string& name, const std::string& key_sha256_hex, const std::string& key_hint,
                         int64_t now_us) override;
  std::optional<auth::KeyChange> rotate_key(int64_t partner_id, const std::string& key_sha256_hex,
                                            const std::string& key_hint, int64_t now_us) override;
  std::optional<auth::KeyChange> revoke_keys(int64_t partner_id, int64_t now_us) override;
  std::optional<Partner> get(int64_t partner_id) override;
  std::vector<Partner> list(int64_t after_id, int32_t limit) override;
  std::optional<auth::KeyRecord> find_key(const std::string& key_sha256_hex) override;

 private:
  std::optional<auth::KeyChange> change_keys(int64_t partner_id, const std::string* new_hash,
                                             const std::string* new_hint, int64_t now_us);

  pg::ConnPool& pool_;
};

}  // namespace couponcore
