#include "util/validate.hpp"

#include "couponcore/error.hpp"
#include "couponcore/limits.hpp"

namespace couponcore {

void check_campaign_spec(const CampaignSpec& s) {
  if (s.name.empty()) throw_invalid("campaign name must not be empty");
  if (s.name.size() > limits::kNameBytesMax) {
    throw_invalid("campaign name is " + std::to_string(s.name.size()) + " bytes; the limit is " +
                  std::to_string(limits::kNameBytesMax));
  }
  if (s.quantity <= 0) throw_invalid("quantity must be positive, got " + std::to_string(s.quantity));
  if (s.quantity > limits::kQuantityMax) {
    throw_invalid("quantity " + std::to_string(s.quantity) + " is over the limit of " +
                  std::to_string(limits::kQuantityMax));
  }
  if (s.per_user_limit <= 0 || s.per_user_limit > limits::kPerUserLimitMax) {
    throw_invalid("per_user_limit must be 1.." + std::to_string(limits::kPerUserLimitMax) +
                  ", got " + std::to_string(s.per_user_limit));
  }
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
