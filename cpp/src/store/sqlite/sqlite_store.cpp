#include "store/sqlite/sqlite_store.hpp"

#include "coupons/rules.hpp"
#include "couponcore/error.hpp"
#include "couponcore/limits.hpp"
#include "store/sqlite/sqlite_events.hpp"

namespace couponcore {

namespace {

const std::vector<sqlite::Migration>& migrations() {
  static const std::vector<sqlite::Migration> all = {
      {"coupons", 1,
       "CREATE TABLE campaigns ("
       " id INTEGER PRIMARY KEY,"
       " partner_id INTEGER NOT NULL DEFAULT 0,"
       " name TEXT NOT NULL,"
       " quantity INTEGER NOT NULL CHECK (quantity > 0),"
       " per_user_limit INTEGER NOT NULL CHECK (per_user_limit > 0),"
       " starts_at_us INTEGER, ends_at_us INTEGER,"
       " state INTEGER NOT NULL DEFAULT 0,"
       " discount_kind INTEGER NOT NULL DEFAULT 0,"
       " discount_value INTEGER NOT NULL DEFAULT 0,"
       " discount_max INTEGER,"
       " min_order_amount INTEGER NOT NULL DEFAULT 0,"
       " valid_until_us INTEGER, valid_days INTEGER,"
       " created_at_us INTEGER NOT NULL);"
       "CREATE INDEX campaigns_partner ON campaigns(partner_id, id);"
       "CREATE TABLE coupons ("
       " id INTEGER PRIMARY KEY,"  // campaign_id * 2^32 + seq
       " campaign_id INTEGER NOT NULL REFERENCES campaigns(id),"
       " seq INTEGER NOT NULL CHECK (seq > 0),"
       " user_id TEXT NOT NULL,"
       " user_ordinal INTEGER NOT NULL CHECK (user_ordinal > 0),"
       " request_id TEXT,"
       " issued_at_us INTEGER NOT NULL,"
       " UNIQUE (campaign_id, seq),"
       " UNIQUE (campaign_id, user_id, user_ordinal));"},
      // The coupon lifecycle (coupons/rules.hpp): state 0 issued, 1 used, 2 expired; the
      // validity fixed at issue; the current use (cleared by a cancel) and the last cancelled
      // order (for idempotent cancels). Existing coupons get their validity computed here.
      {"coupons", 2,
       "ALTER TABLE coupons ADD COLUMN state INTEGER NOT NULL DEFAULT 0 CHECK (state IN (0, 1, 2));"
       "ALTER TABLE coupons ADD COLUMN valid_until_us INTEGER;"
       "ALTER TABLE coupons ADD COLUMN used_order_id TEXT;"
       "ALTER TABLE coupons ADD COLUMN used_at_us INTEGER;"
       "ALTER TABLE coupons ADD COLUMN used_amount INTEGER;"
       "ALTER TABLE coupons ADD COLUMN discount_amount INTEGER;"
       "ALTER TABLE coupons ADD COLUMN cancelled_order_id TEXT;"
       "ALTER TABLE coupons ADD COLUMN state_changed_at_us INTEGER;"
       "UPDATE coupons SET valid_until_us = (SELECT coalesce(c.valid_until_us,"
       " coupons.issued_at_us + c.valid_days * 86400000000) FROM campaigns c WHERE c.id = coupons.campaign_id);"
       "CREATE INDEX coupons_user ON coupons(user_id, id);"
       "CREATE INDEX coupons_expiry ON coupons(valid_until_us) WHERE state = 0 AND valid_until_us IS NOT NULL;"},
  };
  return all;
}

constexpr const char* kCampaignColumns =
    "id, partner_id, name, quantity, per_user_limit, starts_at_us, ends_at_us, state,"
    " discount_kind, discount_value, discount_max, min_order_amount, valid_until_us, valid_days,"
    " created_at_us";

}  // namespace

Campaign campaign_from_row(const sqlite::Stmt& s) {
  Campaign c;
  c.id = s.i64(0);
  c.spec.partner_id = s.i64(1);
  c.spec.name = s.text(2);
  c.spec.quantity = s.i64(3);
  c.spec.per_user_limit = static_cast<int32_t>(s.i64(4));
  c.spec.starts_at_us = s.opt_i64(5);
  c.spec.ends_at_us = s.opt_i64(6);
  c.state = static_cast<CampaignState>(s.i64(7));
  c.spec.discount_kind = static_cast<DiscountKind>(s.i64(8));
  c.spec.discount_value = s.i64(9);
  c.spec.discount_max = s.opt_i64(10);
  c.spec.min_order_amount = s.i64(11);
  c.spec.valid_until_us = s.opt_i64(12);
  if (auto d = s.opt_i64(13)) c.spec.valid_days = static_cast<int32_t>(*d);
  c.created_at_us = s.i64(14);
  return c;
}

SqliteStore::SqliteStore(const std::string& path, bool synchronous_full, bool events)
    : db_(path, synchronous_full), events_(events) {
  db_.migrate(migrations());
  db_.migrate(sqlite_events::migrations());
}

Campaign SqliteStore::insert_campaign(const CampaignSpec& spec, int64_t now_us) {
  std::lock_guard lock(mu_);
  sqlite::Tx tx(db_);
  sqlite::Stmt s(db_,
                 "INSERT INTO campaigns(partner_id, name, quantity, per_user_limit, starts_at_us,"
                 " ends_at_us, discount_kind, discount_value, discount_max, min_order_amount,"
                 " valid_until_us, valid_days, created_at_us)"
                 " VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)");
  s.bind(1, spec.partner_id).bind(2, std::string_view(spec.name)).bind(3, spec.quantity);
  s.bind(4, int64_t{spec.per_user_limit}).bind(5, spec.starts_at_us).bind(6, spec.ends_at_us);
  s.bind(7, static_cast<int64_t>(spec.discount_kind)).bind(8, spec.discount_value);
  s.bind(9, spec.discount_max).bind(10, spec.min_order_amount).bind(11, spec.valid_until_us);
  if (spec.valid_days) {
    s.bind(12, int64_t{*spec.valid_days});
  } else {
    s.bind_null(12);
  }
  s.bind(13, now_us);
  s.run();
  Campaign c;
  c.id = db_.last_insert_rowid();
  if (c.id > limits::kCampaignIdMax) throw Error(ErrorCode::kInternal, "campaign ids exhausted");
  c.spec = spec;
  c.created_at_us = now_us;
  tx.commit();
  validity_[c.id] = Validity{spec.valid_until_us, spec.valid_days, spec.partner_id, spec.quantity};
  return c;
}

std::vector<Campaign> SqliteStore::load_campaigns() {
  std::lock_guard lock(mu_);
  sqlite::Stmt s(db_, std::string("SELECT ") + kCampaignColumns + " FROM campaigns ORDER BY id");
  std::vector<Campaign> out;
  while (s.step()) out.push_back(campaign_from_row(s));
  for (const Campaign& c : out) {
    validity_[c.id] = Validity{c.spec.valid_until_us, c.spec.valid_days, c.spec.partner_id, c.spec.quantity};
  }
  return out;
}

void SqliteStore::update_campaign_state(int64_t campaign_id, CampaignState state) {
  std::lock_guard lock(mu_);
  sqlite::Stmt s(db_, "UPDATE campaigns SET state = ? WHERE id = ?");
  s.bind(1, static_cast<int64_t>(state)).bind(2, campaign_id).run();
}

void SqliteStore::update_campaign_quantity(int64_t campaign_id, int64_t quantity) {
  std::lock_guard lock(mu_);
  // The store's own guard: never below the coupons it holds (the gate checks its in-memory
  // count, which also covers grants not yet committed, before it gets here).
  sqlite::Stmt s(db_,
                 "UPDATE campaigns SET quantity = ?1 WHERE id = ?2"
                 " AND ?1 >= (SELECT count(*) FROM coupons WHERE campaign_id = ?2)");
  s.bind(1, quantity).bind(2, campaign_id).run();
  if (db_.changes() != 1) {
    throw_conflict("campaign " + std::to_string(campaign_id) + ": quantity " + std::to_string(quantity) +
                   " is below the coupons already issued");
  }
  if (auto it = validity_.find(campaign_id); it != validity_.end()) it->second.quantity = quantity;
}

const SqliteStore::Validity& SqliteStore::terms_locked(int64_t campaign_id) {
  auto it = validity_.find(campaign_id);
  if (it == validity_.end()) {
    sqlite::Stmt s(db_, "SELECT valid_until_us, valid_days, partner_id, quantity FROM campaigns WHERE id = ?");
    s.bind(1, campaign_id);
    Validity v;
    if (s.step()) {
      v.valid_until_us = s.opt_i64(0);
      if (auto d = s.opt_i64(1)) v.valid_days = static_cast<int32_t>(*d);
      v.partner_id = s.i64(2);
      v.quantity = s.i64(3);
    }
    it = validity_.emplace(campaign_id, v).first;
  }
  return it->second;
}

void SqliteStore::for_each_grant(int64_t campaign_id, const std::function<void(const Grant&)>& fn) {
  std::lock_guard lock(mu_);
  sqlite::Stmt s(db_,
                 "SELECT seq, user_id, user_ordinal, request_id, issued_at_us FROM coupons"
                 " WHERE campaign_id = ?");
  s.bind(1, campaign_id);
  Grant g;
  g.campaign_id = campaign_id;
  while (s.step()) {
    g.seq = static_cast<uint32_t>(s.i64(0));
    g.user_id = s.text(1);
    g.user_ordinal = static_cast<uint32_t>(s.i64(2));
    g.request_id = s.text(3);
    g.issued_at_us = s.i64(4);
    fn(g);
  }
}

void SqliteStore::write_grants(const std::vector<Grant>& grants) {
  if (grants.empty()) return;
  std::lock_guard lock(mu_);
  sqlite::Tx tx(db_);
  sqlite::Stmt s(db_,
                 "INSERT INTO coupons(id, campaign_id, seq, user_id, user_ordinal, request_id,"
                 " issued_at_us, valid_until_us) VALUES (?,?,?,?,?,?,?,?)");
  std::optional<sqlite_events::IssuedWriter> outbox;
  if (events_) outbox.emplace(db_);
  for (const Grant& g : grants) {
    s.bind(1, make_coupon_id(g.campaign_id, g.seq)).bind(2, g.campaign_id).bind(3, int64_t{g.seq});
    s.bind(4, std::string_view(g.user_id)).bind(5, int64_t{g.user_ordinal});
    if (g.request_id.empty()) {
      s.bind_null(6);
    } else {
      s.bind(6, std::string_view(g.request_id));
    }
    s.bind(7, g.issued_at_us);
    const Validity& t = terms_locked(g.campaign_id);
    const std::optional<int64_t> valid_until = coupon_valid_until_us(t.valid_until_us, t.valid_days, g.issued_at_us);
    s.bind(8, valid_until);
    s.run();
    if (outbox) outbox->write(g, t.partner_id, t.quantity, valid_until);  // after the row, in its transaction
  }
  tx.commit();
}

CampaignStats SqliteStore::stats(int64_t campaign_id) {
  std::lock_guard lock(mu_);
  sqlite::Stmt s(db_,
                 "SELECT count(*), count(DISTINCT user_id), coalesce(min(seq),0), coalesce(max(seq),0)"
                 " FROM coupons WHERE campaign_id = ?");
  s.bind(1, campaign_id);
  CampaignStats st;
  if (s.step()) {
    st.rows = s.i64(0);
    st.distinct_users = s.i64(1);
    st.min_seq = s.i64(2);
    st.max_seq = s.i64(3);
  }
  return st;
}

}  // namespace couponcore
