// The embedded wallet store: the wallet tables in a SQLite file (usually the coupon engine's
// own file), and open_wallets_embedded().
//
// One connection per store object; the engine keeps two (its committer thread's and one for
// reads). A batch is one BEGIN IMMEDIATE transaction: SQLite takes its single write lock at
// BEGIN, which is the whole lock set (every wallet of the batch, and against other engines and
// processes on the same file, the coupon engine included), so begin_batch only reads after
// it. Statements are prepared once and run per row: in-process there is no round trip to save,
// and one transaction still costs one fsync. Entry and lot ids are max(id) + 1.. under the lock.
//
// Schema: migration list "wallet" (same logical shape as pg_wallet_store.cpp).
#include <algorithm>
#include <memory>
#include <stdexcept>

#include "couponcore/error.hpp"
#include "store/sqlite/sqlite.hpp"
#include "store/sqlite/sqlite_coupons.hpp"
#include "store/sqlite/sqlite_events.hpp"
#include "store/wallet_audit_sql.hpp"
#include "wallet/wallet_engine.hpp"
#include "wallet/wallet_ops.hpp"
#include "wallet/wallet_store.hpp"

namespace couponcore::wallet {

namespace {

const std::vector<sqlite::Migration>& sqlite_wallet_migrations() {
  static const std::vector<sqlite::Migration> all = {
      {"wallet", 1,
       "CREATE TABLE wallets ("
       " id INTEGER PRIMARY KEY,"
       " partner_id INTEGER NOT NULL,"
       " user_id TEXT NOT NULL,"
       " balance INTEGER NOT NULL DEFAULT 0 CHECK (balance >= 0),"
       " created_at_us INTEGER NOT NULL,"
       " UNIQUE (partner_id, user_id));"
       "CREATE TABLE wallet_entries ("
       " id INTEGER PRIMARY KEY,"
       " wallet_id INTEGER NOT NULL REFERENCES wallets(id),"
       " kind TEXT NOT NULL CHECK (kind IN ('earn','use','cancel','expire','transfer_in','transfer_out')),"
       " amount INTEGER NOT NULL CHECK (amount <> 0),"
       " balance_after INTEGER NOT NULL CHECK (balance_after >= 0),"
       " idempotency_key TEXT,"
       " ref_entry_id INTEGER,"
       " order_id TEXT,"
       " reason TEXT,"
       " created_at_us INTEGER NOT NULL);"
       "CREATE INDEX wallet_entries_wallet ON wallet_entries(wallet_id, id);"
       "CREATE UNIQUE INDEX wallet_entries_one_cancel ON wallet_entries(ref_entry_id) WHERE kind = 'cancel';"
       "CREATE TABLE wallet_lots ("
       " id INTEGER PRIMARY KEY,"
       " wallet_id INTEGER NOT NULL REFERENCES wallets(id),"
       " entry_id INTEGER NOT NULL REFERENCES wallet_entries(id),"
       " amount INTEGER NOT NULL CHECK (amount > 0),"
       " remaining INTEGER NOT NULL CHECK (remaining >= 0 AND remaining <= amount),"
       " expires_at_us INTEGER,"
       " state TEXT NOT NULL CHECK (state IN ('active','spent','expired')),"
       " created_at_us INTEGER NOT NULL,"
       " CHECK ((state = 'active') = (remaining > 0)));"
       "CREATE INDEX wallet_lots_active ON wallet_lots(wallet_id) WHERE state = 'active';"
       "CREATE INDEX wallet_lots_due ON wallet_lots(expires_at_us, wallet_id) WHERE state = 'active';"
       "CREATE TABLE wallet_draws ("
       " entry_id INTEGER NOT NULL REFERENCES wallet_entries(id),"
       " lot_id INTEGER NOT NULL REFERENCES wallet_lots(id),"
       " amount INTEGER NOT NULL CHECK (amount > 0),"
       " PRIMARY KEY (entry_id, lot_id)) WITHOUT ROWID;"
       "CREATE TABLE wallet_idempotency ("
       " partner_id INTEGER NOT NULL,"
       " idempotency_key TEXT NOT NULL,"
       " fingerprint INTEGER NOT NULL,"
       " op_kind TEXT NOT NULL,"
       " entry_id INTEGER NOT NULL,"
       " amount INTEGER NOT NULL,"
       " balance_after INTEGER NOT NULL,"
       " expired_amount INTEGER NOT NULL DEFAULT 0,"
       " peer_entry_id INTEGER NOT NULL DEFAULT 0,"
       " created_at_us INTEGER NOT NULL,"
       " PRIMARY KEY (partner_id, idempotency_key)) WITHOUT ROWID;"},
      // Checkout with coupons: what a checkout's record must remember for its replay and its
      // cancel.
      {"wallet", 2,
       "ALTER TABLE wallet_idempotency ADD COLUMN order_id TEXT;"
       "ALTER TABLE wallet_idempotency ADD COLUMN order_amount INTEGER NOT NULL DEFAULT 0;"
       "ALTER TABLE wallet_idempotency ADD COLUMN coupon_id INTEGER NOT NULL DEFAULT 0;"
       "ALTER TABLE wallet_idempotency ADD COLUMN discount_amount INTEGER NOT NULL DEFAULT 0;"
       "ALTER TABLE wallet_idempotency ADD COLUMN points INTEGER NOT NULL DEFAULT 0;"
       "ALTER TABLE wallet_idempotency ADD COLUMN payable_amount INTEGER NOT NULL DEFAULT 0;"
       "ALTER TABLE wallet_idempotency ADD COLUMN coupon_state INTEGER NOT NULL DEFAULT -1;"},
      {"wallet", 3, "CREATE INDEX wallet_idempotency_age ON wallet_idempotency (created_at_us);"},
      // cancel_checkout by order id finds the order's checkouts.
      {"wallet", 4,
       "CREATE INDEX wallet_idempotency_checkout_order ON wallet_idempotency (partner_id, order_id)"
       " WHERE op_kind = 'checkout';"},
  };
  return all;
}

constexpr const char* kLotColumns =
    "id, wallet_id, entry_id, amount, remaining, expires_at_us, state, created_at_us";
constexpr const char* kEntryColumns =
    "id, wallet_id, kind, amount, balance_after, idempotency_key, ref_entry_id, order_id, reason,"
    " created_at_us";

LotRow lot_from(const sqlite::Stmt& s) {
  return LotRow{s.i64(0), s.i64(1), s.i64(2), s.i64(3), s.i64(4), s.opt_i64(5), s.text(6) == "expired", s.i64(7)};
}

EntryRow entry_from(const sqlite::Stmt& s) {
  EntryRow e;
  e.id = s.i64(0);
  e.wallet_id = s.i64(1);
  std::optional<WalletEntryKind> kind = entry_kind_from_name(s.text(2));
  if (!kind) throw Error(ErrorCode::kInternal, "unknown entry kind '" + s.text(2) + "'");
  e.kind = *kind;
  e.amount = s.i64(3);
  e.balance_after = s.i64(4);
  e.idempotency_key = s.text(5);
  e.ref_entry_id = s.opt_i64(6).value_or(0);
  e.order_id = s.text(7);
  e.reason = s.text(8);
  e.created_at_us = s.i64(9);
  return e;
}

void bind_text_or_null(sqlite::Stmt& s, int i, const std::string& v) {
  if (v.empty()) {
    s.bind_null(i);
  } else {
    s.bind(i, std::string_view(v));
  }
}

class SqliteWalletStore final : public WalletStore {
 public:
  SqliteWalletStore(const std::string& path, bool synchronous_full, bool events)
      : db_(path, synchronous_full), events_(events) {
    db_.migrate(sqlite_wallet_migrations());
    db_.migrate(sqlite_events::migrations());
  }

