// The Redis gate's view of a campaign, and its mirror in Redis.
//
// A campaign decided by the Redis gate lives in Redis as a mirror (keys in redis/keys.hpp: the
// meta hash with quantity, limit, window, state and the issued counter; the holders hash) next
// to its grant log. PostgreSQL is the system of record: a missing mirror (Redis lost it, or the
// campaign was created while Redis was down) is rebuilt from the store, holders first and the
// meta hash last (until it exists the gate script refuses with NOCAMPAIGN).
//
// Entry points:
//   GateCampaign                     the campaign, its keys, its sold-out fast path state
//   write_mirror / restore_mirror    create or refresh; rebuild from the store
//   apply_rules                      state and quantity as one script call (never below issued)
//   scan_holders                     the holders hash, read with HSCAN
#pragma once

#include <atomic>
#include <cstdint>
#include <mutex>
#include <optional>
#include <string_view>
#include <vector>

#include "couponcore/types.hpp"
#include "gate/campaign_gate.hpp"
#include "gate/lua_scripts.hpp"
#include "redis/keys.hpp"
#include "redis/redis.hpp"
#include "store/postgres/pg.hpp"
#include "store/postgres/pg_coupons.hpp"

namespace couponcore::gate {

// The campaign rules a rule change sets: the store's row, the mirror's meta hash.
using Rules = PgCouponStore::CampaignRules;

struct GateCampaign {
  GateCampaign(Campaign c, std::string_view prefix) : campaign(std::move(c)), keys(prefix, campaign.id) {
    if (campaign.spec.shards <= 1) shard_keys.push_back(keys);
    for (int s = 0; campaign.spec.shards > 1 && s < campaign.spec.shards; ++s) {
      shard_keys.emplace_back(prefix, campaign.id, s, campaign.spec.shards);
    }
  }
  // Fixed for life except state, spec.quantity and the spec's rate limits (the campaign
  // rules), which change under fast_mu; snapshot() reads them there.
  Campaign campaign;
  const redis::CampaignKeys keys;
  // Sharded campaigns (gate/shards.hpp): the keys of each shard; {keys} when not sharded. (A
  // sharded campaign's `keys` name no data: every use of them is for one shard.)
  std::vector<redis::CampaignKeys> shard_keys;
  bool sharded() const { return shard_keys.size() > 1; }
  // Every shard was found dry (the gate's I/O thread); a dead-letter drop, which gives a seq
  // back, clears it from another thread.
  std::atomic<int64_t> all_dry_until_ms{0};
  // The gate's I/O thread only.
  bool publish_queued = false;
  // The sold-out fast path answers while steady_ms() < fast_until_ms; holders is complete for
  // the (issued, quantity) it was read at. rules_version counts this process's rule changes, so
  // an arm that raced one is dropped.
  std::atomic<int64_t> fast_until_ms{0};
  std::atomic<uint64_t> rules_version{0};
  mutable std::mutex fast_mu;
  StringMap<uint32_t> holders;
  int64_t armed_issued = -1;    // with fast_mu
  int64_t armed_quantity = -1;  // with fast_mu
  int64_t armed_drops = -1;     // with fast_mu: the mirror's 'd' (dead-letter drops' corrections)

  Campaign snapshot() const {
    std::lock_guard lock(fast_mu);
    return campaign;
  }
  bool fast_path_live() const { return redis::steady_ms() < fast_until_ms.load(std::memory_order_acquire); }
  // This process changed the rules: take them, and let Redis decide again (fast path off).
  void rules_changed(const Rules& rules);
};

// The mirror scripts of one connection (a Script caches its sha; not shared across threads).
struct MirrorScripts {
  redis::Script mirror{lua::kMirror};
  redis::Script holders{lua::kHoldersMax};
  redis::Script rules{lua::kRules};
  redis::Script shard_mirror{lua::kShardMirror};  // sharded campaigns: gate/shards.hpp
  redis::Script shard_take{lua::kShardTake};
  redis::Script shard_give{lua::kShardGive};
  redis::Script shard_raise{lua::kShardRaise};
};

// Creates or refreshes the mirror hash and registers the campaign's grant log for the writers.
// `issued_if_new` starts the seq counter and `free_if_new` the free seqs (each <= the counter)
// when the mirror is new.
void write_mirror(redis::RedisConn& conn, MirrorScripts& scripts, std::string_view prefix, const GateCampaign& c,
                  int64_t issued_if_new, const std::vector<int64_t>& free_if_new = {});

// Rebuilds a missing mirror from the grant log, the dead letters and the store (pg, whose
// connection the caller owns): the counter at the highest seq any of them holds, the seqs below
// it that hold no grant anywhere free, the holders counting the grants still on their way (see
// mirror.cpp). The rules come from the store too: another process may have changed them.
void restore_mirror(redis::RedisConn& conn, MirrorScripts& scripts, pg::Conn& pg, std::string_view prefix,
                    GateCampaign& c);

// Applies the rules to the mirror (restoring it first if it is missing). kConflict if the
// quantity is below the coupons the gate has issued.
void apply_rules(redis::RedisConn& conn, MirrorScripts& scripts, pg::Conn& pg, std::string_view prefix, GateCampaign& c,
                 const Rules& rules);

// The rate-limit arguments of the mirror scripts: per user, per partner (over `shards` shards:
// each shard's share, rounded down), window ms.
void add_rate_args(redis::Args& a, int64_t per_user, int64_t per_partner, int64_t window_ms, int shards);

StringMap<int64_t> scan_holders(redis::RedisConn& conn, const redis::CampaignKeys& keys);

}  // namespace couponcore::gate
