// Answer records for the live windows (docs/windows.md): every issue answer the engine gives is
// recorded cheaply on the answering thread and flushed, packed, to a durable source.
//
//   record()   on the answering thread (gate I/O thread, committer, or a caller on the sold-out
//              fast path): one short critical section per SUBMISSION (not per answer) on one of
//              kStripes mutexes chosen by thread; adds the submission's answers to the
//              (campaign, second) partial: counts per status number, a log-bucketed latency
//              histogram (submit -> answer), the largest latency.
//   flusher    a small thread, every flush_ms (~200 ms): takes every partial, packs ONE record
//              per campaign (all its seconds) and appends the records to the sink in one go
//              (production: XADD to <prefix>{c<N>}:answers, pipelined; embedded: one INSERT
//              transaction into answer_log). A campaign that answered within tick_s seconds also
//              gets an empty record (a tick) each flush, so the watermark of an idle campaign
//              moves on and its last windows become final. A failed append keeps the records
//              and retries on the next flush (at most kPendingRecordsMax kept; older ones are
//              dropped and counted).
//
// Record format, version 1 (text, space separated):
//   "1 <flush_ms> <recorder>.<n>[ <second>/<status>=<n>[,<status>=<n>...]/<bucket>=<n>[,...]/<max_latency_us>]..."
// <flush_ms> is the flusher's wall clock (ms since the epoch), >= every answer time inside;
// <recorder> is this recorder's random id (16 hex digits) and <n> counts its records from 1: a
// record appended again after a failed append (a pipeline cut mid-way may have stored part of
// it) has the same id, so the aggregator skips the copies it already folded in;
// <second> is the answers' wall-clock second; statuses are IssueStatus numbers (so a status added
// later is carried without a format change); latency bucket b = 0 for < 1 us, else
// 1 + floor(4 * log2(latency_us)) (a quarter octave, ~19% wide; its upper bound 2^(b/4) us).
#pragma once

#include <array>
#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <unordered_map>
#include <utility>
#include <vector>

#include "couponcore/types.hpp"
#include "couponcore/windows.hpp"

namespace couponcore::windows {

inline constexpr int kStatusSlots = 8;  // IssueStatus numbers 0..7 (5 = RATE_LIMITED when it lands)
inline constexpr int kLatencyBuckets = 128;  // bucket 127 holds everything from 2^31.5 us (~50 min) up
inline constexpr int kRecordVersion = 1;

// Where records go. append() either stores every record (in order) or throws.
class AnswerSink {
 public:
  virtual ~AnswerSink() = default;
  virtual void append(const std::vector<std::pair<int64_t, std::string>>& records) = 0;
};

struct RecorderOptions {
  int64_t flush_ms = 200;  // 10..10000
  int64_t tick_s = 5;      // empty records for this long after a campaign's last answer
};

using RecorderCounters = AnswerRecorderCounters;  // couponcore/windows.hpp

int latency_bucket(int64_t latency_us) noexcept;

class AnswerRecorder;
// The recorder's event clock follows a server's clock (production: the gate reply's Redis TIME).
void set_event_clock(AnswerRecorder* recorder, int64_t server_now_us);

class AnswerRecorder {
 public:
  static constexpr std::size_t kPendingRecordsMax = 10'000;
  static constexpr int kStripes = 16;

  AnswerRecorder(std::unique_ptr<AnswerSink> sink, RecorderOptions options);
  ~AnswerRecorder();  // stop()
  AnswerRecorder(const AnswerRecorder&) = delete;
  AnswerRecorder& operator=(const AnswerRecorder&) = delete;

  void record(int64_t campaign_id, const std::vector<IssueResult>& results, int64_t latency_us);
  // The event clock is this host's wall clock plus an offset: a production gate sets it from
  // the Redis TIME in each gate reply, so engines on different hosts put an answer in the same
  // second (and their flush times, the watermarks, agree). 0 (the wall clock) until set.
  void set_clock_offset_us(int64_t offset_us) noexcept { clock_offset_us_.store(offset_us, std::memory_order_relaxed); }
  int64_t event_now_us() const noexcept;
  // Packs and appends what was recorded so far (the flusher does this every flush_ms); throws
  // what the sink threw (the records stay pending).
  void flush();
  // Flushes once more and stops the flusher. Idempotent.
  void stop();
  RecorderCounters counters() const;

 private:
  struct Second {
    std::array<uint64_t, kStatusSlots> by_status{};
    std::array<uint64_t, kLatencyBuckets> hist{};
    int64_t max_latency_us = 0;
  };
  using Partials = std::unordered_map<int64_t, std::map<int64_t, Second>>;  // campaign -> second -> partial
  struct alignas(64) Stripe {
    mutable std::mutex mu;
    Partials partials;
    uint64_t answers = 0;
    // The partial the stripe's last record went to (elements of both maps stay where they are
    // until take() swaps the maps out, which clears this).
    int64_t last_campaign = -1, last_second = -1;
    Second* last = nullptr;
  };

  struct PendingRecord {
    int64_t campaign;
    std::string record;
    uint64_t answers;
  };

  void run();
  std::vector<PendingRecord> take(int64_t now_ms);

  std::unique_ptr<AnswerSink> sink_;
  const RecorderOptions options_;
  std::array<Stripe, kStripes> stripes_;

  mutable std::mutex flush_mu_;  // one flush at a time; guards what follows
  std::deque<PendingRecord> pending_;
  const std::string recorder_id_;  // 16 hex digits, random per recorder
  uint64_t records_made_ = 0;
  std::unordered_map<int64_t, int64_t> last_active_ms_;  // campaign -> flush time it last had answers
  RecorderCounters counters_;
  std::atomic<int64_t> clock_offset_us_{0};

  std::mutex stop_mu_;
  std::condition_variable stop_cv_;
  bool stopping_ = false;
  std::thread thread_;
};

}  // namespace couponcore::windows