  BatchRead begin_batch(const BatchKeys& keys, int64_t now_us) override {
    tx_ = std::make_unique<sqlite::Tx>(db_);  // BEGIN IMMEDIATE: the write lock, i.e. all locks
    create_wallets(keys.create, now_us);
    BatchRead out;
    out.wallets = find_wallets(keys.wallets);
    out.idempotency = load_idempotency(keys.idempotency);
    for (const WalletRow& w : out.wallets) append_active_lots(w.id, &out.lots);
    next_entry_id_ = next_id(max_entry_, "SELECT coalesce(max(id), 0) FROM wallet_entries");
    next_lot_id_ = next_id(max_lot_, "SELECT coalesce(max(id), 0) FROM wallet_lots");
    reserve_ids(keys.reserve_entries, keys.reserve_lots, &out.entry_ids, &out.lot_ids);
    return out;
  }

  CancelTargets load_cancel_targets(const std::vector<int64_t>& entry_ids) override {
    CancelTargets t;
    sqlite::Stmt& e = stmt(entry_, std::string("SELECT ") + kEntryColumns + " FROM wallet_entries WHERE id = ?");
    sqlite::Stmt& d = stmt(draws_, "SELECT lot_id, amount FROM wallet_draws WHERE entry_id = ?");
    sqlite::Stmt& c = stmt(cancel_of_, "SELECT id FROM wallet_entries WHERE kind = 'cancel' AND ref_entry_id = ?");
    sqlite::Stmt& l = stmt(lot_, std::string("SELECT ") + kLotColumns + " FROM wallet_lots WHERE id = ?");
    for (int64_t id : entry_ids) {
      e.bind(1, id);
      const bool found = e.step();
      if (found) t.entries.push_back(entry_from(e));
      e.reset();
      if (!found) continue;
      d.bind(1, id);
      while (d.step()) t.draws.push_back(DrawRow{id, d.i64(0), d.i64(1)});
      d.reset();
      c.bind(1, id);
      if (c.step()) t.cancels.emplace_back(id, c.i64(0));
      c.reset();
    }
    for (const DrawRow& dr : t.draws) {
      l.bind(1, dr.lot_id);
      if (l.step()) t.lots.push_back(lot_from(l));
      l.reset();
    }
    return t;
  }

