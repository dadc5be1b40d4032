// The grant entry: the format of one record in a campaign's grant log (a Redis Stream), and
// its parser. The gate writes entries (gate/lua/gate.lua), the writer and reconcile read them.
//
// Format, version 2 (field "v" = "2"), one entry per gate batch whose grants carry trace context:
//   v 2   c <campaign_id>   t <issued_at_us>   g <lines>   p <traceparents>
// where g holds one line per grant, in seq order: "<seq> <user_ordinal> <user_id> <request_id>"
// (request_id may be empty; ids hold no space or newline: limits::is_valid_id), and p the
// grants' traceparents in line order, 55 characters each (the W3C version-00 form:
// docs/tracing.md; 55 spaces for a grant whose call had none). A traceparent the reader finds
// malformed, or a p too short for the lines, is dropped (the grants are kept: trace context
// never fails a grant).
// Version 1 ("v" = "1"): the same without p; the gate still writes it for a batch in which no
// grant carries a traceparent, so version 2 costs nothing where tracing is not used.
// Older entries carry no "v" and are read too: the same batch shape (c t g), and the first
// format, one grant per entry (c s u o r t = campaign, seq, user, user_ordinal, request_id,
// issued_at_us). An entry with a "v" this reader does not know is malformed (it goes to the
// dead letters, whole, and can be re-driven by a newer writer): a writer must be upgraded before
// the gates that write a newer version.
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

inline constexpr int kEntryVersion = 2;  // what the gate writes at most; what this reader knows at most

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
