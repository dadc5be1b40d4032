// The grant entry: the format of one record in a campaign's grant log (a Redis Stream), and
// its parser. The gate writes entries (gate/lua/gate.lua), the writer and reconcile read them.
//
// Format, version 3 (field "v" = "3"), one entry per gate batch whose grants carry trace context:
//   v 3   c <campaign_id>   t <issued_at_us>   g <lines>   b <traceparents>
// where g holds one line per grant, in seq order: "<seq> <user_ordinal> <user_id> <request_id>"
// (request_id may be empty; ids hold no space or newline: limits::is_valid_id), and b the
// grants' traceparents in line order, each in its 25-byte binary form (trace-id, parent-id,
// flags: util/traceparent.hpp; 25 zero bytes for a grant whose call had none). A traceparent the
// reader finds malformed, or a b too short for the lines, is dropped (the grants are kept: trace
// context never fails a grant).
// Version 2 ("v" = "2"): the same with p instead of b, the grants' traceparents as text, 55
// characters each (the W3C version-00 form; 55 spaces for none). Gates no longer write it; a
// re-driven dead letter's grant is written as version 2 (dead_letters.cpp), and it is read.
// Version 1 ("v" = "1"): neither p nor b; the gate still writes it for a batch in which no grant
// carries a traceparent, so trace context costs nothing where tracing is not used.
// Older entries carry no "v" and are read too: the same batch shape (c t g), and the first
// format, one grant per entry (c s u o r t = campaign, seq, user, user_ordinal, request_id,
// issued_at_us; a dead letter's record of one grant has this shape, plus p when it was traced).
// An entry with a "v" this reader does not know is malformed (it goes to the dead letters, whole,
// and can be re-driven by a newer writer): a writer must be upgraded before the gates that write
// a newer version.
//
// Entry points:
//   parse_entries(reply)              entries of an XRANGE / XREADGROUP / XAUTOCLAIM reply
//   parse_grants(entry, campaign, out) an entry's grants, checked field by field
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "couponcore/types.hpp"

struct redisReply;

namespace couponcore::grantlog {

inline constexpr int kEntryVersion = 3;  // what the gate writes at most; what this reader knows at most

// One grant-log entry as read from a stream.
struct LogEntry {
  std::string id;
  std::vector<std::pair<std::string, std::string>> fields;
  int64_t deliveries = 1;
  bool deleted = false;  // XAUTOCLAIM of an entry deleted meanwhile (Redis 6.2 reports nil)
};

// Entries of an XRANGE / XREADGROUP / XAUTOCLAIM entries array.
std::vector<LogEntry> parse_entries(const redisReply* entries);

// A whole decimal int64 field of an entry (no sign games, no trailing bytes); false otherwise.
bool parse_i64(std::string_view s, int64_t* v);

// Appends the grants of an entry of campaign_id's stream to *out. Returns "" or why the entry is
// malformed (then nothing is appended).
std::string parse_grants(const LogEntry& entry, int64_t campaign_id, std::vector<Grant>* out);

}  // namespace couponcore::grantlog