  // The write lock (BEGIN IMMEDIATE) already keeps every coupon row as it is read here.
  // Embedded grants are committed before ISSUED is answered: no coupon is ever pending.
  CouponLoad lock_coupons(const std::vector<int64_t>& coupon_ids) override {
    CouponLoad out;
    for (int64_t id : coupon_ids) {
      if (std::optional<CouponRow> row = sqlite_coupons::load(db_, id)) out.rows.push_back(std::move(*row));
    }
    return out;
  }

  // The write lock is held since BEGIN IMMEDIATE: ids above max(id) are ours alone.
  void reserve_ids(std::size_t entries, std::size_t lots, std::vector<int64_t>* entry_ids,
                   std::vector<int64_t>* lot_ids) override {
    for (std::size_t i = 0; i < entries; ++i) entry_ids->push_back(next_entry_id_++);
    for (std::size_t i = 0; i < lots; ++i) lot_ids->push_back(next_lot_id_++);
  }

  bool commit_changes(const WalletChanges& ch) override {
    for (const CouponWrite& c : ch.coupons) {
      const bool done = c.use ? sqlite_coupons::mark_used(db_, c.request, c.discount_amount, c.at_us, events_)
                              : sqlite_coupons::mark_cancelled(db_, c.request.coupon_id, c.request.order_id, c.at_us,
                                                               c.request.traceparent, events_);
      if (!done) throw std::logic_error("coupon " + std::to_string(c.request.coupon_id) + " changed under the write lock");
    }
    write_entries(ch.entries);
    if (events_) {  // after the entries, in the batch's transaction (docs/events.md)
      std::vector<std::pair<int64_t, std::string>> ids;
      for (const EntryRow& e : ch.entries) ids.emplace_back(e.id, e.traceparent);
      sqlite_events::write_points_events(db_, ids);
    }
    write_lots(ch);
    sqlite::Stmt& d = stmt(ins_draw_, "INSERT INTO wallet_draws(entry_id, lot_id, amount) VALUES (?, ?, ?)");
    for (const DrawRow& r : ch.draws) {
      d.bind(1, r.entry_id).bind(2, r.lot_id).bind(3, r.amount);
      d.run();
    }
    sqlite::Stmt& w = stmt(upd_wallet_, "UPDATE wallets SET balance = ? WHERE id = ?");
    for (auto [id, balance] : ch.balances) {
      w.bind(1, balance).bind(2, id);
      w.run();
    }
    if (!write_idempotency(ch.idempotency)) {
      tx_.reset();
      return false;
    }
    drop_wallets(ch.drop_wallets);
    tx_->commit();
    tx_.reset();
    return true;
  }

  void rollback() noexcept override { tx_.reset(); }

  std::optional<int64_t> find_wallet(const WalletKey& key) override {
    sqlite::Stmt& s = stmt(find_, "SELECT id, balance FROM wallets WHERE partner_id = ? AND user_id = ?");
    s.bind(1, key.partner_id).bind(2, std::string_view(key.user_id));
    std::optional<int64_t> id;
    if (s.step()) id = s.i64(0);
    s.reset();
    return id;
  }

