// Plain values shared by every component: campaigns, issue requests and their answers.
// Times are microseconds since the Unix epoch (UTC), in int64 fields named *_us.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace couponcore {

enum class IssueStatus : uint8_t {
  kIssued = 0,
  kSoldOut = 1,
  kAlreadyIssued = 2,
  kNotOpen = 3,
  kEnded = 4,
};
const char* issue_status_name(IssueStatus s) noexcept;

enum class DiscountKind : uint8_t { kNone = 0, kFixed = 1, kPercent = 2 };

struct CampaignSpec {
  std::string name;
  int64_t quantity = 0;
  int32_t per_user_limit = 1;
  std::optional<int64_t> starts_at_us;
  std::optional<int64_t> ends_at_us;
  int64_t partner_id = 0;  // 0: the embedded default partner
  DiscountKind discount_kind = DiscountKind::kNone;
  int64_t discount_value = 0;  // fixed: amount in minor units; percent: 1..100
  std::optional<int64_t> discount_max;
  int64_t min_order_amount = 0;
  std::optional<int64_t> valid_until_us;
  std::optional<int32_t> valid_days;
  // Production: the stock is spread over this many Redis hash tags (1..limits::kShardsMax; see
  // docs/production.md "Sharded campaigns"). Embedded: accepted, one in-process gate decides.
  int32_t shards = 1;
};

enum class CampaignState : uint8_t { kActive = 0, kPaused = 1, kClosed = 2 };

struct Campaign {
  int64_t id = 0;
  CampaignSpec spec;
  CampaignState state = CampaignState::kActive;
  int64_t created_at_us = 0;
};

struct IssueRequest {
  std::string user_id;
  std::string request_id;  // empty: no retry protection
  std::string traceparent;  // W3C trace context of the call ("" = none); see docs/tracing.md
};

struct IssueResult {
  IssueStatus status = IssueStatus::kSoldOut;
  uint32_t seq = 0;        // 1..quantity when issued (also on a remembered ISSUED answer)
  int64_t coupon_id = 0;   // campaign_id * 2^32 + seq when issued, else 0
};

inline int64_t make_coupon_id(int64_t campaign_id, uint32_t seq) {
  return (campaign_id << 32) | static_cast<int64_t>(seq);
}

// One durable grant: what the grant log carries and the store keeps.
struct Grant {
  int64_t campaign_id = 0;
  uint32_t seq = 0;
  std::string user_id;
  uint32_t user_ordinal = 0;  // 1..per_user_limit: the user's n-th coupon of this campaign
  std::string request_id;
  int64_t issued_at_us = 0;
  std::string traceparent;  // W3C trace context of the call ("" = none); see docs/tracing.md
};

// What the store says about one campaign's grants, for verification and reconciliation.
struct CampaignStats {
  int64_t rows = 0;
  int64_t distinct_users = 0;
  int64_t min_seq = 0;
  int64_t max_seq = 0;
};

// The backlog of one campaign's grant log (production: a Redis Stream read by the consumer
// group "writers"). Values of the deployment, the same from every engine on it.
struct LogBacklog {
  int64_t campaign_id = 0;
  int64_t entries = 0;                // XLEN: entries not yet settled (acknowledged ones are trimmed)
  int64_t pending = 0;                // delivered to the writers, not yet acknowledged (XPENDING)
  int64_t oldest_pending_age_ms = 0;  // Redis TIME minus the oldest pending id's ms part; 0: none
  int64_t dead_letters = 0;           // XLEN of the campaign's dead-letter stream
  int64_t oldest_unread_age_ms = 0;   // Redis TIME minus the oldest entry the group has not
                                      // delivered yet (after last-delivered-id); 0: none
};

// One grant-writer consumer of the deployment, as its heartbeat shows it (writer/liveness.hpp).
struct WriterInfo {
  std::string consumer;            // the consumer's name in the group "writers"
  bool alive = false;              // beat within dead_after_ms (on the Redis server's clock)
  int64_t last_beat_age_ms = -1;   // Redis TIME minus its last beat; -1: it never beat (an older
                                   // version; only its pending entries make it visible)
  int64_t pending = 0;             // entries delivered to it and not acknowledged, all campaigns
};

// One record of a campaign's dead-letter stream (production: P{cN}:dl): a grant that left the
// grant log without reaching the store, with why (docs/dead-letters.md). A refused grant's
// record holds that one grant (seq, user, request); a malformed entry's record holds its raw
// fields, and seq / user_id / request_id are unset.
struct DeadLetter {
  int64_t campaign_id = 0;
  std::string id;        // the dead-letter stream id ("<ms>-<n>")
  std::string entry_id;  // the grant-log entry it came from
  std::string reason;
  int64_t deliveries = 0;  // deliveries of the entry before it was dead-lettered
  int64_t redrives = 0;    // times its grant was re-driven before (and dead-lettered again)
  std::optional<int64_t> seq;
  std::optional<int64_t> user_ordinal;
  std::optional<std::string> user_id, request_id;
  int64_t dead_lettered_at_us = 0;  // the stream id's time (the Redis server's clock)
  std::vector<std::pair<std::string, std::string>> fields;  // the record's own fields, raw
};

}  // namespace couponcore
