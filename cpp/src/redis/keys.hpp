// The Redis key layout of one deployment (key prefix P) and stream-id helpers.
//
// Every key of campaign N shares the hash tag {cN}, so one Lua call never crosses a cluster
// slot:
//   P{cN}:m        hash   campaign mirror: q quantity, l per-user limit, s starts_at_us,
//                         e ends_at_us (absent = open-ended), st state, n the seq counter,
//                         d corrections made by dead-letter drops
//   P{cN}:h        hash   holders: user_id -> coupons held
//   P{cN}:free     zset   free seqs (score = seq): seqs <= n given back by dead-letter drops,
//                         issued before n advances; coupons issued = n - ZCARD
//   P{cN}:g        stream the grant log (group "writers"): c s u o r t = campaign, seq, user,
//                         user_ordinal, request_id, issued_at_us
//   P{cN}:a:<gen>  hash   remembered answers "user|request" -> seq*8+status, one hash per
//                         generation of answer_ttl_s seconds (see gate/redis_gate.hpp)
//   P{cN}:dl       stream dead letters: the original fields plus id, reason, deliveries
//   P{cN}:why      hash   last failure reason per pending grant-log entry id
//   Pcampaigns     set    campaign ids with a grant log, for the writers
// User and request ids never reach a key name: they travel as script arguments only.
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
  CampaignKeys(std::string_view prefix, int64_t campaign_id);
  int64_t campaign_id = 0;
  std::string meta, holders, grants, dead_letters, reasons, free_seqs, answers_base;
  std::string answers(int64_t generation) const { return answers_base + std::to_string(generation); }
};

std::string campaigns_set_key(std::string_view prefix);

// Stream ids "ms-seq" as comparable pairs; false if malformed.
using StreamId = std::pair<uint64_t, uint64_t>;
bool parse_stream_id(std::string_view id, StreamId* out);

}  // namespace couponcore::redis