  std::vector<LotRow> active_lots(int64_t wallet_id) override {
    std::vector<LotRow> out;
    append_active_lots(wallet_id, &out);
    return out;
  }

  std::vector<EntryRow> entries_before(int64_t wallet_id, int64_t cursor, int limit) override {
    sqlite::Stmt& s = stmt(history_, std::string("SELECT ") + kEntryColumns +
                                         " FROM wallet_entries WHERE wallet_id = ? AND (? = 0 OR id < ?)"
                                         " ORDER BY id DESC LIMIT ?");
    s.bind(1, wallet_id).bind(2, cursor).bind(3, cursor).bind(4, int64_t{limit});
    std::vector<EntryRow> out;
    while (s.step()) out.push_back(entry_from(s));
    s.reset();
    return out;
  }

  std::vector<ExpireCandidate> expire_candidates(int64_t now_us, int64_t after_wallet_id, int limit) override {
    sqlite::Stmt& s = stmt(due_,
                           "SELECT w.id, w.partner_id, w.user_id FROM wallets w WHERE w.id IN"
                           " (SELECT DISTINCT wallet_id FROM wallet_lots WHERE state = 'active'"
                           "  AND expires_at_us <= ? AND wallet_id > ?)"
                           " ORDER BY w.id LIMIT ?");
    s.bind(1, now_us).bind(2, after_wallet_id).bind(3, int64_t{limit});
    std::vector<ExpireCandidate> out;
    while (s.step()) out.push_back(ExpireCandidate{s.i64(0), WalletKey{s.i64(1), s.text(2)}});
    s.reset();
    return out;
  }

  WalletAudit audit(int64_t partner_id) override {
    WalletAudit a;
    db_.exec("BEGIN");  // one snapshot for every query
    try {
      int i = 0;
      for (const AuditQuery& q : kAuditQueries) {
        sqlite::Stmt s(db_, q.sql);
        s.bind(1, partner_id);
        set_audit_field(&a, i++, s.step() ? s.i64(0) : 0);
      }
    } catch (...) {
      db_.exec("ROLLBACK");
      throw;
    }
    db_.exec("COMMIT");
    return a;
  }

  int64_t purge_idempotency(int64_t before_us, bool include_checkouts, int limit) override {
    sqlite::Stmt s(db_,
                   "DELETE FROM wallet_idempotency WHERE (partner_id, idempotency_key) IN ("
                   " SELECT partner_id, idempotency_key FROM wallet_idempotency"
                   " WHERE created_at_us < ?1 AND (?2 OR op_kind <> 'checkout') LIMIT ?3)");
    s.bind(1, before_us);
    s.bind(2, int64_t{include_checkouts ? 1 : 0});
    s.bind(3, int64_t{limit});
    s.step();
    return db_.changes();
  }

 private:
  std::vector<WalletRow> find_wallets(const std::vector<WalletKey>& keys) {
    sqlite::Stmt& s = stmt(find_, "SELECT id, balance FROM wallets WHERE partner_id = ? AND user_id = ?");
    std::vector<WalletRow> out;
    for (const WalletKey& k : keys) {
      s.bind(1, k.partner_id).bind(2, std::string_view(k.user_id));
      if (s.step()) out.push_back(WalletRow{s.i64(0), k.partner_id, k.user_id, s.i64(1)});
      s.reset();
    }
    std::sort(out.begin(), out.end(), [](const WalletRow& a, const WalletRow& b) { return a.id < b.id; });
    return out;
  }

  static constexpr const char* kIdemColumns =
      "fingerprint, op_kind, entry_id, amount, balance_after, expired_amount, peer_entry_id, created_at_us,"
      " order_id, order_amount, coupon_id, discount_amount, points, payable_amount, coupon_state";

  // One record from a statement selecting kIdemColumns.
  static IdemRow idem_row(sqlite::Stmt& s, int64_t partner_id, std::string key) {
    IdemRow r;
    r.partner_id = partner_id;
    r.key = std::move(key);
    r.fingerprint = s.i64(0);
    std::optional<WalletOpKind> kind = op_kind_from_name(s.text(1));
    if (!kind) throw Error(ErrorCode::kInternal, "unknown operation kind '" + s.text(1) + "'");
    r.kind = *kind;
    r.result.entry_id = s.i64(2);
    r.result.amount = s.i64(3);
    r.result.balance_after = s.i64(4);
    r.result.expired_amount = s.i64(5);
    r.result.peer_entry_id = s.i64(6);
    r.result.created_at_us = s.i64(7);
    r.result.order_id = s.text(8);
    r.result.order_amount = s.i64(9);
    r.result.coupon_id = s.i64(10);
    r.result.discount_amount = s.i64(11);
    r.result.points = s.i64(12);
    r.result.payable_amount = s.i64(13);
    r.result.coupon_state = static_cast<int>(s.i64(14));
    return r;
  }

