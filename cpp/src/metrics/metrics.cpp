// Histograms and the rate-limited log sink (metrics.hpp).
#include "couponcore/metrics.hpp"

#include <chrono>
#include <cmath>
#include <cstdio>
#include <map>
#include <memory>
#include <mutex>

namespace couponcore {

Histogram::Histogram(std::vector<double> upper_bounds) : bounds_(std::move(upper_bounds)) {
  if (bounds_.size() > kBucketsMax) bounds_.resize(kBucketsMax);
}

void Histogram::observe(double value, uint64_t count) noexcept {
  std::size_t i = 0;
  while (i < bounds_.size() && value > bounds_[i]) ++i;
  buckets_[i].fetch_add(count, std::memory_order_relaxed);
  const double micros = value * 1e6 * static_cast<double>(count);
  sum_micros_.fetch_add(micros > 0 ? static_cast<uint64_t>(std::llround(micros)) : 0, std::memory_order_relaxed);
  count_.fetch_add(count, std::memory_order_relaxed);
}

Histogram::Snapshot Histogram::snapshot() const {
  Snapshot s;
  s.upper_bounds = bounds_;
  uint64_t running = 0;
  for (std::size_t i = 0; i <= bounds_.size(); ++i) {
    running += buckets_[i].load(std::memory_order_relaxed);
    s.cumulative_counts.push_back(running);
  }
  s.count = running;  // consistent with the buckets even while others observe
  s.sum = static_cast<double>(sum_micros_.load(std::memory_order_relaxed)) / 1e6;
  return s;
}

namespace {

struct LogState {
  std::mutex mu;
  std::shared_ptr<LogSink> sink;
  struct Window {
    int64_t second = 0;
    int used = 0;
    uint64_t dropped = 0;
  };
  std::map<std::string, Window, std::less<>> windows;
};

LogState& state() {
  static LogState* s = new LogState();  // never destroyed: engine threads may log at exit
  return *s;
}

}  // namespace

void set_log_sink(LogSink sink) {
  LogState& s = state();
  std::lock_guard lock(s.mu);
  s.sink = sink ? std::make_shared<LogSink>(std::move(sink)) : nullptr;
}

void log(LogLevel level, std::string_view component, std::string message) {
  LogState& s = state();
  std::shared_ptr<LogSink> sink;
  {
    std::lock_guard lock(s.mu);
    const int64_t now_s = std::chrono::duration_cast<std::chrono::seconds>(
                              std::chrono::steady_clock::now().time_since_epoch())
                              .count();
    auto it = s.windows.find(component);
    if (it == s.windows.end()) it = s.windows.emplace(std::string(component), LogState::Window{}).first;
    LogState::Window& w = it->second;
    if (w.second != now_s) {
      w.second = now_s;
      w.used = 0;
    }
    if (w.used >= kLogBurst) {
      ++w.dropped;
      return;
    }
    ++w.used;
    if (w.dropped > 0) {
      message += " (" + std::to_string(w.dropped) + " similar messages suppressed)";
      w.dropped = 0;
    }
    sink = s.sink;
  }
  if (sink) {
    (*sink)(level, component, message);
  } else {
    std::fprintf(stderr, "couponcore.%.*s: %s\n", static_cast<int>(component.size()), component.data(),
                 message.c_str());
  }
}

}  // namespace couponcore
