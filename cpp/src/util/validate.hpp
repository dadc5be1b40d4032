// Checks shared by both deployments: a campaign spec is checked once, before anything is
// written, so bad input changes nothing.
#pragma once

#include "couponcore/types.hpp"

namespace couponcore {

void check_campaign_spec(const CampaignSpec& spec);
// The window rule both gates apply: NOT_OPEN before starts_at, ENDED at or after ends_at.
// Returns true and sets *status when the request is outside the window.
bool outside_window(const CampaignSpec& spec, int64_t now_us, IssueStatus* status);

}  // namespace couponcore
