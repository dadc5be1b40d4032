#include "util/validate.hpp"

#include <string>

#include "couponcore/error.hpp"
#include "couponcore/limits.hpp"

namespace couponcore {

namespace limits {

namespace {
// Code points refused in stored free text besides the C0/C1 controls and DEL (see limits.hpp).
bool invisible_or_format(uint32_t cp) noexcept {
  if (cp == 0xad || cp == 0x61c || cp == 0x180e || cp == 0xfeff) return true;
  if (cp == 0x200b || cp == 0x200e || cp == 0x200f) return true;   // ZWSP, LRM, RLM
  if (cp >= 0x2028 && cp <= 0x202e) return true;                    // separators, bidi embed/override
  if (cp >= 0x2060 && cp <= 0x2069) return true;                    // word joiner.., bidi isolates
  if (cp >= 0xfff9 && cp <= 0xfffb) return true;                    // interlinear annotations
  if (cp >= 0xe0000 && cp <= 0xe007f) return true;                  // tags
  if (cp >= 0xfdd0 && cp <= 0xfdef) return true;                    // noncharacters
  if ((cp & 0xfffe) == 0xfffe) return true;                         // U+xxFFFE, U+xxFFFF
  return false;
}
}  // namespace

bool is_clean_text(std::string_view s) noexcept {
  std::size_t i = 0;
  while (i < s.size()) {
    const auto c = static_cast<unsigned char>(s[i]);
    if (c < 0x80) {
      if (c < 0x20 || c == 0x7f) return false;
      ++i;
      continue;
    }
    std::size_t n = 0;
    uint32_t cp = 0;
    if ((c & 0xe0) == 0xc0) {
      n = 1;
      cp = c & 0x1f;
    } else if ((c & 0xf0) == 0xe0) {
      n = 2;
      cp = c & 0x0f;
    } else if ((c & 0xf8) == 0xf0) {
      n = 3;
      cp = c & 0x07;
    } else {
      return false;
    }
    if (i + n >= s.size()) return false;  // truncated sequence
    for (std::size_t k = 1; k <= n; ++k) {
      const auto cc = static_cast<unsigned char>(s[i + k]);
      if ((cc & 0xc0) != 0x80) return false;
      cp = (cp << 6) | (cc & 0x3f);
    }
    const uint32_t min_cp = n == 1 ? 0x80 : n == 2 ? 0x800 : 0x10000;
    if (cp < min_cp || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) return false;
    if (cp < 0xa0) return false;  // C1 controls
    if (invisible_or_format(cp)) return false;
    i += n + 1;
  }
  return true;
}

void check_text(std::string_view text, const char* field) {
  if (!is_clean_text(text)) {
    throw_invalid(std::string(field) +
                  " must be UTF-8 without control characters (newline, tab, NUL, ...) or invisible"
                  " format characters (bidirectional overrides, zero-width spaces, ...)");
  }
}

}  // namespace limits

void check_rate_limits(int64_t per_user, int64_t per_partner, int64_t window_ms, int32_t shards) {
  const std::string range = "0.." + std::to_string(limits::kRateLimitMax) + " requests per window (0: no limit)";
  if (per_user < 0 || per_user > limits::kRateLimitMax) {
    throw_invalid("rate_limit_per_user must be " + range + ", got " + std::to_string(per_user));
  }
  if (per_partner < 0 || per_partner > limits::kRateLimitMax) {
    throw_invalid("rate_limit_per_partner must be " + range + ", got " + std::to_string(per_partner));
  }
  if (window_ms < limits::kRateWindowMsMin || window_ms > limits::kRateWindowMsMax) {
    throw_invalid("rate_window_ms must be " + std::to_string(limits::kRateWindowMsMin) + ".." +
                  std::to_string(limits::kRateWindowMsMax) + ", got " + std::to_string(window_ms));
  }
  if (per_partner > 0 && shards > 1 && per_partner < shards) {
    throw_invalid("rate_limit_per_partner (" + std::to_string(per_partner) + ") of a campaign with " +
                  std::to_string(shards) + " shards must be 0 or at least the number of shards (each shard admits its share)");
  }
}

void check_campaign_spec(const CampaignSpec& s) {
  if (s.name.empty()) throw_invalid("campaign name must not be empty");
  if (s.name.size() > limits::kNameBytesMax) {
    throw_invalid("campaign name is " + std::to_string(s.name.size()) + " bytes; the limit is " +
                  std::to_string(limits::kNameBytesMax));
  }
  limits::check_text(s.name, "campaign name");
  if (s.quantity <= 0) throw_invalid("quantity must be positive, got " + std::to_string(s.quantity));
  if (s.quantity > limits::kQuantityMax) {
    throw_invalid("quantity " + std::to_string(s.quantity) + " is over the limit of " +
                  std::to_string(limits::kQuantityMax));
  }
  if (s.per_user_limit <= 0 || s.per_user_limit > limits::kPerUserLimitMax) {
    throw_invalid("per_user_limit must be 1.." + std::to_string(limits::kPerUserLimitMax) +
                  ", got " + std::to_string(s.per_user_limit));
  }
  if (s.shards < 1 || s.shards > limits::kShardsMax) {
    throw_invalid("shards must be 1.." + std::to_string(limits::kShardsMax) + ", got " + std::to_string(s.shards));
  }
  if (s.shards > s.quantity) {
    throw_invalid("shards (" + std::to_string(s.shards) + ") must not exceed the quantity (" +
                  std::to_string(s.quantity) + ")");
  }
  check_rate_limits(s.rate_limit_per_user, s.rate_limit_per_partner, s.rate_window_ms, s.shards);
  if (s.starts_at_us && s.ends_at_us && *s.ends_at_us <= *s.starts_at_us) {
    throw_invalid("ends_at must be after starts_at");
  }
  if (s.partner_id < 0) throw_invalid("partner_id must not be negative");
  switch (s.discount_kind) {
    case DiscountKind::kNone:
      if (s.discount_value != 0) throw_invalid("discount_value needs a discount kind");
      break;
    case DiscountKind::kFixed:
      if (s.discount_value <= 0) throw_invalid("a fixed discount must be positive");
      if (s.discount_value > limits::kAmountMax) throw_invalid("fixed discount is over the amount limit");
      if (s.discount_max) throw_invalid("discount_max applies to percent discounts only");
      break;
    case DiscountKind::kPercent:
      if (s.discount_value <= 0 || s.discount_value > 100) {
        throw_invalid("a percent discount must be 1..100, got " + std::to_string(s.discount_value));
      }
      if (s.discount_max && (*s.discount_max <= 0 || *s.discount_max > limits::kAmountMax)) {
        throw_invalid("discount_max must be positive and within the amount limit");
      }
      break;
    default:
      throw_invalid("unknown discount kind");
  }
  if (s.min_order_amount < 0 || s.min_order_amount > limits::kAmountMax) {
    throw_invalid("min_order_amount must be 0.." + std::to_string(limits::kAmountMax));
  }
  if (s.valid_until_us && s.valid_days) throw_invalid("give valid_until or valid_days, not both");
  if (s.valid_days && (*s.valid_days <= 0 || *s.valid_days > 3650)) {
    throw_invalid("valid_days must be 1..3650");
  }
}

bool outside_window(const CampaignSpec& spec, int64_t now_us, IssueStatus* status) {
  if (spec.starts_at_us && now_us < *spec.starts_at_us) {
    *status = IssueStatus::kNotOpen;
    return true;
  }
  if (spec.ends_at_us && now_us >= *spec.ends_at_us) {
    *status = IssueStatus::kEnded;
    return true;
  }
  return false;
}

}  // namespace couponcore
