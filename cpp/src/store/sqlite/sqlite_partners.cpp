// Partners and API key hashes on SQLite; see sqlite_partners.hpp.
#include "store/sqlite/sqlite_partners.hpp"

#include "couponcore/error.hpp"

namespace couponcore {

namespace {

const std::vector<sqlite::Migration>& auth_migrations() {
  static const std::vector<sqlite::Migration> all = {
      {"auth", 1,
       "CREATE TABLE partners ("
       " id INTEGER PRIMARY KEY,"
       " name TEXT NOT NULL,"
       " created_at_us INTEGER NOT NULL);"
       "INSERT INTO partners(id, name, created_at_us) VALUES (0, 'default', 0);"
       "CREATE TABLE api_keys ("
       " id INTEGER PRIMARY KEY,"
       " partner_id INTEGER NOT NULL REFERENCES partners(id),"
       " key_sha256 TEXT NOT NULL UNIQUE CHECK (length(key_sha256) = 64),"
       " key_hint TEXT NOT NULL,"
       " created_at_us INTEGER NOT NULL,"
       " revoked_at_us INTEGER);"
       "CREATE INDEX api_keys_partner_active ON api_keys(partner_id) WHERE revoked_at_us IS NULL;"},
  };
  return all;
}

constexpr const char* kPartnerSelect =
    "SELECT p.id, p.name, p.created_at_us,"
    " (SELECT count(*) FROM api_keys k WHERE k.partner_id = p.id AND k.revoked_at_us IS NULL)"
    " FROM partners p";

Partner partner_from(const sqlite::Stmt& s) {
  Partner p;
  p.id = s.i64(0);
  p.name = s.text(1);
  p.created_at_us = s.i64(2);
  p.active_keys = s.i64(3);
  return p;
}

}  // namespace

SqlitePartnerStore::SqlitePartnerStore(SqliteStore& store) : store_(store) {
  std::lock_guard lock(store_.mutex());
  store_.db().migrate(auth_migrations());
}

void SqlitePartnerStore::add_key_locked(int64_t partner_id, const std::string& hash, const std::string& hint,
                                        int64_t now_us) {
  sqlite::Stmt s(store_.db(),
                 "INSERT INTO api_keys(partner_id, key_sha256, key_hint, created_at_us) VALUES (?, ?, ?, ?)");
  s.bind(1, partner_id).bind(2, std::string_view(hash)).bind(3, std::string_view(hint)).bind(4, now_us).run();
}

std::vector<std::string> SqlitePartnerStore::revoke_locked(int64_t partner_id, int64_t now_us) {
  std::vector<std::string> revoked;
  {
    sqlite::Stmt s(store_.db(), "SELECT key_sha256 FROM api_keys WHERE partner_id = ? AND revoked_at_us IS NULL");
    s.bind(1, partner_id);
    while (s.step()) revoked.push_back(s.text(0));
  }
  sqlite::Stmt u(store_.db(), "UPDATE api_keys SET revoked_at_us = ? WHERE partner_id = ? AND revoked_at_us IS NULL");
  u.bind(1, now_us).bind(2, partner_id).run();
  return revoked;
}

std::optional<Partner> SqlitePartnerStore::get_locked(int64_t partner_id) {
  sqlite::Stmt s(store_.db(), std::string(kPartnerSelect) + " WHERE p.id = ?");
  s.bind(1, partner_id);
  if (!s.step()) return std::nullopt;
  return partner_from(s);
}

Partner SqlitePartnerStore::insert_partner(const std::string& name, const std::string& hash, const std::string& hint,
                                           int64_t now_us) {
  std::lock_guard lock(store_.mutex());
  sqlite::Tx tx(store_.db());
  {
    sqlite::Stmt s(store_.db(), "INSERT INTO partners(name, created_at_us) VALUES (?, ?)");
    s.bind(1, std::string_view(name)).bind(2, now_us).run();
  }
  const int64_t id = store_.db().last_insert_rowid();
  add_key_locked(id, hash, hint, now_us);
  std::optional<Partner> p = get_locked(id);
  if (!p) throw Error(ErrorCode::kInternal, "partner vanished inside its own transaction");
  tx.commit();
  return *p;
}

std::optional<auth::KeyChange> SqlitePartnerStore::rotate_key(int64_t partner_id, const std::string& hash,
                                                              const std::string& hint, int64_t now_us) {
  std::lock_guard lock(store_.mutex());
  sqlite::Tx tx(store_.db());
  if (!get_locked(partner_id)) return std::nullopt;
  auth::KeyChange change;
  change.revoked_sha256_hex = revoke_locked(partner_id, now_us);
  add_key_locked(partner_id, hash, hint, now_us);
  change.partner = *get_locked(partner_id);
  tx.commit();
  return change;
}

std::optional<auth::KeyChange> SqlitePartnerStore::revoke_keys(int64_t partner_id, int64_t now_us) {
  std::lock_guard lock(store_.mutex());
  sqlite::Tx tx(store_.db());
  if (!get_locked(partner_id)) return std::nullopt;
  auth::KeyChange change;
  change.revoked_sha256_hex = revoke_locked(partner_id, now_us);
  change.partner = *get_locked(partner_id);
  tx.commit();
  return change;
}

std::optional<Partner> SqlitePartnerStore::get(int64_t partner_id) {
  std::lock_guard lock(store_.mutex());
  return get_locked(partner_id);
}

std::vector<Partner> SqlitePartnerStore::list(int64_t after_id, int32_t limit) {
  std::lock_guard lock(store_.mutex());
  sqlite::Stmt s(store_.db(), std::string(kPartnerSelect) + " WHERE p.id > ? ORDER BY p.id LIMIT ?");
  s.bind(1, after_id).bind(2, int64_t{limit});
  std::vector<Partner> out;
  while (s.step()) out.push_back(partner_from(s));
  return out;
}

std::optional<auth::KeyRecord> SqlitePartnerStore::find_key(const std::string& hash) {
  std::lock_guard lock(store_.mutex());
  sqlite::Stmt s(store_.db(),
                 "SELECT p.id, p.name, p.created_at_us, 1, k.key_sha256, k.revoked_at_us IS NOT NULL"
                 " FROM api_keys k JOIN partners p ON p.id = k.partner_id WHERE k.key_sha256 = ?");
  s.bind(1, std::string_view(hash));
  if (!s.step()) return std::nullopt;
  auth::KeyRecord r;
  r.partner = partner_from(s);
  r.key_sha256_hex = s.text(4);
  r.revoked = s.i64(5) != 0;
  if (r.revoked) r.partner.active_keys = 0;
  return r;
}

}  // namespace couponcore