  std::vector<IdemRow> load_idempotency(const std::vector<IdemKey>& keys) {
    sqlite::Stmt& s = stmt(idem_, std::string("SELECT ") + kIdemColumns +
                                      " FROM wallet_idempotency WHERE partner_id = ? AND idempotency_key = ?");
    std::vector<IdemRow> out;
    for (const IdemKey& k : keys) {
      s.bind(1, k.partner_id).bind(2, std::string_view(k.key));
      if (s.step()) out.push_back(idem_row(s, k.partner_id, k.key));
      s.reset();
    }
    return out;
  }

  std::vector<IdemRow> load_checkouts_of_orders(
      const std::vector<std::pair<int64_t, std::string>>& orders) override {
    sqlite::Stmt& s = stmt(order_checkouts_, std::string("SELECT ") + kIdemColumns +
                                                 ", idempotency_key FROM wallet_idempotency"
                                                 " WHERE partner_id = ? AND order_id = ? AND op_kind = 'checkout'");
    std::vector<IdemRow> out;
    for (const auto& [partner, order] : orders) {
      s.bind(1, partner).bind(2, std::string_view(order));
      while (s.step()) out.push_back(idem_row(s, partner, s.text(15)));
      s.reset();
    }
    return out;
  }


  void create_wallets(const std::vector<WalletKey>& create, int64_t now_us) {
    if (create.empty()) return;
    sqlite::Stmt& s = stmt(create_, "INSERT INTO wallets(partner_id, user_id, balance, created_at_us)"
                                    " VALUES (?, ?, 0, ?) ON CONFLICT DO NOTHING");
    for (const WalletKey& k : create) {
      s.bind(1, k.partner_id).bind(2, std::string_view(k.user_id)).bind(3, now_us);
      s.run();
    }
  }

  // Wallets created by this batch whose operations were all refused (created in this very
  // transaction, under the write lock): deleted while they hold no entries.
  void drop_wallets(const std::vector<int64_t>& ids) {
    if (ids.empty()) return;
    sqlite::Stmt& s = stmt(drop_, "DELETE FROM wallets WHERE id = ? AND balance = 0"
                                  " AND NOT EXISTS (SELECT 1 FROM wallet_entries WHERE wallet_id = wallets.id)");
    for (int64_t id : ids) {
      s.bind(1, id);
      s.run();
    }
  }

  int64_t next_id(std::unique_ptr<sqlite::Stmt>& slot, const char* sql) {
    sqlite::Stmt& s = stmt(slot, sql);
    s.step();
    const int64_t v = s.i64(0);
    s.reset();
    return v + 1;
  }

  sqlite::Stmt& stmt(std::unique_ptr<sqlite::Stmt>& slot, const std::string& sql) {
    if (!slot) slot = std::make_unique<sqlite::Stmt>(db_, sql);
    return *slot;
  }

  void append_active_lots(int64_t wallet_id, std::vector<LotRow>* out) {
    sqlite::Stmt& s = stmt(lots_, std::string("SELECT ") + kLotColumns +
                                      " FROM wallet_lots WHERE wallet_id = ? AND state = 'active'");
    s.bind(1, wallet_id);
    while (s.step()) out->push_back(lot_from(s));
    s.reset();
  }

  void write_entries(const std::vector<EntryRow>& entries) {
    sqlite::Stmt& s = stmt(ins_entry_,
                           "INSERT INTO wallet_entries(id, wallet_id, kind, amount, balance_after,"
                           " idempotency_key, ref_entry_id, order_id, reason, created_at_us)"
                           " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)");
    for (const EntryRow& e : entries) {
      s.bind(1, e.id).bind(2, e.wallet_id).bind(3, std::string_view(wallet_entry_kind_name(e.kind)));
      s.bind(4, e.amount).bind(5, e.balance_after);
      bind_text_or_null(s, 6, e.idempotency_key);
      if (e.ref_entry_id) {
        s.bind(7, e.ref_entry_id);
      } else {
        s.bind_null(7);
      }
      bind_text_or_null(s, 8, e.order_id);
      bind_text_or_null(s, 9, e.reason);
      s.bind(10, e.created_at_us);
      s.run();
    }
  }

