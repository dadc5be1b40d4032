// The trace records' buffer: see couponcore/tracing.hpp.
#include <algorithm>
#include <chrono>

#include "couponcore/error.hpp"
#include "couponcore/limits.hpp"
#include "couponcore/tracing.hpp"
#include "util/traceparent.hpp"

namespace couponcore {

void TraceBuffer::put(TraceRecord&& r) {
  {
    std::lock_guard lock(mu_);
    if (closed_ || records_.size() >= capacity_) {
      dropped_++;
      return;
    }
    records_.push_back(std::move(r));
    recorded_++;
  }
  cv_.notify_one();
}

std::vector<TraceRecord> TraceBuffer::take(std::size_t max, int64_t timeout_ms) {
  std::vector<TraceRecord> out;
  std::unique_lock lock(mu_);
  cv_.wait_for(lock, std::chrono::milliseconds(std::max<int64_t>(0, timeout_ms)),
               [&] { return closed_ || !records_.empty(); });
  const std::size_t n = std::min(max, records_.size());
  out.reserve(n);
  for (std::size_t i = 0; i < n; ++i) {
    out.push_back(std::move(records_.front()));
    records_.pop_front();
  }
  return out;
}

void TraceBuffer::close() {
  {
    std::lock_guard lock(mu_);
    closed_ = true;
  }
  cv_.notify_all();
}

void TraceBuffer::reopen() {
  std::lock_guard lock(mu_);
  closed_ = false;
}

TraceStats TraceBuffer::stats() const {
  std::lock_guard lock(mu_);
  return TraceStats{recorded_, dropped_, trace::malformed_traceparents()};
}

TraceBuffer& TraceSlot::enable(std::size_t capacity) {
  if (capacity == 0 || capacity > limits::kTraceBufferRecordsMax) {
    throw_invalid("the trace buffer holds 1.." + std::to_string(limits::kTraceBufferRecordsMax) + " records");
  }
  std::lock_guard lock(mu_);
  if (!owned_) {
    owned_ = std::make_unique<TraceBuffer>(std::max<std::size_t>(1, capacity));
    owned_ptr_.store(owned_.get(), std::memory_order_release);
  }
  owned_->reopen();
  current_.store(owned_.get(), std::memory_order_release);
  return *owned_;
}

void TraceSlot::disable() noexcept {
  current_.store(nullptr, std::memory_order_release);
  std::lock_guard lock(mu_);
  if (owned_) owned_->close();
}

std::vector<TraceRecord> TraceSlot::take(std::size_t max, int64_t timeout_ms) {
  TraceBuffer* b = owned();
  if (!b) return {};
  return b->take(max, timeout_ms);
}

TraceStats TraceSlot::stats() const {
  TraceBuffer* b = owned();
  TraceStats s = b ? b->stats() : TraceStats{};
  s.malformed_traceparents = trace::malformed_traceparents();
  return s;
}

void add_trace_link(TraceRecord& r, const std::string& traceparent) {
  if (traceparent.empty()) return;
  r.traced++;
  // Links only to sampled callers (trace-flags bit 0): an unsampled trace records no span to
  // link to. A checked traceparent ends with its two hex flag digits.
  const char last = traceparent.back();
  const int low = last <= '9' ? last - '0' : last - 'a' + 10;
  if ((low & 1) == 0) return;
  if (r.traceparents.size() >= kTraceLinksMax) return;
  if (std::find(r.traceparents.begin(), r.traceparents.end(), traceparent) != r.traceparents.end()) return;
  r.traceparents.push_back(traceparent);
}

}  // namespace couponcore
