// Key layout: see keys.hpp.
#include "redis/keys.hpp"

#include <charconv>

#include "couponcore/error.hpp"
#include "couponcore/limits.hpp"
#include "redis/cluster.hpp"

namespace couponcore::redis {

void check_key_prefix(std::string_view prefix) {
  if (prefix.empty() || prefix.size() > kKeyPrefixBytesMax) {
    throw_invalid("key_prefix must be 1..64 bytes, got " + std::to_string(prefix.size()));
  }
  for (unsigned char c : prefix) {
    const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == ':' ||
                    c == '_' || c == '.' || c == '-';
    if (!ok) throw_invalid("key_prefix may contain only letters, digits and : _ . -");
  }
}

namespace {
// The hash tag of shard s of k (see keys.hpp): the first ".<j>" whose slot falls in band s.
std::string shard_tag(int64_t id, int s, int k) {
  const std::string stem = "c" + std::to_string(id) + ".s" + std::to_string(s) + ".";
  for (int j = 0;; ++j) {
    std::string tag = stem + std::to_string(j);
    const int slot = key_slot("{" + tag + "}");
    if (slot * k / kClusterSlots == s) return tag;
  }
}
}  // namespace

CampaignKeys::CampaignKeys(std::string_view prefix, int64_t id, int s, int k)
    : campaign_id(id),
      shard(s),
      stream_id(k <= 1 ? id : id + (static_cast<int64_t>(s) << 32) + (static_cast<int64_t>(k) << 40)) {
  const std::string tag = k <= 1 ? "c" + std::to_string(id) : shard_tag(id, s, k);
  const std::string base = std::string(prefix) + "{" + tag + "}:";
  meta = base + "m";
  holders = base + "h";
  grants = base + "g";
  dead_letters = base + "dl";
  reasons = base + "why";
  free_seqs = base + "free";
  answers_base = base + "a:";
  transfers = base + "x";
  received = base + "rx";
  rate = base + "r";
}

bool CampaignKeys::from_stream_id(std::string_view prefix, int64_t sid, CampaignKeys* out) {
  const int64_t id = sid & 0xffffffff;
  const int64_t shard = (sid >> 32) & 0xff;
  const int64_t k = sid >> 40;
  if (sid <= 0 || id <= 0 || id > limits::kCampaignIdMax) return false;
  if (k == 0 && shard == 0) {
    *out = CampaignKeys(prefix, id);
    return true;
  }
  if (k < 2 || k > limits::kShardsMax || shard >= k) return false;
  *out = CampaignKeys(prefix, id, static_cast<int>(shard), static_cast<int>(k));
  return true;
}

std::string campaigns_set_key(std::string_view prefix) { return std::string(prefix) + "campaigns"; }

CampaignKeys keys_of_stream(std::string_view prefix, int64_t stream_id) {
  CampaignKeys k;
  if (CampaignKeys::from_stream_id(prefix, stream_id, &k)) return k;
  return CampaignKeys(prefix, stream_id);
}

int shard_of_user(std::string_view user_id, int shards) {
  if (shards <= 1) return 0;
  uint64_t h = 1469598103934665603ULL;
  for (unsigned char c : user_id) {
    h ^= c;
    h *= 1099511628211ULL;
  }
  return static_cast<int>(h % static_cast<uint64_t>(shards));
}

bool parse_stream_id(std::string_view id, StreamId* out) {
  const std::size_t dash = id.find('-');
  if (dash == std::string_view::npos) return false;
  auto parse = [](std::string_view s, uint64_t* v) {
    if (s.empty()) return false;
    auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), *v);
    return ec == std::errc() && end == s.data() + s.size();
  };
  return parse(id.substr(0, dash), &out->first) && parse(id.substr(dash + 1), &out->second);
}

}  // namespace couponcore::redis
