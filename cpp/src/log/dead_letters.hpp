// Dead letters as records an operator can list, re-drive and drop (docs/dead-letters.md).
//
// A campaign's dead-letter stream P{cN}:dl holds one record per grant the store refused (its
// fields c s u o r t, and rd if it had been re-driven before) or per malformed entry (its own
// fields), each with id (the grant-log entry), reason and deliveries. Records are immutable: the
// operations here only append to the log and delete records, each in one Lua call that first
// checks the record is still there, so two operators racing on one record do it once.
//
// Entry points:
//   dead_letter_from(campaign, record)      a record as a DeadLetter
//   read_dead_letters / find_dead_letter    XRANGE of one campaign's stream
//   redrive_entry_fields(d)                 the grant-log entry a re-drive appends
//   redrive / drop                          the atomic steps (scripts log/lua/redrive.lua,
//                                           gate/lua/drop.lua)
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "couponcore/types.hpp"
#include "log/grant_entry.hpp"
#include "redis/keys.hpp"
#include "redis/redis.hpp"

namespace couponcore::grantlog {

DeadLetter dead_letter_from(int64_t campaign_id, const LogEntry& record);

// At most `count` records after `after` (exclusive; "" from the start), by id.
std::vector<DeadLetter> read_dead_letters(redis::RedisConn& conn, const redis::CampaignKeys& keys,
                                          const std::string& after, std::size_t count);
std::optional<DeadLetter> find_dead_letter(redis::RedisConn& conn, const redis::CampaignKeys& keys,
                                           const std::string& id);

// A one-grant record: an entry with that grant (its seq, user, ordinal, request, time), version 2
// with p when the record holds the grant's traceparent (p), else version 1; a malformed one: its
// own fields. Either way with rd = redrives + 1.
std::vector<std::pair<std::string, std::string>> redrive_entry_fields(const DeadLetter& d);

enum class MoveOutcome { kDone, kGone, kNoMirror };

// Appends the entry and deletes the record in one step; *entry_id: the new entry's id.
MoveOutcome redrive(redis::RedisConn& conn, const redis::CampaignKeys& keys, const DeadLetter& d,
                    std::string* entry_id);

// Deletes the record and gives back what the caller found free in the store: the seq (to the
// free seqs) and the user's slot (the holder count, if this grant is the user's latest). `shard`:
// keys are a shard of a sharded campaign, the one whose dead letters hold the record (it granted
// the seq, and the user belongs to it): the seq goes back to that shard's free intervals.
struct DropCorrection {
  bool free_seq = false;
  bool lower_holder = false;
  bool seq_freed = false;       // what the script did
  bool holder_lowered = false;
};
MoveOutcome drop(redis::RedisConn& conn, const redis::CampaignKeys& keys, const DeadLetter& d, DropCorrection* c,
                 bool shard = false);

}  // namespace couponcore::grantlog
