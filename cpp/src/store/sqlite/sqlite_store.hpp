// The embedded store: campaigns and coupons in one SQLite file (WAL, synchronous=FULL).
// The logical schema is the PostgreSQL one (cpp/src/postgres/migrations): same tables, same
// unique keys, so data and tests carry over between deployments.
//
// Thread-safe: one connection behind a mutex. write_grants is the group commit: one
// transaction for a whole batch of grants; it also fixes each coupon's valid_until_us.
// The coupon lifecycle (store/sqlite_coupons.*) and partners (store/sqlite_partners.*) use the
// same connection and lock.
#pragma once

#include <functional>
#include <mutex>
#include <optional>
#include <unordered_map>
#include <string>
#include <vector>

#include "couponcore/types.hpp"
#include "store/sqlite/sqlite.hpp"

namespace couponcore {

class SqliteStore {
 public:
  // events: write domain events (sqlite_events.hpp) in the transactions of the changes.
  SqliteStore(const std::string& path, bool synchronous_full, bool events = true);
  bool events() const { return events_; }

  Campaign insert_campaign(const CampaignSpec& spec, int64_t now_us);
  std::vector<Campaign> load_campaigns();
  void update_campaign_state(int64_t campaign_id, CampaignState state);
  // kConflict (nothing changed) if quantity is below the coupons the store holds.
  void update_campaign_quantity(int64_t campaign_id, int64_t quantity);

  // Calls fn for every grant of the campaign (any order).
  void for_each_grant(int64_t campaign_id, const std::function<void(const Grant&)>& fn);
  // One transaction for all; throws (and writes nothing) on failure.
  void write_grants(const std::vector<Grant>& grants);
  CampaignStats stats(int64_t campaign_id);

  // For components that keep their own tables in the same file (wallets): the lock and the
  // connection. Hold the lock while using the connection.
  std::mutex& mutex() { return mu_; }
  sqlite::Db& db() { return db_; }

 private:
  // A coupon's valid_until_us is fixed at issue from its campaign's (immutable) validity rule;
  // the rule is kept here so the group commit computes it without a query per grant. So are the
  // partner and the quantity, for the grant's events (sqlite_events.hpp).
  struct Validity {
    std::optional<int64_t> valid_until_us;
    std::optional<int32_t> valid_days;
    int64_t partner_id = 0;
    int64_t quantity = 0;
  };
  const Validity& terms_locked(int64_t campaign_id);

  std::mutex mu_;
  sqlite::Db db_;
  std::unordered_map<int64_t, Validity> validity_;  // guarded by mu_
  const bool events_;
};

Campaign campaign_from_row(const sqlite::Stmt& s);

}  // namespace couponcore
