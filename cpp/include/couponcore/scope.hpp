// PartnerScope: an engine seen by one partner. Every call only ever reaches that partner's
// campaigns and coupons; another partner's object is kNotFound, exactly like an unknown one
// (existence is not leaked). Partner 0 is the embedded default.
//
//   PartnerScope s(engine, partner.id);        // e.g. after engine.authenticate(api_key)
//   Campaign c = s.create_campaign(spec);      // spec.partner_id is set to the scope's
//   IssueResult r = s.issue(c.id, {"user-1", ""});
//   UseResult u = s.use_coupon({r.coupon_id, "user-1", "order-9", 12'000});
//
// A scope is a cheap value (a reference and an id); the engine must outlive it.
#pragma once

#include "couponcore/engine.hpp"

namespace couponcore {

class PartnerScope {
 public:
  PartnerScope(Engine& engine, int64_t partner_id) : e_(engine), partner_id_(partner_id) {}

  int64_t partner_id() const { return partner_id_; }
  Engine& engine() const { return e_; }

  // Campaigns.
  Campaign create_campaign(CampaignSpec spec) {
    spec.partner_id = partner_id_;
    return e_.create_campaign(spec);
  }
  Campaign get_campaign(int64_t campaign_id) {
    e_.check_campaign_partner(partner_id_, campaign_id);
    return e_.get_campaign(campaign_id);
  }
  std::vector<Campaign> list_campaigns() { return e_.list_campaigns(partner_id_); }
  Campaign pause_campaign(int64_t campaign_id) { return e_.pause_campaign(partner_id_, campaign_id); }
  Campaign resume_campaign(int64_t campaign_id) { return e_.resume_campaign(partner_id_, campaign_id); }
  Campaign close_campaign(int64_t campaign_id) { return e_.close_campaign(partner_id_, campaign_id); }
  Campaign set_campaign_quantity(int64_t campaign_id, int64_t quantity) {
    return e_.set_campaign_quantity(partner_id_, campaign_id, quantity);
  }
  CampaignStats campaign_stats(int64_t campaign_id) {
    e_.check_campaign_partner(partner_id_, campaign_id);
    return e_.campaign_stats(campaign_id);
  }

  // Issuance. A campaign's partner never changes, so checking it before submitting is exact.
  void submit_issue(int64_t campaign_id, std::vector<IssueRequest> requests, IssueCallback cb) {
    e_.check_campaign_partner(partner_id_, campaign_id);
    e_.submit_issue(campaign_id, std::move(requests), std::move(cb));
  }
  IssueResult issue(int64_t campaign_id, IssueRequest request) {
    e_.check_campaign_partner(partner_id_, campaign_id);
    return e_.issue(campaign_id, std::move(request));
  }
  std::vector<IssueResult> issue_many(int64_t campaign_id, std::vector<IssueRequest> requests) {
    e_.check_campaign_partner(partner_id_, campaign_id);
    return e_.issue_many(campaign_id, std::move(requests));
  }

  // Coupons.
  UseResult use_coupon(const UseRequest& request) { return e_.use_coupon(partner_id_, request); }
  Coupon cancel_coupon_use(int64_t coupon_id, const std::string& order_id, const std::string& traceparent = {}) {
    return e_.cancel_coupon_use(partner_id_, coupon_id, order_id, traceparent);
  }
  Coupon get_coupon(int64_t coupon_id) { return e_.get_coupon(partner_id_, coupon_id); }
  CouponPage list_user_coupons(const CouponQuery& query) { return e_.list_user_coupons(partner_id_, query); }
  CouponCounts coupon_counts(int64_t campaign_id) { return e_.coupon_counts(partner_id_, campaign_id); }

 private:
  Engine& e_;
  int64_t partner_id_;
};

}  // namespace couponcore
