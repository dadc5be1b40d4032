// Sharded campaigns: one campaign's stock over K hash tags (CampaignSpec::shards; on Redis
// Cluster, up to K masters). See docs/production.md "Sharded campaigns".
//
//   routing       a user belongs to shard redis::shard_of_user(user, K): their holder count and
//                 remembered answers live there only, so the per-user limit stays exact
//   seqs          each shard owns disjoint intervals of 1..quantity (meta field f); at creation
//                 quantity is split in K ranges; gate_shard.lua issues the lowest free seq
//   dry shard     gate_shard.lua answers DRY (never remembered); the gate moves stock to the
//                 shard from every other shard (move_into), asks again, and answers SOLD_OUT
//                 only when every shard is dry with no move in flight (all_dry)
//   a move        two scripts on two masters, never one seq in two shards:
//                   1. shard_take.lua on the donor: takes the upper half of its free seqs and
//                      records them under a unique move id in the donor's transfers hash
//                   2. shard_give.lua on the recipient: adds them, once (received set of ids)
//                   3. HDEL of the record on the donor
//                 A crash between 1 and 3 leaves the record: settle_moves (before any SOLD_OUT,
//                 and in reconcile) gives it to its recipient (exactly once, by the id) and
//                 deletes it. Between 1 and 2 the seqs are in the record only.
//   durable moves with replicas_acked > 0, a WAIT on the donor's master after 1 (a promoted
//                 donor without the record would still list the seqs as free while the
//                 recipient gets them: issued twice) and on the recipient's after 2 (a
//                 promoted recipient without the give, with the record gone, would lose the
//                 stock). Too few replicas: kUnavailable and the record stays, so
//                 settle_moves (which WAITs the same way, after reading the records) ends the
//                 move; a lost HDEL only makes settle_moves meet the id again (given once).
//   raise         set_quantity only rises: shard_raise.lua adds the new seqs (old q + 1 .. new)
//                 to shard 0's free intervals, once (shard 0's q is the watermark); moves
//                 spread them when other shards run dry
//   lost shard    a shard whose mirror is gone is rebuilt from the store with its users'
//                 holder counts and NO free seqs (they cannot be told apart from grants lost
//                 with it): nothing is issued twice; that stock is not sold (see the docs).
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "gate/lua_scripts.hpp"
#include "gate/mirror.hpp"
#include "redis/redis.hpp"
#include "redis/replica_wait.hpp"
#include "store/postgres/pg.hpp"

namespace couponcore::gate {

using SeqRanges = std::vector<std::pair<int64_t, int64_t>>;  // [lo, hi] intervals

SeqRanges parse_ranges(std::string_view s);
std::string format_ranges(const SeqRanges& r);
int64_t count_ranges(const SeqRanges& r);

// Shard s's initial seqs: quantity split in K ranges as evenly as possible.
std::pair<int64_t, int64_t> initial_range(int64_t quantity, int shards, int shard);

// Creates the mirrors of every shard that has none (free seqs per `free_if_new`, one entry per
// shard) and refreshes the rules of the others; registers every shard's stream.
void write_shard_mirrors(redis::RedisConn& conn, MirrorScripts& scripts, std::string_view prefix, const GateCampaign& c,
                         const std::vector<SeqRanges>& free_if_new, const std::vector<int64_t>& issued_if_new);

// Rebuilds the missing shard mirrors from the store (see "lost shard" above); a campaign none
// of whose shards is mirrored and with no row (created while Redis was down) starts fresh.
void restore_shard_mirrors(redis::RedisConn& conn, MirrorScripts& scripts, pg::Conn& pg, std::string_view prefix,
                           GateCampaign& c);

// Moves half of every other shard's free seqs into `shard`; returns how many arrived. With
// ack on, each step is acknowledged by replicas ("durable moves"), else kUnavailable.
int64_t move_into(redis::RedisConn& conn, MirrorScripts& scripts, const GateCampaign& c, int shard,
                  const std::string& move_id_base, uint64_t* move_counter, const redis::ReplicaWait& ack);

// Gives every recorded but unsettled move to its recipient (exactly once) and deletes the
// record; returns the moves settled. With ack on, as move_into.
int64_t settle_moves(redis::RedisConn& conn, MirrorScripts& scripts, const GateCampaign& c, const redis::ReplicaWait& ack);

// True if every shard is dry with no move in flight, read twice (the moves received must not
// change between the reads).
bool all_dry(redis::RedisConn& conn, const GateCampaign& c);

// The seqs no shard has issued: every shard's free seqs and those of moves in flight, merged.
SeqRanges unissued(redis::RedisConn& conn, const GateCampaign& c, int64_t* issued_sum);

}  // namespace couponcore::gate
