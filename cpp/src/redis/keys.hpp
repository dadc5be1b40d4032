// The Redis key layout of one deployment (key prefix P) and stream-id helpers.
//
// Every key of campaign N shares the hash tag {cN}, so one Lua call never crosses a cluster
// slot:
//   P{cN}:m        hash   campaign mirror: q quantity, l per-user limit, s starts_at_us,
//                         e ends_at_us (absent = open-ended), st state, n the seq counter,
//                         d corrections made by dead-letter drops, ru rp rw the rate limits
//                         (per user, per partner = the campaign, window ms; 0 = none)
//   P{cN}:h        hash   holders: user_id -> coupons held
//   P{cN}:free     zset   free seqs (score = seq): seqs <= n given back by dead-letter drops,
//                         issued before n advances; coupons issued = n - ZCARD
//   P{cN}:g        stream the grant log (group "writers"): c s u o r t = campaign, seq, user,
//                         user_ordinal, request_id, issued_at_us
//   P{cN}:a:<gen>  hash   remembered answers "user|request" -> seq*8+status, one hash per
//                         generation of answer_ttl_s seconds (see gate/redis_gate.hpp)
//   P{cN}:r        hash   rate-limit counters of the current window (gate/lua/rate.lua): *w the
//                         window, '*' the campaign's count, user_id -> the user's; expires
//                         at the window's end
//   P{cN}:dl       stream dead letters: the original fields plus id, reason, deliveries
//   P{cN}:why      hash   last failure reason per pending grant-log entry id
//   Pcampaigns     set    the grant-log streams, for the writers: a stream id per member (the
//                         campaign id; for a shard, campaign_id + shard * 2^32 + K * 2^40)
//   Pwriters       hash   writer consumer -> last heartbeat, ms on the Redis clock (writer/liveness.hpp)
//   P{addr}:<ms>   hash   the HTTP per-client-address counts of the current window of <ms> ms
//                         (redis/address_limit.hpp): *w the window, a:<address> -> requests;
//                         expires at the window's end
// A campaign of K > 1 shards (CampaignSpec::shards, gate/shards.hpp) has the keys above once per
// shard s, under the tag {cN.s<s>.<j>}, j the first number >= 0 that puts the tag's CRC16 slot
// in the s-th of K equal bands of the 16,384 slots: on a cluster whose masters serve equal slot
// ranges (what redis-cli --cluster create makes), K shards land on K different masters when
// there are K masters, and spread evenly otherwise. Each shard has its own stream. Its meta
// hashes also hold: f free seqs ("lo-hi,lo-hi,...", sorted), r how many, k K, i the shard; and
//   P{tag}:x       hash   stock moves taken from this shard, not yet settled: id -> "to ranges"
//   P{tag}:rx      set    ids of stock moves this shard received (each is added once)
// User and request ids and client addresses never reach a key name: they travel as script
// arguments only.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <utility>

namespace couponcore::redis {

inline constexpr std::size_t kKeyPrefixBytesMax = 64;
inline constexpr const char* kWriterGroup = "writers";

// Throws kInvalidArgument unless 1..64 bytes of [A-Za-z0-9:_.-] (no braces: no hash tags).
void check_key_prefix(std::string_view prefix);

struct CampaignKeys {
  CampaignKeys() = default;
  CampaignKeys(std::string_view prefix, int64_t campaign_id, int shard = 0, int shards = 1);
  // The keys of a member of Pcampaigns (see stream_id); false if it is not one.
  static bool from_stream_id(std::string_view prefix, int64_t stream_id, CampaignKeys* out);
  int64_t campaign_id = 0;
  int shard = 0;
  int64_t stream_id = 0;  // this stream's member of Pcampaigns (see the file top)
  std::string meta, holders, grants, dead_letters, reasons, free_seqs, answers_base, transfers, received, rate;
  std::string answers(int64_t generation) const { return answers_base + std::to_string(generation); }
};

std::string campaigns_set_key(std::string_view prefix);
// The keys of a member of Pcampaigns (CampaignKeys::from_stream_id; a plain campaign's keys if
// it is not a shard's stream id).
CampaignKeys keys_of_stream(std::string_view prefix, int64_t stream_id);

// The shard of a user in a campaign of `shards` shards: FNV-1a (64 bits) of the user id, modulo
// shards. Stable across processes, versions and platforms (it decides where holders live).
int shard_of_user(std::string_view user_id, int shards);

// Stream ids "ms-seq" as comparable pairs; false if malformed.
using StreamId = std::pair<uint64_t, uint64_t>;
bool parse_stream_id(std::string_view id, StreamId* out);

}  // namespace couponcore::redis
