// The embedded store: campaigns and coupons in one SQLite file (WAL, synchronous=FULL).
// The logical schema is the PostgreSQL one (cpp/src/postgres/migrations): same tables, same
// unique keys, so data and tests carry over between deployments.
//
// Thread-safe: one connection behind a mutex. write_grants is the group commit: one
// transaction for a whole batch of grants.
#pragma once

#include <functional>
#include <mutex>
#include <string>
#include <vector>

#include "couponcore/types.hpp"
#include "store/sqlite.hpp"

namespace couponcore {

class SqliteStore {
 public:
  SqliteStore(const std::string& path, bool synchronous_full);

  Campaign insert_campaign(const CampaignSpec& spec, int64_t now_us);
  std::vector<Campaign> load_campaigns();
  void update_campaign_state(int64_t campaign_id, CampaignState state);
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
  std::mutex mu_;
  sqlite::Db db_;
};

Campaign campaign_from_row(const sqlite::Stmt& s);

}  // namespace couponcore
