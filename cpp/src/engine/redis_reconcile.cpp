// See redis_reconcile.hpp.
#include "engine/redis_reconcile.hpp"

#include <algorithm>
#include <vector>

#include "engine/production_options.hpp"
#include "gate/shards.hpp"
#include "log/grant_log.hpp"
#include "redis/keys.hpp"
#include "redis/redis.hpp"
#include "store/postgres/coupon_store.hpp"
#include "store/postgres/pg.hpp"

namespace couponcore::detail {

namespace {

constexpr std::size_t kReconcileLogEntriesMax = 1'000'000;
constexpr std::size_t kXrangePage = 64;  // entries per XRANGE page (a gate batch each)
constexpr std::size_t kMissingSeqsSampleMax = 100;

using gate::GateCampaign;
using pg::read_once_more;

// reconcile() of a sharded campaign after the re-drive: the gate's view is every shard's.
// Issued seqs are those in no shard's free seqs and no move in flight; a row outside them is
// unexpected. Stock a lost shard took with it (quantity - issued - free) is logged.
ReconcileReport reconcile_sharded(GateCampaign& e, redis::RedisConn& rconn, pg::Conn& pconn, grantlog::GrantLog& glog,
                                  ReconcileReport rep) {
  int64_t issued = 0;
  const gate::SeqRanges free = gate::unissued(rconn, e, &issued);
  rep.gate_issued = issued;
  StringMap<int64_t> gate_holders;
  for (const redis::CampaignKeys& sk : e.shard_keys) {
    for (auto& [user, held] : gate::scan_holders(rconn, sk)) gate_holders[user] += held;
    rep.dead_lettered += glog.dead_letter_count(sk);
  }
  rep.gate_holders = static_cast<int64_t>(gate_holders.size());
  CampaignStats st = pgstore::stats(pconn, e.campaign.id);
  rep.store_rows = st.rows;
  rep.store_distinct_users = st.distinct_users;
  rep.store_max_seq = st.max_seq;
  std::string los = "{", his = "{";
  for (const auto& [lo, hi] : free) {
    los += (los.size() > 1 ? "," : "") + std::to_string(lo);
    his += (his.size() > 1 ? "," : "") + std::to_string(hi);
  }
  los += "}";
  his += "}";
  pg::Result extra = pconn.exec(
      "SELECT count(*) FROM coupons c, unnest($2::bigint[], $3::bigint[]) AS r(lo, hi)"
      " WHERE c.campaign_id = $1 AND c.seq BETWEEN r.lo AND r.hi",
      pg::Params().add(e.campaign.id).add(los).add(his));
  rep.unexpected_in_store = extra.i64(0, 0);
  rep.missing_in_store = std::max<int64_t>(0, issued - (rep.store_rows - rep.unexpected_in_store));
  const int64_t unaccounted = e.campaign.spec.quantity - issued - gate::count_ranges(free);
  if (unaccounted != 0) {
    log(LogLevel::kWarning, "reconcile", "campaign " + std::to_string(e.campaign.id) + ": " + std::to_string(unaccounted) +
                                             " seqs are in no shard (a shard was rebuilt without its free seqs)");
  }
  pgstore::Holdings h = pgstore::holdings(pconn, e.campaign.id);
  for (const auto& [user, rows] : h.holders) {
    auto it = gate_holders.find(user);
    if (it == gate_holders.end() || it->second != rows) rep.holder_mismatches++;
    if (it != gate_holders.end()) gate_holders.erase(it);
  }
  rep.holder_mismatches += static_cast<int64_t>(gate_holders.size());
  rep.consistent = rep.missing_in_store == 0 && rep.unexpected_in_store == 0 && rep.holder_mismatches == 0;
  return rep;
}

}  // namespace

ReconcileReport reconcile_production(const ProductionOptions& o, const redis::RedisUrl& redis_url, GateCampaign& entry,
                                     redis::ReplicaWaitCounts& replica_waits) {
  const redis::CampaignKeys& k = entry.keys;
  ReconcileReport rep;
  rep.campaign_id = entry.campaign.id;
  // Its own connections: nothing else waits while a reconcile runs.
  redis::RedisConn rconn(redis_url, redis_options(o, "-reconcile"));
  pg::Conn pconn(o.postgres_url, control_conn_options());
  grantlog::GrantLog glog(rconn);
  gate::MirrorScripts scripts;
  grantlog::CommitPolicy policy;
  policy.remove_acked = true;  // entries a writer never saw leave the log here
  policy.events = o.events.enabled;
  // replicas_acked > 0: what is re-driven (and each stock move settled) is first acknowledged
  // by replicas, as the writers wait before they insert (docs/production.md).
  const redis::ReplicaWait ack{o.replicas_acked, o.replica_wait_ms, &replica_waits};
  if (entry.sharded()) gate::settle_moves(rconn, scripts, entry, ack);  // moves cut half-way
  for (const redis::CampaignKeys& sk : entry.shard_keys) {  // every shard's stream
    std::string from = "-";
    for (std::size_t seen = 0; seen < kReconcileLogEntriesMax;) {
      std::vector<grantlog::LogEntry> page = glog.range(sk, from, kXrangePage);
      if (page.empty()) break;
      from = "(" + page.back().id;
      seen += page.size();
      const bool last_page = page.size() < kXrangePage;
      std::vector<grantlog::StreamBatch> batch{{sk, std::move(page), {}, {}}};
      glog.prepare(batch, /*dead_letter_malformed=*/false);  // malformed entries stay for the writers
      if (batch.empty()) {
        if (last_page) break;
        continue;
      }
      ack.require(rconn, sk.grants, "reconcile: the grant-log entries read");  // covers the XRANGE
      // Chunks of whole entries of about read_count_max grants each.
      grantlog::StreamBatch& all = batch.front();
      std::size_t next = 0;  // the next entry of the page
      std::size_t gi = 0;    // its first grant
      while (next < all.entries.size()) {
        grantlog::StreamBatch chunk{sk, {}, {}, {}};
        for (; next < all.entries.size() && (chunk.entries.empty() || chunk.grants.size() < o.writer.read_count_max);
             ++next) {
          chunk.entries.push_back(std::move(all.entries[next]));
          for (; gi < all.grants.size() && all.grant_entry[gi] == next; ++gi) {
            chunk.grants.push_back(std::move(all.grants[gi]));
            chunk.grant_entry.push_back(chunk.entries.size() - 1);
          }
        }
        std::vector<grantlog::StreamBatch> one{std::move(chunk)};
        grantlog::CommitOutcome w = read_once_more([&] { return grantlog::commit_entries(pconn, glog, one, policy); });
        rep.redriven += w.inserted;
        rep.log_pending += w.inserted + w.refused;  // not in the store before
      }
      if (last_page) break;
    }
  }
  if (entry.sharded()) return reconcile_sharded(entry, rconn, pconn, glog, std::move(rep));
  redis::Reply m = rconn.command_checked(redis::Args{"HGET"}.add(k.meta).add("n"), "HGET");
  long long counter = 0;
  redis::reply_int(m.raw(), &counter);
  // Free seqs (dropped dead letters' seqs, not issued again) hold no grant: not missing.
  redis::Reply fr = rconn.command_checked(redis::Args{"ZRANGE"}.add(k.free_seqs).add("0").add("-1"), "ZRANGE");
  std::vector<int64_t> free;
  for (std::size_t i = 0; i < fr.size(); ++i) {
    long long v = 0;
    if (redis::reply_int(fr.at(i), &v) && v >= 1 && v <= counter) free.push_back(v);
  }
  std::sort(free.begin(), free.end());
  rep.gate_issued = counter - static_cast<int64_t>(free.size());
  StringMap<int64_t> gate_holders = gate::scan_holders(rconn, k);
  rep.gate_holders = static_cast<int64_t>(gate_holders.size());
  rep.dead_lettered = glog.dead_letter_count(k);
  CampaignStats st = pgstore::stats(pconn, entry.campaign.id);
  rep.store_rows = st.rows;
  rep.store_distinct_users = st.distinct_users;
  rep.store_max_seq = st.max_seq;
  auto [missing, sample] =
      pgstore::missing_seqs(pconn, entry.campaign.id, counter, kMissingSeqsSampleMax + free.size());
  rep.missing_in_store = std::max<int64_t>(0, missing - static_cast<int64_t>(free.size()));
  for (int64_t seq : sample) {
    if (!std::binary_search(free.begin(), free.end(), seq) && rep.missing_seqs_sample.size() < kMissingSeqsSampleMax) {
      rep.missing_seqs_sample.push_back(seq);
    }
  }
  pg::Result extra = pconn.exec("SELECT count(*) FROM coupons WHERE campaign_id = $1 AND seq > $2",
                                pg::Params().add(entry.campaign.id).add(static_cast<int64_t>(counter)));
  rep.unexpected_in_store = extra.i64(0, 0);
  pgstore::Holdings h = pgstore::holdings(pconn, entry.campaign.id);
  for (const auto& [user, rows] : h.holders) {
    auto it = gate_holders.find(user);
    if (it == gate_holders.end() || it->second != rows) rep.holder_mismatches++;
    if (it != gate_holders.end()) gate_holders.erase(it);
  }
  rep.holder_mismatches += static_cast<int64_t>(gate_holders.size());  // in Redis, not in the store
  rep.consistent = rep.missing_in_store == 0 && rep.unexpected_in_store == 0 && rep.holder_mismatches == 0;
  return rep;
}

}  // namespace couponcore::detail