  void write_lots(const WalletChanges& ch) {
    sqlite::Stmt& ins = stmt(ins_lot_,
                             "INSERT INTO wallet_lots(id, wallet_id, entry_id, amount, remaining,"
                             " expires_at_us, state, created_at_us) VALUES (?, ?, ?, ?, ?, ?, ?, ?)");
    for (const LotRow& l : ch.new_lots) {
      ins.bind(1, l.id).bind(2, l.wallet_id).bind(3, l.entry_id).bind(4, l.amount).bind(5, l.remaining);
      ins.bind(6, l.expires_at_us).bind(7, std::string_view(lot_state_name(l))).bind(8, l.created_at_us);
      ins.run();
    }
    sqlite::Stmt& upd = stmt(upd_lot_, "UPDATE wallet_lots SET remaining = ?, state = ? WHERE id = ?");
    for (const LotRow& l : ch.changed_lots) {
      upd.bind(1, l.remaining).bind(2, std::string_view(lot_state_name(l))).bind(3, l.id);
      upd.run();
    }
  }

  // False if a key exists already: impossible under SQLite's single writer, but the engine's
  // answer to it (roll back, retry) is right either way.
  bool write_idempotency(const std::vector<IdemRow>& rows) {
    sqlite::Stmt& s = stmt(ins_idem_,
                           "INSERT INTO wallet_idempotency(partner_id, idempotency_key, fingerprint, op_kind,"
                           " entry_id, amount, balance_after, expired_amount, peer_entry_id, created_at_us,"
                           " order_id, order_amount, coupon_id, discount_amount, points, payable_amount, coupon_state)"
                           " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING");
    for (const IdemRow& r : rows) {
      s.bind(1, r.partner_id).bind(2, std::string_view(r.key)).bind(3, r.fingerprint);
      s.bind(4, std::string_view(op_kind_name(r.kind))).bind(5, r.result.entry_id).bind(6, r.result.amount);
      s.bind(7, r.result.balance_after).bind(8, r.result.expired_amount).bind(9, r.result.peer_entry_id);
      s.bind(10, r.result.created_at_us);
      bind_text_or_null(s, 11, r.result.order_id);
      s.bind(12, r.result.order_amount).bind(13, r.result.coupon_id).bind(14, r.result.discount_amount);
      s.bind(15, r.result.points).bind(16, r.result.payable_amount).bind(17, int64_t{r.result.coupon_state});
      s.run();
      if (db_.changes() != 1) return false;
    }
    return true;
  }

  sqlite::Db db_;
  const bool events_;
  std::unique_ptr<sqlite::Tx> tx_;
  int64_t next_entry_id_ = 0;  // within the current batch
  int64_t next_lot_id_ = 0;
  // Prepared once, on first use.
  std::unique_ptr<sqlite::Stmt> create_, drop_, find_, idem_, order_checkouts_, lots_, entry_, draws_, cancel_of_, lot_;
  std::unique_ptr<sqlite::Stmt> max_entry_, max_lot_, ins_entry_, ins_lot_, upd_lot_, ins_draw_;
  std::unique_ptr<sqlite::Stmt> upd_wallet_, ins_idem_, history_, due_;
};

}  // namespace

std::unique_ptr<WalletStore> open_sqlite_wallet_store(const std::string& path, bool synchronous_full, bool events) {
  return std::make_unique<SqliteWalletStore>(path, synchronous_full, events);
}

}  // namespace couponcore::wallet

namespace couponcore {

std::unique_ptr<WalletEngine> open_wallets_embedded(const EmbeddedWalletOptions& options) {
  check_wallet_options(options.wallet);
  if (options.path.empty() || options.path == ":memory:") {
    throw_invalid("the embedded wallet engine needs a file path (it opens two connections)");
  }
  std::vector<std::unique_ptr<wallet::WalletStore>> writers;
  writers.push_back(wallet::open_sqlite_wallet_store(options.path, options.synchronous_full, options.wallet.events));
  auto reader = wallet::open_sqlite_wallet_store(options.path, options.synchronous_full, options.wallet.events);
  WalletOptions o = options.wallet;
  o.committers = 1;  // SQLite has one writer at a time
  return wallet::make_batched_engine("embedded", std::move(writers), std::move(reader), o);
}

}  // namespace couponcore
