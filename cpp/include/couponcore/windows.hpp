// Live windows (docs/windows.md): the production answer source, read by the aggregator
// (couponcore.windows in Python). The engines write it (windows=true, the default): one record
// per campaign per flush (~200 ms) to the Redis Stream <prefix>{c<N>}:answers.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace couponcore {

namespace windows {
class RedisAnswerReader;
}

// The answer recorder's counters (Engine::answer_counters()), since the engine opened.
struct AnswerRecorderCounters {
  uint64_t answers = 0;           // answers recorded
  uint64_t records = 0;           // records appended to the source (ticks included)
  uint64_t flush_failures = 0;    // appends that failed (kept, retried on the next flush)
  uint64_t records_dropped = 0;   // records given up: more than kPendingRecordsMax were waiting
  uint64_t answers_dropped = 0;   // answers in those records (in no window)
  int64_t clock_offset_us = 0;    // event clock minus this host's wall clock (production: the gate's Redis TIME)
};

struct AnswerRecord {
  std::string id;      // the stream id: the read position
  std::string record;  // the packed record (format: windows/answer_recorder.hpp, docs/windows.md)
};

// Not thread-safe: one per aggregator.
class AnswerStreamReader {
 public:
  AnswerStreamReader(const std::string& redis_url, const std::string& key_prefix);
  ~AnswerStreamReader();
  AnswerStreamReader(const AnswerStreamReader&) = delete;
  AnswerStreamReader& operator=(const AnswerStreamReader&) = delete;

  // The campaigns that have an answer stream, ascending.
  std::vector<int64_t> campaigns();
  // Up to `count` (>= 1) records after the stream id `after` ("" or "0": from the start).
  std::vector<AnswerRecord> read(int64_t campaign_id, const std::string& after, int64_t count);

 private:
  std::unique_ptr<windows::RedisAnswerReader> impl_;
};

}  // namespace couponcore
