#include "gate/campaign_gate.hpp"

#include <algorithm>
#include <cassert>

#include "couponcore/limits.hpp"
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
  if (campaign_.state == CampaignState::kPaused) {
    result.status = IssueStatus::kNotOpen;
  } else if (campaign_.state == CampaignState::kClosed) {
    result.status = IssueStatus::kEnded;
  } else if (outside_window(campaign_.spec, now_us, &result.status)) {
    // status set by outside_window
  } else if (held >= static_cast<uint32_t>(campaign_.spec.per_user_limit)) {
    result.status = IssueStatus::kAlreadyIssued;
  } else if (sold_out()) {
    result.status = IssueStatus::kSoldOut;
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
