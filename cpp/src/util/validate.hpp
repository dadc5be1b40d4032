// Checks shared by both deployments: a campaign spec is checked once, before anything is
// written, so bad input changes nothing.
#pragma once

#include "couponcore/types.hpp"

namespace couponcore {

void check_campaign_spec(const CampaignSpec& spec);
// The rate-limit fields (limits.hpp): kInvalidArgument naming the field and its range.
void check_rate_limits(int64_t per_user, int64_t per_partner, int64_t window_ms, int32_t shards);
// The window rule both gates apply: NOT_OPEN before starts_at, ENDED at or after ends_at.
// Returns true and sets *status when the request is outside the window.
bool outside_window(const CampaignSpec& spec, int64_t now_us, IssueStatus* status);

}  // namespace couponcore
