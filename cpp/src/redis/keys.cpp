// Key layout: see keys.hpp.
#include "redis/keys.hpp"

#include <charconv>

#include "couponcore/error.hpp"

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

CampaignKeys::CampaignKeys(std::string_view prefix, int64_t id) : campaign_id(id) {
  const std::string base = std::string(prefix) + "{c" + std::to_string(id) + "}:";
  meta = base + "m";
  holders = base + "h";
  grants = base + "g";
  dead_letters = base + "dl";
  reasons = base + "why";
  free_seqs = base + "free";
  answers_base = base + "a:";
}

std::string campaigns_set_key(std::string_view prefix) { return std::string(prefix) + "campaigns"; }

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
