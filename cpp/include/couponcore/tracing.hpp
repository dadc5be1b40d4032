// Trace records: what the gate and the writer note about their batches for OpenTelemetry spans
// (docs/tracing.md). The native side never talks to OpenTelemetry: when a trace sink is
// registered (Engine::enable_tracing), the gate's I/O thread notes each batch and the writer
// each commit in a bounded in-memory buffer; a Python thread takes the records and turns them
// into spans ("couponcore.gate.batch", "couponcore.writer.commit") with explicit start and end
// times and links to the callers' trace contexts. No sink: a null check per batch, no buffer.
// A full buffer drops the record (counted), it never blocks the thread that notes it.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

namespace couponcore {

enum class TraceKind : uint8_t {
  kGateBatch = 0,     // one gate decision call (production: one Lua call; embedded: one campaign's
                      // share of a group commit's decisions)
  kWriterCommit = 1,  // one store transaction of grants (production: a writer's commit; embedded:
                      // the group commit)
};

inline constexpr std::size_t kTraceLinksMax = 128;  // distinct traceparents kept per record

struct TraceRecord {
  TraceKind kind = TraceKind::kGateBatch;
  int64_t start_us = 0, end_us = 0;  // wall clock, microseconds since the Unix epoch
  std::vector<int64_t> campaign_ids;  // gate: one; writer: the campaigns of the commit
  int64_t items = 0;                  // gate: requests decided; writer: grants committed (rows)
  int64_t traced = 0;                 // items that carried a traceparent
  std::vector<std::string> traceparents;  // distinct sampled ones, at most kTraceLinksMax (the links)
};

struct TraceStats {
  uint64_t recorded = 0;  // records put in the buffer
  uint64_t dropped = 0;   // records dropped because the buffer was full
  uint64_t malformed_traceparents = 0;  // process-wide: malformed values ignored
};

// The bounded buffer between the native threads (put) and the Python span thread (take).
class TraceBuffer {
 public:
  explicit TraceBuffer(std::size_t capacity) : capacity_(capacity) {}
  // Never waits on a reader for long: the lock only guards a deque push/swap.
  void put(TraceRecord&& r);
  // Up to max records; waits up to timeout_ms for the first one. Empty after close().
  std::vector<TraceRecord> take(std::size_t max, int64_t timeout_ms);
  void close();   // wakes take(); put() drops from now on
  void reopen();  // after close(): put() keeps records again
  TraceStats stats() const;

 private:
  const std::size_t capacity_;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::deque<TraceRecord> records_;
  bool closed_ = false;
  uint64_t recorded_ = 0, dropped_ = 0;
};

// Where the gate and the writer look for a buffer: a null pointer when no sink is registered.
// An engine's pipeline holds one; so does a standalone worker (WorkerOptions::trace).
class TraceSlot {
 public:
  TraceBuffer* get() const noexcept { return current_.load(std::memory_order_acquire); }
  // Registers a buffer of `capacity` records (kept until the slot dies; enabling again reuses it).
  // Error(kInvalidArgument) unless 1 <= capacity <= limits::kTraceBufferRecordsMax.
  TraceBuffer& enable(std::size_t capacity);
  // Stops noting (the gate and writers see null) and wakes a waiting take().
  void disable() noexcept;
  // The buffer once enabled (also while disabled: what is left can still be taken), else null.
  TraceBuffer* owned() const noexcept { return owned_ptr_.load(std::memory_order_acquire); }
  // The owned buffer's take() (nothing when never enabled) and stats() (zeros then; the
  // process-wide malformed count either way).
  std::vector<TraceRecord> take(std::size_t max, int64_t timeout_ms);
  TraceStats stats() const;

 private:
  std::mutex mu_;
  std::unique_ptr<TraceBuffer> owned_;
  std::atomic<TraceBuffer*> owned_ptr_{nullptr};
  std::atomic<TraceBuffer*> current_{nullptr};
};

// Counts a (checked) traceparent and adds it to the record's links if it is sampled (flags bit
// 0), not there yet, and the record holds fewer than kTraceLinksMax.
void add_trace_link(TraceRecord& r, const std::string& traceparent);

}  // namespace couponcore
