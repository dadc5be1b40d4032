// The campaign mirror in Redis: see mirror.hpp.
#include "gate/mirror.hpp"

#include <hiredis/hiredis.h>

#include <algorithm>

#include "couponcore/error.hpp"
#include "couponcore/metrics.hpp"
#include "log/grant_entry.hpp"
#include "log/grant_log.hpp"
#include "gate/shards.hpp"
#include "store/postgres/coupon_store.hpp"
#include "util/assert.hpp"

namespace couponcore::gate {

namespace {
constexpr int64_t kHscanCount = 10'000;
constexpr std::size_t kRestorePairsPerCall = 1'000;
constexpr int64_t kRestoreStreamPage = 256;  // entries per XRANGE page while restoring
}  // namespace

void add_rate_args(redis::Args& a, int64_t per_user, int64_t per_partner, int64_t window_ms, int shards) {
  a.add(per_user).add(per_partner / std::max(1, shards)).add(window_ms);
}

namespace {
void take_rules(Campaign& c, const Campaign& fresh) {
  c.state = fresh.state;
  c.spec.quantity = fresh.spec.quantity;
  c.spec.rate_limit_per_user = fresh.spec.rate_limit_per_user;
  c.spec.rate_limit_per_partner = fresh.spec.rate_limit_per_partner;
  c.spec.rate_window_ms = fresh.spec.rate_window_ms;
}
}  // namespace

void GateCampaign::rules_changed(const Rules& r) {
  std::lock_guard lock(fast_mu);
  campaign.state = r.state;
  campaign.spec.quantity = r.quantity;
  campaign.spec.rate_limit_per_user = r.rate_limit_per_user;
  campaign.spec.rate_limit_per_partner = r.rate_limit_per_partner;
  campaign.spec.rate_window_ms = r.rate_window_ms;
  rules_version.fetch_add(1, std::memory_order_acq_rel);
  fast_until_ms.store(0, std::memory_order_release);  // decided by Redis again
}

void write_mirror(redis::RedisConn& conn, MirrorScripts& scripts, std::string_view prefix, const GateCampaign& e,
                  int64_t issued_if_new, const std::vector<int64_t>& free_if_new) {
  if (e.sharded()) {
    const int k = static_cast<int>(e.shard_keys.size());
    std::vector<SeqRanges> free(k);
    for (int i = 0; i < k; ++i) {
      auto [lo, hi] = initial_range(e.campaign.spec.quantity, k, i);
      free[i].emplace_back(lo, hi);
    }
    CC_ASSERT(issued_if_new == 0, "a sharded campaign's mirror is created fresh or restored by its shards");
    write_shard_mirrors(conn, scripts, prefix, e, free, std::vector<int64_t>(k, 0));
    return;
  }
  const Campaign c = e.snapshot();
  const CampaignSpec& s = c.spec;
  redis::Args a;
  a.add(s.quantity).add(int64_t{s.per_user_limit});
  a.add(s.starts_at_us ? std::to_string(*s.starts_at_us) : std::string());
  a.add(s.ends_at_us ? std::to_string(*s.ends_at_us) : std::string());
  a.add(static_cast<int64_t>(c.state)).add(issued_if_new);
  add_rate_args(a, s.rate_limit_per_user, s.rate_limit_per_partner, s.rate_window_ms, 1);
  for (int64_t seq : free_if_new) {
    CC_ASSERT(seq >= 1 && seq <= issued_if_new, "a free seq " + std::to_string(seq) + " above the counter " +
                                                   std::to_string(issued_if_new));
    a.add(seq);
  }
  redis::check_reply(redis::eval(conn, scripts.mirror, {e.keys.meta, e.keys.free_seqs}, a), "mirror campaign");
  grantlog::GrantLog(conn).register_campaign(prefix, e.keys);
}

namespace {

// The grants of a stream (the grant log or the dead letters), read whole in pages. Entries that
// do not parse (malformed, deleted) hold nothing this reader can count.
void read_stream_grants(redis::RedisConn& conn, const std::string& key, int64_t campaign_id, std::vector<Grant>* out) {
  std::string from = "-";
  for (;;) {
    redis::Reply r = conn.command_checked(
        redis::Args{"XRANGE"}.add(key).add(from).add("+").add("COUNT").add(kRestoreStreamPage), "XRANGE");
    std::vector<grantlog::LogEntry> page = grantlog::parse_entries(r.raw());
    for (const grantlog::LogEntry& entry : page) {
      std::vector<Grant> gs;
      if (grantlog::parse_grants(entry, campaign_id, &gs).empty()) {
        for (Grant& g : gs) out->push_back(std::move(g));
      }
    }
    if (static_cast<int64_t>(page.size()) < kRestoreStreamPage) return;
    from = "(" + page.back().id;
  }
}

}  // namespace

// Rebuilds the mirror from everything that holds a grant: the grant log, the dead letters and the
// store, read in that order. While the mirror is missing, grants move only from the log to the
// store (a writer: acknowledged after its commit) or from the log to the dead letters (atomic):
// read in this order, no grant is missed. (Re-drive and drop refuse while there is no mirror.)
// The counter starts at the highest seq of the three; every seq below it that holds no grant
// anywhere is free (a dropped dead letter's, or one lost with Redis's data); holders count the
// rows plus the grants of the log and the dead letters that have no row yet.
void restore_mirror(redis::RedisConn& conn, MirrorScripts& scripts, pg::Conn& pg, std::string_view prefix,
                    GateCampaign& e) {
  using couponcore::pg::read_once_more;  // `pg` is the connection here
  if (e.sharded()) {
    restore_shard_mirrors(conn, scripts, pg, prefix, e);
    return;
  }
  if (std::optional<Campaign> fresh = read_once_more([&] { return pgstore::find_campaign(pg, e.campaign.id); })) {
    std::lock_guard lock(e.fast_mu);
    take_rules(e.campaign, *fresh);
  }
  const int64_t cid = e.campaign.id;
  std::vector<Grant> in_flight;  // in the log or the dead letters
  read_stream_grants(conn, e.keys.grants, cid, &in_flight);
  read_stream_grants(conn, e.keys.dead_letters, cid, &in_flight);
  std::vector<int64_t> seqs;
  seqs.reserve(in_flight.size());
  for (const Grant& g : in_flight) seqs.push_back(g.seq);
  std::sort(seqs.begin(), seqs.end());
  seqs.erase(std::unique(seqs.begin(), seqs.end()), seqs.end());
  pgstore::Holdings h = read_once_more([&] { return pgstore::holdings(pg, cid); });
  std::vector<int64_t> with_row = read_once_more([&] { return pgstore::seqs_with_row(pg, cid, seqs); });
  std::sort(with_row.begin(), with_row.end());
  int64_t n = h.max_seq;
  if (!seqs.empty()) n = std::max(n, seqs.back());
  // Holders: the store's counts plus the grants on their way there.
  StringMap<int64_t> held;
  for (auto& [user, count] : h.holders) held[user] += count;
  for (const Grant& g : in_flight) {
    if (!std::binary_search(with_row.begin(), with_row.end(), int64_t{g.seq})) held[g.user_id]++;
  }
  std::vector<int64_t> free;
  for (int64_t seq : read_once_more([&] { return pgstore::seqs_without_row(pg, cid, n); })) {
    if (!std::binary_search(seqs.begin(), seqs.end(), seq)) free.push_back(seq);
  }
  std::vector<std::pair<std::string, int64_t>> pairs(held.begin(), held.end());
  for (std::size_t off = 0; off < pairs.size(); off += kRestorePairsPerCall) {
    redis::Args a;
    for (std::size_t i = off; i < std::min(pairs.size(), off + kRestorePairsPerCall); ++i) {
      a.add(pairs[i].first).add(pairs[i].second);
    }
    redis::check_reply(redis::eval(conn, scripts.holders, {e.keys.holders}, a), "restore holders");
  }
  if (!free.empty()) {
    log(LogLevel::kWarning, "gate", "campaign " + std::to_string(cid) + ": the restored mirror's counter is " +
                                        std::to_string(n) + " with " + std::to_string(free.size()) +
                                        " free seq(s) below it that hold no grant anywhere");
  }
  write_mirror(conn, scripts, prefix, e, n, free);
}

void apply_rules(redis::RedisConn& conn, MirrorScripts& scripts, pg::Conn& pg, std::string_view prefix, GateCampaign& e,
                 const Rules& rules) {
  const CampaignState state = rules.state;
  const int64_t quantity = rules.quantity;
  redis::Args args = redis::Args{}.add(static_cast<int64_t>(state)).add(quantity);
  add_rate_args(args, rules.rate_limit_per_user, rules.rate_limit_per_partner, rules.rate_window_ms,
                static_cast<int>(e.shard_keys.size()));
  // A sharded campaign's quantity only rises (the caller refuses a lower one): the new seqs go
  // to shard 0 first (shard_raise.lua, once), then the state, quantity and rate limits to every
  // shard.
  for (std::size_t i = 0; i < e.shard_keys.size(); ++i) {
    const redis::CampaignKeys& k = e.shard_keys[i];
    for (int attempt = 0;; ++attempt) {
      redis::Reply rep;
      if (i == 0 && e.sharded()) {
        rep = redis::eval(conn, scripts.shard_raise, {k.meta}, redis::Args{}.add(quantity));
      }
      if (!rep.is_error()) {
        rep = redis::eval(conn, scripts.rules, {k.meta, k.rate}, args);
      }
      if (rep.is_error() && rep.str().substr(0, 10) == "NOCAMPAIGN" && attempt == 0) {
        restore_mirror(conn, scripts, pg, prefix, e);
        continue;
      }
      if (rep.is_error() && rep.str().substr(0, 11) == "BELOWISSUED") {
        throw_conflict("campaign " + std::to_string(e.campaign.id) + ": quantity " + std::to_string(quantity) +
                       " is below the " + std::string(rep.str().substr(12)) + " coupons already issued");
      }
      redis::check_reply(rep, "campaign rules");
      break;
    }
  }
}

StringMap<int64_t> scan_holders(redis::RedisConn& conn, const redis::CampaignKeys& k) {
  StringMap<int64_t> out;
  std::string cursor = "0";
  do {
    redis::Reply r =
        conn.command_checked(redis::Args{"HSCAN"}.add(k.holders).add(cursor).add("COUNT").add(kHscanCount), "HSCAN");
    if (r.size() != 2) throw_unavailable("redis: odd HSCAN reply");
    cursor = std::string(redis::reply_str(r.at(0)));
    const redisReply* kv = r.at(1);
    for (std::size_t i = 0; redis::reply_is_array(kv) && i + 1 < kv->elements; i += 2) {
      long long n = 0;
      redis::reply_int(kv->element[i + 1], &n);
      out[std::string(redis::reply_str(kv->element[i]))] = n;
    }
  } while (cursor != "0");
  return out;
}

}  // namespace couponcore::gate
