// The in-process gate of one campaign: FCFS decisions over counters kept in memory.
//
// decide() is the whole rule, in this order (docs/architecture.md "The gate's rule"):
//   1. a request id (scoped per user) already answered -> that first answer (not counted again)
//   2. outside the window or not active -> NOT_OPEN / ENDED
//   3. all coupons are out -> ALREADY_ISSUED for a user at per_user_limit, else SOLD_OUT (as
//      the Redis gate's sold-out fast path answers: not counted against the rate limits)
//   4. over the user's or the campaign's rate limit in the current window -> RATE_LIMITED with
//      retry_after_ms = the time to the window's end (never remembered: a retry with the same
//      request id after that is decided afresh); else the request counts in both
//   5. the user already holds per_user_limit coupons -> ALREADY_ISSUED
//   6. ISSUED with the next seq and a Grant appended for the store.
// Rate windows are fixed, aligned to the clock the caller passes (now_us / 1000 / window_ms).
// The Lua script of the Redis gate (cpp/src/gate/lua/gate.lua) implements the same rule.
//
// Not thread-safe: the owner (EmbeddedEngine) serialises access.
#pragma once

#include <cstdint>
#include <deque>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "couponcore/types.hpp"

namespace couponcore {

// Transparent (lookups by string_view allocate nothing). Deliberately not noexcept: libstdc++
// then caches each node's hash code, so bucket walks compare hashes before strings and a rehash
// never re-hashes the keys (that alone took decide() from 600 ns to under 300 ns).
struct StringHash {
  using is_transparent = void;
  std::size_t operator()(std::string_view s) const { return std::hash<std::string_view>{}(s); }
};
template <typename V>
using StringMap = std::unordered_map<std::string, V, StringHash, std::equal_to<>>;

class CampaignGate {
 public:
  explicit CampaignGate(Campaign campaign);

  const Campaign& campaign() const { return campaign_; }
  uint32_t issued() const { return issued_; }
  bool sold_out() const { return issued_ >= static_cast<uint64_t>(campaign_.spec.quantity); }

  IssueResult decide(const IssueRequest& request, int64_t now_us, std::vector<Grant>* grants);

  // Rebuilds state from the store: one call per durable grant, in any order.
  void restore(const Grant& grant);
  void set_state(CampaignState state) { campaign_.state = state; }
  void set_quantity(int64_t quantity) { campaign_.spec.quantity = quantity; }
  // Limits that differ from the current ones start the window's counters from zero.
  void set_rate_limits(int32_t per_user, int32_t per_partner, int32_t window_ms);
  // Takes over the rate window's counters of `old`, a gate of the same campaign with the same
  // limits: a gate rebuilt from the store after a failed commit keeps what its window counted
  // (the requests of the failed batch included), so a window never admits more than its limit.
  void keep_rate_counts(CampaignGate& old);

 private:
  static std::string answer_key(std::string_view user_id, std::string_view request_id);
  void remember(std::string key, IssueResult result);
  // Step 4 of the rule: counts the request and returns true, or sets *retry_after_ms.
  bool admit(const std::string& user_id, int64_t now_us, int64_t* retry_after_ms);

  Campaign campaign_;
  uint32_t issued_ = 0;
  StringMap<uint32_t> holdings_;            // user_id -> coupons held
  StringMap<IssueResult> issued_answers_;   // user\0request -> ISSUED answer; never forgotten
  StringMap<IssueResult> other_answers_;    // user\0request -> other answers; bounded FIFO
  std::deque<std::string> other_order_;
  int64_t rate_window_ = -1;       // the window the counters below belong to
  StringMap<uint32_t> rate_users_;  // user_id -> requests counted in rate_window_
  int64_t rate_total_ = 0;          // requests counted in rate_window_, all users
};

}  // namespace couponcore
