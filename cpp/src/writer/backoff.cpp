// Backoff and circuit breaker: see backoff.hpp.
#include "writer/backoff.hpp"

#include <algorithm>

namespace couponcore::writer {

int64_t jittered_backoff_ms(int attempt, int64_t initial_ms, int64_t max_ms, std::mt19937_64& rng) {
  int64_t d = std::max<int64_t>(1, initial_ms);
  for (int i = 1; i < attempt && d < max_ms; ++i) d *= 2;
  d = std::min(d, std::max<int64_t>(1, max_ms));
  const int64_t half = d / 2;
  return half + static_cast<int64_t>(rng() % static_cast<uint64_t>(d - half + 1));
}

CircuitBreaker::CircuitBreaker(int failures_to_open, int64_t backoff_initial_ms, int64_t backoff_max_ms)
    : failures_to_open_(std::max(1, failures_to_open)), initial_ms_(backoff_initial_ms), max_ms_(backoff_max_ms) {}

bool CircuitBreaker::allow(int64_t now_ms, int64_t* wait_ms) {
  std::lock_guard lock(mu_);
  if (consecutive_ == 0) return true;
  if (now_ms < retry_at_ms_) {
    *wait_ms = retry_at_ms_ - now_ms;
    return false;
  }
  if (consecutive_ < failures_to_open_) return true;  // closed, just backing off
  if (probing_) {  // open: someone else is probing
    *wait_ms = std::max<int64_t>(10, initial_ms_);
    return false;
  }
  probing_ = true;
  return true;
}

void CircuitBreaker::success() {
  std::lock_guard lock(mu_);
  consecutive_ = 0;
  retry_at_ms_ = 0;
  probing_ = false;
}

void CircuitBreaker::failure(int64_t now_ms) {
  std::lock_guard lock(mu_);
  ++consecutive_;
  probing_ = false;
  retry_at_ms_ = now_ms + jittered_backoff_ms(consecutive_, initial_ms_, max_ms_, rng_);
}

bool CircuitBreaker::is_open() const {
  std::lock_guard lock(mu_);
  return consecutive_ >= failures_to_open_;
}

int CircuitBreaker::consecutive_failures() const {
  std::lock_guard lock(mu_);
  return consecutive_;
}

}  // namespace couponcore::writer
