// The in-process gate of one campaign: FCFS decisions over counters kept in memory.
//
// decide() is the whole rule, in this order: outside the window or not active -> NOT_OPEN /
// ENDED; the user already holds per_user_limit coupons -> ALREADY_ISSUED; all coupons are
// out -> SOLD_OUT; else ISSUED with the next seq and a Grant appended for the store. A request
// id (scoped per user) remembers its first answer, so a retry gets the same answer back.
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

 private:
  static std::string answer_key(std::string_view user_id, std::string_view request_id);
  void remember(std::string key, IssueResult result);

  Campaign campaign_;
  uint32_t issued_ = 0;
  StringMap<uint32_t> holdings_;            // user_id -> coupons held
  StringMap<IssueResult> issued_answers_;   // user\0request -> ISSUED answer; never forgotten
  StringMap<IssueResult> other_answers_;    // user\0request -> other answers; bounded FIFO
  std::deque<std::string> other_order_;
};

}  // namespace couponcore
