#include "gate/campaign_gate.hpp"

#include <algorithm>
#include <cassert>

#include "couponcore/limits.hpp"
#include "util/assert.hpp"
#include "util/validate.hpp"

namespace couponcore {

namespace {
constexpr int64_t kHoldingsReserveMax = 1 << 20;
}  // namespace

CampaignGate::CampaignGate(Campaign campaign) : campaign_(std::move(campaign)) {
  // Holders are at most quantity; reserving up front spares the rehashes of a growing table
  // (bounded so that a huge campaign does not allocate its whole table before the first press).
  holdings_.reserve(static_cast<std::size_t>(std::min<int64_t>(campaign_.spec.quantity, kHoldingsReserveMax)));
}

std::string CampaignGate::answer_key(std::string_view user_id, std::string_view request_id) {
  std::string key;
  key.reserve(user_id.size() + 1 + request_id.size());
  key.append(user_id).push_back('\0');
  key.append(request_id);
  return key;
}

void CampaignGate::remember(std::string key, IssueResult result) {
  if (result.status == IssueStatus::kIssued) {
    issued_answers_.emplace(std::move(key), result);
    return;
  }
  if (other_order_.size() >= limits::kRememberedAnswersMax) {
    other_answers_.erase(other_order_.front());
    other_order_.pop_front();
  }
  auto [it, inserted] = other_answers_.emplace(std::move(key), result);
  if (inserted) other_order_.push_back(it->first);
}

bool CampaignGate::admit(const std::string& user_id, int64_t now_us, int64_t* retry_after_ms) {
  const CampaignSpec& s = campaign_.spec;
  if (s.rate_limit_per_user == 0 && s.rate_limit_per_partner == 0) return true;
  const int64_t now_ms = now_us / 1000;
  const int64_t window = now_ms / s.rate_window_ms;
  if (window != rate_window_) {
    rate_window_ = window;
    rate_users_.clear();
    rate_total_ = 0;
  }
  const int64_t limit_user = s.rate_limit_per_user, limit_all = s.rate_limit_per_partner;
  if (limit_all > 0 && rate_total_ >= limit_all) {
    *retry_after_ms = s.rate_window_ms - now_ms % s.rate_window_ms;
    return false;
  }
  if (limit_user > 0) {
    // One hash of the user id for the lookup and the count (a key is copied only when new).
    uint32_t& mine = rate_users_.try_emplace(user_id, 0).first->second;
    if (mine >= limit_user) {
      *retry_after_ms = s.rate_window_ms - now_ms % s.rate_window_ms;
      return false;
    }
    mine++;
  }
  rate_total_++;
  return true;
}

void CampaignGate::set_rate_limits(int32_t per_user, int32_t per_partner, int32_t window_ms) {
  const CampaignSpec& s = campaign_.spec;
  if (s.rate_limit_per_user == per_user && s.rate_limit_per_partner == per_partner && s.rate_window_ms == window_ms) return;
  campaign_.spec.rate_limit_per_user = per_user;
  campaign_.spec.rate_limit_per_partner = per_partner;
  campaign_.spec.rate_window_ms = window_ms;
  rate_window_ = -1;
  rate_users_.clear();
  rate_total_ = 0;
}

void CampaignGate::keep_rate_counts(CampaignGate& old) {
  const CampaignSpec &a = campaign_.spec, &b = old.campaign_.spec;
  CC_ASSERT(campaign_.id == old.campaign_.id && a.rate_limit_per_user == b.rate_limit_per_user &&
                a.rate_limit_per_partner == b.rate_limit_per_partner && a.rate_window_ms == b.rate_window_ms,
            "rate counters kept across different campaigns or limits");
  rate_window_ = old.rate_window_;
  rate_users_.swap(old.rate_users_);
  rate_total_ = old.rate_total_;
}

IssueResult CampaignGate::decide(const IssueRequest& request, int64_t now_us, std::vector<Grant>* grants) {
  std::string key;
  if (!request.request_id.empty()) {
    key = answer_key(request.user_id, request.request_id);
    if (auto it = issued_answers_.find(key); it != issued_answers_.end()) return it->second;
    if (auto it = other_answers_.find(key); it != other_answers_.end()) return it->second;
  }
  IssueResult result;
  auto held_it = holdings_.find(request.user_id);
  const uint32_t held = held_it == holdings_.end() ? 0 : held_it->second;
  const bool at_limit = held >= static_cast<uint32_t>(campaign_.spec.per_user_limit);
  if (campaign_.state == CampaignState::kPaused) {
    result.status = IssueStatus::kNotOpen;
  } else if (campaign_.state == CampaignState::kClosed) {
    result.status = IssueStatus::kEnded;
  } else if (outside_window(campaign_.spec, now_us, &result.status)) {
    // status set by outside_window
  } else if (sold_out()) {
    result.status = at_limit ? IssueStatus::kAlreadyIssued : IssueStatus::kSoldOut;
  } else if (!admit(request.user_id, now_us, &result.retry_after_ms)) {
    result.status = IssueStatus::kRateLimited;
    return result;  // never remembered: decided afresh when retried
  } else if (at_limit) {
    result.status = IssueStatus::kAlreadyIssued;
  } else {
    assert(grants != nullptr);
    const uint32_t seq = ++issued_;
    const uint32_t ordinal = held + 1;
    if (held_it == holdings_.end()) {
      holdings_.emplace(request.user_id, ordinal);
    } else {
      held_it->second = ordinal;
    }
    result.status = IssueStatus::kIssued;
    result.seq = seq;
    result.coupon_id = make_coupon_id(campaign_.id, seq);
    grants->push_back(Grant{campaign_.id, seq, request.user_id, ordinal, request.request_id, now_us, request.traceparent});
  }
  if (!key.empty()) remember(std::move(key), result);
  return result;
}

void CampaignGate::restore(const Grant& grant) {
  assert(grant.campaign_id == campaign_.id);
  if (grant.seq > issued_) issued_ = grant.seq;
  uint32_t& held = holdings_[grant.user_id];
  if (grant.user_ordinal > held) held = grant.user_ordinal;
  if (!grant.request_id.empty()) {
    IssueResult r{IssueStatus::kIssued, grant.seq, make_coupon_id(grant.campaign_id, grant.seq)};
    issued_answers_.emplace(answer_key(grant.user_id, grant.request_id), r);
  }
}

}  // namespace couponcore
