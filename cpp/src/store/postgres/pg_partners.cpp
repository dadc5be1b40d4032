// Partners and API key hashes on PostgreSQL; see pg_partners.hpp.
#include "store/postgres/pg_partners.hpp"

#include "couponcore/error.hpp"

namespace couponcore {

namespace {

constexpr const char* kPartnerSelect =
    "SELECT p.id, p.name, p.created_at_us,"
    " (SELECT count(*) FROM api_keys k WHERE k.partner_id = p.id AND k.revoked_at_us IS NULL)"
    " FROM partners p";

Partner partner_from(const pg::Result& r, int row) {
  Partner p;
  p.id = r.i64(row, 0);
  p.name = std::string(r.text(row, 1));
  p.created_at_us = r.i64(row, 2);
  p.active_keys = r.i64(row, 3);
  return p;
}

std::optional<Partner> get_on(pg::Conn& conn, int64_t partner_id) {
  pg::Result r = conn.exec_prepared("lc_partner_get", std::string(kPartnerSelect) + " WHERE p.id = $1",
                                    pg::Params().add(partner_id));
  if (r.rows() == 0) return std::nullopt;
  return partner_from(r, 0);
}

void add_key_on(pg::Conn& conn, int64_t partner_id, const std::string& hash, const std::string& hint, int64_t now_us) {
  conn.exec_prepared("lc_key_insert",
                     "INSERT INTO api_keys (partner_id, key_sha256, key_hint, created_at_us) VALUES ($1, $2, $3, $4)",
                     pg::Params().add(partner_id).add(hash).add(hint).add(now_us));
}

}  // namespace

Partner PgPartnerStore::insert_partner(const std::string& name, const std::string& hash, const std::string& hint,
                                       int64_t now_us) {
  auto conn = pool_.acquire();
  pg::Tx tx(*conn);
  pg::Result r = conn->exec_prepared("lc_partner_insert",
                                     "INSERT INTO partners (name, created_at_us) VALUES ($1, $2) RETURNING id",
                                     pg::Params().add(name).add(now_us));
  const int64_t id = r.i64(0, 0);
  add_key_on(*conn, id, hash, hint, now_us);
  std::optional<Partner> p = get_on(*conn, id);
  if (!p) throw Error(ErrorCode::kInternal, "partner vanished inside its own transaction");
  tx.commit();
  return *p;
}

std::optional<auth::KeyChange> PgPartnerStore::change_keys(int64_t partner_id, const std::string* new_hash,
                                                           const std::string* new_hint, int64_t now_us) {
  auto conn = pool_.acquire();
  pg::Tx tx(*conn);
  pg::Result lock = conn->exec_prepared("lc_partner_lock", "SELECT id FROM partners WHERE id = $1 FOR UPDATE",
                                        pg::Params().add(partner_id));
  if (lock.rows() == 0) return std::nullopt;
  pg::Result revoked = conn->exec_prepared(
      "lc_keys_revoke",
      "UPDATE api_keys SET revoked_at_us = $1 WHERE partner_id = $2 AND revoked_at_us IS NULL RETURNING key_sha256",
      pg::Params().add(now_us).add(partner_id));
  auth::KeyChange change;
  for (int i = 0; i < revoked.rows(); ++i) change.revoked_sha256_hex.emplace_back(revoked.text(i, 0));
  if (new_hash) add_key_on(*conn, partner_id, *new_hash, *new_hint, now_us);
  change.partner = *get_on(*conn, partner_id);
  tx.commit();
  return change;
}

std::optional<auth::KeyChange> PgPartnerStore::rotate_key(int64_t partner_id, const std::string& hash,
                                                          const std::string& hint, int64_t now_us) {
  return change_keys(partner_id, &hash, &hint, now_us);
}

std::optional<auth::KeyChange> PgPartnerStore::revoke_keys(int64_t partner_id, int64_t now_us) {
  return change_keys(partner_id, nullptr, nullptr, now_us);
}

std::optional<Partner> PgPartnerStore::get(int64_t partner_id) {
  auto conn = pool_.acquire();
  return get_on(*conn, partner_id);
}

std::vector<Partner> PgPartnerStore::list(int64_t after_id, int32_t limit) {
  auto conn = pool_.acquire();
  pg::Result r = conn->exec_prepared("lc_partner_list", std::string(kPartnerSelect) + " WHERE p.id > $1 ORDER BY p.id LIMIT $2",
                                     pg::Params().add(after_id).add(int64_t{limit}));
  std::vector<Partner> out;
  for (int i = 0; i < r.rows(); ++i) out.push_back(partner_from(r, i));
  return out;
}

std::optional<auth::KeyRecord> PgPartnerStore::find_key(const std::string& hash) {
  auto conn = pool_.acquire();
  pg::Result r = conn->exec_prepared(
      "lc_key_find",
      "SELECT p.id, p.name, p.created_at_us, 1, k.key_sha256, k.revoked_at_us IS NOT NULL"
      " FROM api_keys k JOIN partners p ON p.id = k.partner_id WHERE k.key_sha256 = $1",
      pg::Params().add(hash));
  if (r.rows() == 0) return std::nullopt;
  auth::KeyRecord rec;
  rec.partner = partner_from(r, 0);
  rec.key_sha256_hex = std::string(r.text(0, 4));
  rec.revoked = r.boolean(0, 5);
  if (rec.revoked) rec.partner.active_keys = 0;
  return rec;
}

}  // namespace couponcore
