// Retry pacing for the grant writers: exponential backoff with jitter, and a circuit breaker
// shared by all writer threads of a process.
//
// Every failure pushes the next attempt out by d/2 + random(0, d/2), d = initial * 2^(k-1)
// capped at max, k = consecutive failures ("equal jitter": never a thundering herd, never a
// zero wait). After `failures_to_open` consecutive failures the breaker is open: all threads
// stop touching the database (and stop reading new grants: they wait in the stream), and when
// the wait is over exactly one thread probes (half-open). One success closes it.
#pragma once

#include <cstdint>
#include <mutex>
#include <random>

namespace couponcore::writer {

class CircuitBreaker {
 public:
  CircuitBreaker(int failures_to_open, int64_t backoff_initial_ms, int64_t backoff_max_ms);

  // True if this caller may try now. Otherwise *wait_ms says how long until it may ask again.
  bool allow(int64_t now_ms, int64_t* wait_ms);
  void success();
  void failure(int64_t now_ms);
  bool is_open() const;
  int consecutive_failures() const;

 private:
  mutable std::mutex mu_;
  const int failures_to_open_;
  const int64_t initial_ms_;
  const int64_t max_ms_;
  int consecutive_ = 0;
  int64_t retry_at_ms_ = 0;
  bool probing_ = false;  // half-open: one probe in flight
  std::mt19937_64 rng_{std::random_device{}()};
};

// The same jittered delay for single-threaded loops (Redis reconnects in the writer).
int64_t jittered_backoff_ms(int attempt, int64_t initial_ms, int64_t max_ms, std::mt19937_64& rng);

}  // namespace couponcore::writer
