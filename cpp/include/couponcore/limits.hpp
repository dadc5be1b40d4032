// Every input has an explicit maximum; what happens at the limit is a kInvalidArgument error
// that changes nothing. docs/limits.md lists the same numbers for users.
#pragma once

#include <cstdint>
#include <string_view>

namespace couponcore::limits {

// User ids and request ids: 1..128 bytes of [A-Za-z0-9] and "-_.:@+=/". They reach Redis
// only as script arguments, never as key names, but the alphabet still shuts out braces
// (hash tags), whitespace and control characters.
inline constexpr std::size_t kUserIdBytesMax = 128;
inline constexpr std::size_t kRequestIdBytesMax = 128;
inline constexpr std::size_t kNameBytesMax = 200;
// A coupon id is campaign_id * 2^32 + seq, so quantity and campaign ids stay below 2^31.
inline constexpr int64_t kQuantityMax = 1'000'000'000;
inline constexpr int64_t kCampaignIdMax = (int64_t{1} << 31) - 1;
inline constexpr int32_t kPerUserLimitMax = 1000;
// A campaign's stock over at most this many Redis hash tags (CampaignSpec::shards).
inline constexpr int32_t kShardsMax = 16;
// Rate limits (CampaignSpec::rate_limit_per_user / rate_limit_per_partner, docs/rate-limits.md):
// requests per fixed window, 0 (no limit) .. kRateLimitMax; the window is
// kRateWindowMsMin..kRateWindowMsMax milliseconds. A sharded campaign's partner limit is split
// over its shards, so it must be 0 or at least the number of shards.
inline constexpr int32_t kRateLimitMax = 1'000'000;
inline constexpr int32_t kRateWindowMsMin = 10;
inline constexpr int32_t kRateWindowMsMax = 3'600'000;
// The HTTP layer's per-client-address limit (Engine::count_address): an address's bytes at most.
inline constexpr std::size_t kClientAddressBytesMax = 256;
// Money amounts are integers in minor units (cents); at most 10^12.
inline constexpr int64_t kAmountMax = 1'000'000'000'000;
// One issue_many call decides at most this many requests.
inline constexpr std::size_t kIssueBatchMax = 100'000;
inline constexpr std::size_t kTraceBufferRecordsMax = 1'000'000;  // Engine::enable_tracing's capacity
// The group-commit thread takes at most this many requests into one transaction.
inline constexpr std::size_t kCommitBatchRequestsMax = 65'536;
// Remembered answers per campaign (request_id -> first answer); the oldest are forgotten first.
inline constexpr std::size_t kRememberedAnswersMax = 1'000'000;

// Coupon lifecycle (use, cancel, queries, expiry).
// Order ids follow the user-id alphabet and length.
inline constexpr std::size_t kOrderIdBytesMax = 128;
// Relative validity: 1..10 years after issue.
inline constexpr int32_t kValidDaysMax = 3650;
// One page of a user's coupons holds at most this many; the default is kCouponPageDefault.
inline constexpr int32_t kCouponPageMax = 1000;
inline constexpr int32_t kCouponPageDefault = 50;
// The expiry job marks at most this many coupons per transaction (one short lock each) ...
inline constexpr int64_t kExpireChunkRowsMax = 10'000;
// ... and runs at most this many chunks per call (then reports `more`).
inline constexpr int64_t kExpireChunksMax = 1'000'000;

// Partners and API keys.
inline constexpr std::size_t kPartnerNameBytesMax = 200;
// Longer strings are refused as malformed keys before any hashing or lookup.
inline constexpr std::size_t kApiKeyBytesMax = 128;
// The in-process authentication cache: entries and lifetime (the revocation bound across
// processes; a revocation in this engine invalidates its own cache at once).
inline constexpr std::size_t kAuthCacheEntriesMax = 1'000'000;
inline constexpr int64_t kAuthCacheTtlMsMax = 3'600'000;

// Wallets (cpp/include/couponcore/wallet.hpp). Amounts are points, each 1..kAmountMax; a
// wallet's balance stays within kWalletBalanceMax (an earn or transfer beyond it is refused).
inline constexpr int64_t kWalletBalanceMax = 1'000'000'000'000'000;
// Lots with points left in one wallet; an earn or transfer_in beyond it is refused (kConflict).
inline constexpr std::size_t kWalletActiveLotsMax = 10'000;
inline constexpr std::size_t kWalletReasonBytesMax = 200;
// One wallet transaction applies at most this many operations; the queue holds at most
// kWalletQueueOpsMax (submitters wait, then get kUnavailable).
inline constexpr std::size_t kWalletBatchOpsMax = 10'000;
inline constexpr std::size_t kWalletQueueOpsMax = 1'000'000;
inline constexpr int kWalletHistoryLimitMax = 1000;
// Committer threads (each with its own database connection) of one PostgreSQL wallet engine.
inline constexpr int kWalletCommittersMax = 16;
inline constexpr int kWalletExpireChunkMax = 10'000;
inline constexpr int kWalletPurgeChunkMax = 100'000;  // idempotency records per purge statement

bool is_valid_id(std::string_view id, std::size_t bytes_max) noexcept;
// Free text the API stores and shows back (campaign and partner names, a wallet earn's reason):
// valid UTF-8 without control or invisible format characters — C0 controls (NUL, newline, tab,
// ...), DEL, C1 controls, the bidirectional embeddings, overrides and isolates (U+202A..U+202E,
// U+2066..U+2069) and marks (U+200E, U+200F, U+061C), zero-width and invisible characters
// (U+00AD, U+180E, U+200B, U+2060..U+2064, U+FEFF), line and paragraph separators (U+2028,
// U+2029), interlinear annotations (U+FFF9..U+FFFB), tag characters (U+E0000..U+E007F) and
// noncharacters. (U+200C/U+200D, the joiners of many scripts and emoji, are allowed.)
bool is_clean_text(std::string_view text) noexcept;
// Throws kInvalidArgument "<field> must be UTF-8 without control characters ..." unless
// is_clean_text(text).
void check_text(std::string_view text, const char* field);
// Throws kInvalidArgument naming the field and the rule.
void check_user_id(std::string_view user_id);
void check_request_id(std::string_view request_id);
void check_order_id(std::string_view order_id);

}  // namespace couponcore::limits
