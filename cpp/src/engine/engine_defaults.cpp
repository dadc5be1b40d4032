// The Engine's non-pure virtuals: the partner check every engine gets for free, and defaults
// for the lifecycle calls that a deployment has not wired yet. Those defaults throw kInternal
// naming the call and the engine kind, so a missing piece is loud, never a wrong answer.
#include <string>

#include "couponcore/engine.hpp"
#include "couponcore/error.hpp"

namespace couponcore {

namespace {
[[noreturn]] void not_wired(const Engine& e, const char* what) {
  throw Error(ErrorCode::kInternal,
              std::string(what) + " is not implemented by the " + e.kind() + " engine yet");
}
}  // namespace

int64_t Engine::campaign_partner(int64_t campaign_id) { return get_campaign(campaign_id).spec.partner_id; }

void Engine::check_campaign_partner(int64_t partner_id, int64_t campaign_id) {
  // The message is the one an unknown campaign gets: existence is not leaked.
  if (campaign_partner(campaign_id) != partner_id) {
    throw_not_found("campaign " + std::to_string(campaign_id) + " not found");
  }
}

Campaign Engine::pause_campaign(int64_t, int64_t) { not_wired(*this, "pause_campaign"); }
Campaign Engine::resume_campaign(int64_t, int64_t) { not_wired(*this, "resume_campaign"); }
Campaign Engine::close_campaign(int64_t, int64_t) { not_wired(*this, "close_campaign"); }
Campaign Engine::set_campaign_quantity(int64_t, int64_t, int64_t) { not_wired(*this, "set_campaign_quantity"); }
UseResult Engine::use_coupon(int64_t, const UseRequest&) { not_wired(*this, "use_coupon"); }
Coupon Engine::cancel_coupon_use(int64_t, int64_t, const std::string&) { not_wired(*this, "cancel_coupon_use"); }
Coupon Engine::get_coupon(int64_t, int64_t) { not_wired(*this, "get_coupon"); }
CouponPage Engine::list_user_coupons(int64_t, const CouponQuery&) { not_wired(*this, "list_user_coupons"); }
CouponCounts Engine::coupon_counts(int64_t, int64_t) { not_wired(*this, "coupon_counts"); }
ExpireReport Engine::expire_coupons(int64_t, int64_t, int64_t) { not_wired(*this, "expire_coupons"); }
PartnerKey Engine::create_partner(const std::string&) { not_wired(*this, "create_partner"); }
PartnerKey Engine::rotate_partner_key(int64_t) { not_wired(*this, "rotate_partner_key"); }
Partner Engine::revoke_partner_keys(int64_t) { not_wired(*this, "revoke_partner_keys"); }
Partner Engine::get_partner(int64_t) { not_wired(*this, "get_partner"); }
std::vector<Partner> Engine::list_partners(int64_t, int32_t) { not_wired(*this, "list_partners"); }
Partner Engine::authenticate(std::string_view) { not_wired(*this, "authenticate"); }
AuthCounters Engine::auth_counters() const { return AuthCounters{}; }

const char* coupon_state_name(CouponState s) noexcept {
  switch (s) {
    case CouponState::kIssued: return "issued";
    case CouponState::kUsed: return "used";
    case CouponState::kExpired: return "expired";
  }
  return "unknown";
}

}  // namespace couponcore
