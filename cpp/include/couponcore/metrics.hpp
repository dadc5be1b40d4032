// Native metrics: lock-free histograms the engines record into, and a log sink with a rate
// limit. Rendering (Prometheus text, prometheus_client) happens in the Python layer from
// snapshots, so the hot path only does a few relaxed atomic adds.
#pragma once

#include <array>
#include <atomic>
#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

namespace couponcore {

// A fixed-bucket histogram (Prometheus semantics: bucket i counts values <= bounds[i]).
class Histogram {
 public:
  static constexpr std::size_t kBucketsMax = 24;
  explicit Histogram(std::vector<double> upper_bounds);

  void observe(double value, uint64_t count = 1) noexcept;

  struct Snapshot {
    std::vector<double> upper_bounds;
    std::vector<uint64_t> cumulative_counts;  // one per bound, then +Inf
    double sum = 0;
    uint64_t count = 0;
  };
  Snapshot snapshot() const;

 private:
  std::vector<double> bounds_;
  std::array<std::atomic<uint64_t>, kBucketsMax + 1> buckets_{};
  std::atomic<uint64_t> sum_micros_{0};  // sum kept in millionths to stay an integer
  std::atomic<uint64_t> count_{0};
};

// Histograms every engine keeps (the counters are EngineCounters, engine.hpp).
struct EngineHistograms {
  // From submit to answer, per request.
  Histogram issue_latency_seconds{{0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
                                   0.1, 0.25, 0.5, 1, 2.5, 5}};
  // Requests per decision batch.
  Histogram batch_requests{{1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096, 16384, 65536}};
  // Grants per durable write (group commit, or writer batch in production).
  Histogram commit_grants{{1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096, 16384, 65536}};
};

enum class LogLevel { kDebug = 10, kInfo = 20, kWarning = 30, kError = 40 };
using LogSink = std::function<void(LogLevel level, std::string_view component, std::string_view message)>;

// Installs the process-wide sink (nullptr: messages go to stderr). Thread-safe.
void set_log_sink(LogSink sink);
// Never call log() while holding a lock that a thread holding the Python GIL might wait for:
// the Python sink takes the GIL. Logs through the sink, at most kLogBurst messages per component and second; the number of
// messages dropped by the limit is reported with the next one that passes.
void log(LogLevel level, std::string_view component, std::string message);
inline constexpr int kLogBurst = 10;

}  // namespace couponcore
