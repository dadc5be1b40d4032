// The campaign mirror in Redis: see mirror.hpp.
#include "gate/mirror.hpp"

#include <hiredis/hiredis.h>

#include <algorithm>

#include "couponcore/error.hpp"
#include "couponcore/metrics.hpp"
#include "util/assert.hpp"
#include "log/grant_log.hpp"
#include "gate/shards.hpp"
#include "store/postgres/coupon_store.hpp"

namespace couponcore::gate {

namespace {
constexpr int64_t kHscanCount = 10'000;
constexpr std::size_t kRestorePairsPerCall = 1'000;
}  // namespace

void GateCampaign::rules_changed(CampaignState state, int64_t quantity) {
  std::lock_guard lock(fast_mu);
  campaign.state = state;
  campaign.spec.quantity = quantity;
  rules_version.fetch_add(1, std::memory_order_acq_rel);
  fast_until_ms.store(0, std::memory_order_release);  // decided by Redis again
}

void write_mirror(redis::RedisConn& conn, MirrorScripts& scripts, std::string_view prefix, const GateCampaign& e,
                  int64_t issued_if_new) {
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
  redis::check_reply(redis::eval(conn, scripts.mirror, {e.keys.meta}, a), "mirror campaign");
  grantlog::GrantLog(conn).register_campaign(prefix, e.keys);
}

void restore_mirror(redis::RedisConn& conn, MirrorScripts& scripts, pg::Conn& pg, std::string_view prefix,
                    GateCampaign& e) {
  using couponcore::pg::read_once_more;  // `pg` is the connection here
  if (e.sharded()) {
    restore_shard_mirrors(conn, scripts, pg, prefix, e);
    return;
  }
  if (std::optional<Campaign> fresh = read_once_more([&] { return pgstore::find_campaign(pg, e.campaign.id); })) {
    std::lock_guard lock(e.fast_mu);
    e.campaign.state = fresh->state;
    e.campaign.spec.quantity = fresh->spec.quantity;
  }
  pgstore::Holdings h = read_once_more([&] { return pgstore::holdings(pg, e.campaign.id); });
  for (std::size_t off = 0; off < h.holders.size(); off += kRestorePairsPerCall) {
    redis::Args a;
    for (std::size_t i = off; i < std::min(h.holders.size(), off + kRestorePairsPerCall); ++i) {
      a.add(h.holders[i].first).add(h.holders[i].second);
    }
    redis::check_reply(redis::eval(conn, scripts.holders, {e.keys.holders}, a), "restore holders");
  }
  write_mirror(conn, scripts, prefix, e, h.max_seq);
}

void apply_rules(redis::RedisConn& conn, MirrorScripts& scripts, pg::Conn& pg, std::string_view prefix, GateCampaign& e,
                 CampaignState state, int64_t quantity) {
  // A sharded campaign's quantity is fixed (the caller refuses a change): the state goes to
  // every shard, the quantity stays.
  for (const redis::CampaignKeys& k : e.shard_keys) {
    for (int attempt = 0;; ++attempt) {
      redis::Reply rep =
          redis::eval(conn, scripts.rules, {k.meta}, redis::Args{}.add(static_cast<int64_t>(state)).add(quantity));
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
