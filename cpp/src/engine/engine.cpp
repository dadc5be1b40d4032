// The Engine facade (couponcore/engine.hpp): argument checks and the open/closed state, once for
// both deployments, then one forward each to the pipeline or a service (engine/pipeline.hpp).
#include <future>
#include <string>

#include "auth/partner_service.hpp"
#include "coupons/coupon_service.hpp"
#include "couponcore/engine.hpp"
#include "couponcore/error.hpp"
#include "couponcore/limits.hpp"
#include "engine/pipeline.hpp"
#include "windows/answer_recorder.hpp"
#include "util/assert.hpp"
#include "util/traceparent.hpp"
#include "util/validate.hpp"

namespace couponcore {

namespace {

// Checks the requests; a malformed traceparent becomes "" (ignored, never an error).
void check_requests(std::vector<IssueRequest>& requests) {
  if (requests.size() > limits::kIssueBatchMax) {
    throw_invalid("a batch holds at most " + std::to_string(limits::kIssueBatchMax) + " requests, got " +
                  std::to_string(requests.size()));
  }
  for (IssueRequest& r : requests) {
    limits::check_user_id(r.user_id);
    if (!r.request_id.empty()) limits::check_request_id(r.request_id);
    trace::normalize_traceparent_in_place(r.traceparent);
  }
}

void check_quantity(int64_t quantity) {
  if (quantity <= 0 || quantity > limits::kQuantityMax) {
    throw_invalid("quantity must be 1.." + std::to_string(limits::kQuantityMax) + ", got " + std::to_string(quantity));
  }
}

}  // namespace

Engine::Engine(std::unique_ptr<detail::Deployment> deployment) : deployment_(std::move(deployment)) {
  CC_ASSERT(deployment_ && deployment_->pipeline && deployment_->coupons && deployment_->partners,
            "a deployment without all of its parts");
}

Engine::~Engine() { close(); }

void Engine::check_open() const {
  if (closed_.load(std::memory_order_acquire)) throw Error(ErrorCode::kClosed, "the engine is closed");
}

const char* Engine::kind() const noexcept { return deployment_->pipeline->kind(); }

EventHub& Engine::events() {
  check_open();
  if (deployment_->events == nullptr) throw Error(ErrorCode::kUnavailable, "this engine has no event log");
  return *deployment_->events;
}

// ---- campaigns and issuance --------------------------------------------------------------------

Campaign Engine::create_campaign(const CampaignSpec& spec) {
  check_open();
  check_campaign_spec(spec);
  if (!deployment_->partners->exists(spec.partner_id)) {
    throw_not_found("partner " + std::to_string(spec.partner_id) + " not found");
  }
  return deployment_->pipeline->create_campaign(spec);
}

Campaign Engine::get_campaign(int64_t campaign_id) {
  check_open();
  return deployment_->pipeline->get_campaign(campaign_id);
}

std::vector<Campaign> Engine::list_campaigns(int64_t partner_id) {
  check_open();
  return deployment_->pipeline->list_campaigns(partner_id);
}

void Engine::submit_issue(int64_t campaign_id, std::vector<IssueRequest> requests, IssueCallback cb) {
  check_open();
  check_requests(requests);
  detail::Pipeline& p = *deployment_->pipeline;
  if (requests.empty()) {
    p.campaign_partner(campaign_id);  // an unknown campaign is kNotFound, even with nothing to decide
    cb({}, nullptr);
    p.run_batch_end_hook();
    return;
  }
  p.submit(campaign_id, std::move(requests), std::move(cb));
}

IssueResult Engine::issue(int64_t campaign_id, IssueRequest request) {
  std::vector<IssueRequest> one;
  one.push_back(std::move(request));
  std::vector<IssueResult> results = issue_many(campaign_id, std::move(one));
  return results.at(0);
}

std::vector<IssueResult> Engine::issue_many(int64_t campaign_id, std::vector<IssueRequest> requests) {
  if (requests.empty()) return {};
  auto promise = std::make_shared<std::promise<Answer<std::vector<IssueResult>>>>();
  auto future = promise->get_future();
  submit_issue(campaign_id, std::move(requests), [promise](std::vector<IssueResult>&& results, std::exception_ptr error) {
    Answer<std::vector<IssueResult>> a;
    if (error) {
      a.error = error_from(error);
    } else {
      a.value = std::move(results);
    }
    promise->set_value(std::move(a));
  });
  return future.get().take();
}

CampaignStats Engine::campaign_stats(int64_t campaign_id) {
  check_open();
  return deployment_->pipeline->campaign_stats(campaign_id);
}

int64_t Engine::gate_issued(int64_t campaign_id) {
  check_open();
  return deployment_->pipeline->gate_issued(campaign_id);
}

std::optional<int64_t> Engine::count_address(std::string_view address, int32_t limit, int32_t window_ms) {
  check_open();
  if (limit < 1 || limit > limits::kRateLimitMax) {
    throw Error(ErrorCode::kInvalidArgument, "address limit must be 1..1,000,000 requests per window");
  }
  if (window_ms < limits::kRateWindowMsMin || window_ms > limits::kRateWindowMsMax) {
    throw Error(ErrorCode::kInvalidArgument, "address window must be 10..3,600,000 ms");
  }
  if (address.size() > limits::kClientAddressBytesMax) {
    throw Error(ErrorCode::kInvalidArgument, "client address longer than 256 bytes");
  }
  if (deployment_->addresses == nullptr) return std::nullopt;
  return deployment_->addresses->refuse_ms(address, limit, window_ms);
}

bool Engine::drain(double timeout_s) {
  check_open();
  return deployment_->pipeline->drain(timeout_s);
}

ReconcileReport Engine::reconcile(int64_t campaign_id) {
  check_open();
  return deployment_->pipeline->reconcile(campaign_id);
}

EngineCounters Engine::counters() const {
  EngineCounters k = deployment_->pipeline->counters();
  k.coupon_uses = coupon_uses_.load(std::memory_order_relaxed);
  k.coupon_cancels = coupon_cancels_.load(std::memory_order_relaxed);
  k.coupon_uses_refused = coupon_uses_refused_.load(std::memory_order_relaxed);
  if (deployment_->addresses != nullptr) {
    const detail::AddressCounts a = deployment_->addresses->counts();
    k.address_requests = a.requests;
    k.address_calls = a.calls;
  }
  return k;
}

std::vector<LogBacklog> Engine::log_backlog() {
  check_open();
  return deployment_->pipeline->log_backlog();
}

void Engine::enable_tracing(std::size_t capacity) {
  check_open();
  deployment_->pipeline->trace_slot().enable(capacity);
}

void Engine::disable_tracing() { deployment_->pipeline->trace_slot().disable(); }

std::vector<TraceRecord> Engine::take_trace_records(std::size_t max, int64_t timeout_ms) {
  return deployment_->pipeline->trace_slot().take(max, timeout_ms);
}

TraceStats Engine::trace_stats() const { return deployment_->pipeline->trace_slot().stats(); }

std::vector<WriterInfo> Engine::writers(bool with_pending) {
  check_open();
  return deployment_->pipeline->writers(with_pending);
}

namespace {

bool is_stream_id(std::string_view id) {
  const std::size_t dash = id.find('-');
  if (id.size() > 41 || dash == std::string_view::npos || dash == 0 || dash + 1 == id.size()) return false;
  for (std::size_t i = 0; i < id.size(); ++i) {
    if (i != dash && (id[i] < '0' || id[i] > '9')) return false;
  }
  return id.size() - dash - 1 <= 20 && dash <= 20;
}

void check_dead_letter_id(const std::string& id) {
  if (!is_stream_id(id)) throw_invalid("a dead-letter id is a stream id '<ms>-<n>', got '" + id.substr(0, 64) + "'");
}

}  // namespace

std::vector<DeadLetter> Engine::list_dead_letters(int64_t campaign_id, const std::string& after, int64_t limit) {
  check_open();
  if (limit < 1 || limit > kDeadLettersPageMax) {
    throw_invalid("limit must be 1.." + std::to_string(kDeadLettersPageMax) + ", got " + std::to_string(limit));
  }
  if (campaign_id < 0) throw_not_found("campaign " + std::to_string(campaign_id) + " not found");
  if (!after.empty()) {
    const std::size_t colon = after.find(':');
    bool ok = false;
    if (campaign_id > 0) {
      ok = is_stream_id(after);
    } else if (colon != std::string::npos && colon > 0 && colon <= 10) {
      ok = after.find_first_not_of("0123456789") == colon && is_stream_id(std::string_view(after).substr(colon + 1));
    }
    if (!ok) {
      throw_invalid(std::string("after must be ") +
                    (campaign_id > 0 ? "a dead-letter id '<ms>-<n>'" : "'<campaign_id>:<dead-letter id>'") +
                    ", got '" + after.substr(0, 64) + "'");
    }
  }
  return deployment_->pipeline->list_dead_letters(campaign_id, after, static_cast<std::size_t>(limit));
}

DeadLetter Engine::get_dead_letter(int64_t campaign_id, const std::string& id) {
  check_open();
  check_dead_letter_id(id);
  return deployment_->pipeline->get_dead_letter(campaign_id, id);
}

DeadLetter Engine::redrive_dead_letter(int64_t campaign_id, const std::string& id) {
  check_open();
  check_dead_letter_id(id);
  return deployment_->pipeline->redrive_dead_letter(campaign_id, id);
}

DeadLetter Engine::drop_dead_letter(int64_t campaign_id, const std::string& id) {
  check_open();
  check_dead_letter_id(id);
  return deployment_->pipeline->drop_dead_letter(campaign_id, id);
}

const EngineHistograms& Engine::histograms() const { return deployment_->pipeline->histograms(); }
void Engine::set_batch_end_hook(std::function<void()> hook) { deployment_->pipeline->set_batch_end_hook(std::move(hook)); }

// ---- campaign rules ----------------------------------------------------------------------------

int64_t Engine::campaign_partner(int64_t campaign_id) {
  check_open();
  return deployment_->pipeline->campaign_partner(campaign_id);
}

void Engine::check_campaign_partner(int64_t partner_id, int64_t campaign_id) {
  // The message is the one an unknown campaign gets: existence is not leaked.
  if (campaign_partner(campaign_id) != partner_id) throw_not_found("campaign " + std::to_string(campaign_id) + " not found");
}

Campaign Engine::pause_campaign(int64_t partner_id, int64_t campaign_id) {
  check_open();
  return deployment_->pipeline->change_rules(partner_id, campaign_id, {CampaignState::kPaused, std::nullopt, std::nullopt});
}
Campaign Engine::resume_campaign(int64_t partner_id, int64_t campaign_id) {
  check_open();
  return deployment_->pipeline->change_rules(partner_id, campaign_id, {CampaignState::kActive, std::nullopt, std::nullopt});
}
Campaign Engine::close_campaign(int64_t partner_id, int64_t campaign_id) {
  check_open();
  return deployment_->pipeline->change_rules(partner_id, campaign_id, {CampaignState::kClosed, std::nullopt, std::nullopt});
}
Campaign Engine::set_campaign_quantity(int64_t partner_id, int64_t campaign_id, int64_t quantity) {
  check_open();
  check_quantity(quantity);
  return deployment_->pipeline->change_rules(partner_id, campaign_id, {std::nullopt, quantity, std::nullopt});
}
Campaign Engine::set_campaign_rate_limits(int64_t partner_id, int64_t campaign_id, int32_t per_user, int32_t per_partner,
                                          int32_t window_ms) {
  check_open();
  const Campaign c = deployment_->pipeline->get_campaign(campaign_id);
  if (c.spec.partner_id != partner_id) throw_not_found("campaign " + std::to_string(campaign_id) + " not found");
  check_rate_limits(per_user, per_partner, window_ms, c.spec.shards);
  return deployment_->pipeline->change_rules(partner_id, campaign_id,
                                             {std::nullopt, std::nullopt, detail::RateLimits{per_user, per_partner, window_ms}});
}

// ---- coupon lifecycle --------------------------------------------------------------------------

UseResult Engine::use_coupon(int64_t partner_id, const UseRequest& request) {
  check_open();
  try {
    UseResult r;
    if (request.traceparent.empty()) {
      r = deployment_->coupons->use(partner_id, request, now_us());
    } else {
      UseRequest traced = request;
      traced.traceparent = trace::normalize_traceparent(request.traceparent);
      r = deployment_->coupons->use(partner_id, traced, now_us());
    }
    coupon_uses_.fetch_add(1, std::memory_order_relaxed);
    return r;
  } catch (const Error&) {
    coupon_uses_refused_.fetch_add(1, std::memory_order_relaxed);
    throw;
  }
}
Coupon Engine::cancel_coupon_use(int64_t partner_id, int64_t coupon_id, const std::string& order_id,
                                 const std::string& traceparent) {
  check_open();
  // Checked here (malformed: ignored); the cancel's events carry it.
  const std::string trace_context = traceparent.empty() ? std::string() : trace::normalize_traceparent(traceparent);
  Coupon c = deployment_->coupons->cancel_use(partner_id, coupon_id, order_id, now_us(), trace_context);
  coupon_cancels_.fetch_add(1, std::memory_order_relaxed);
  return c;
}
Coupon Engine::get_coupon(int64_t partner_id, int64_t coupon_id) {
  check_open();
  return deployment_->coupons->get(partner_id, coupon_id, now_us());
}
CouponPage Engine::list_user_coupons(int64_t partner_id, const CouponQuery& query) {
  check_open();
  return deployment_->coupons->list_for_user(partner_id, query, now_us());
}
CouponCounts Engine::coupon_counts(int64_t partner_id, int64_t campaign_id) {
  check_open();
  return deployment_->coupons->counts(partner_id, campaign_id, now_us());
}
ExpireReport Engine::expire_coupons(int64_t now, int64_t chunk_rows, int64_t chunks_max) {
  check_open();
  return deployment_->coupons->expire(now, chunk_rows, chunks_max);
}

// ---- partners ----------------------------------------------------------------------------------

PartnerKey Engine::create_partner(const std::string& name) {
  check_open();
  return deployment_->partners->create(name);
}
PartnerKey Engine::rotate_partner_key(int64_t partner_id) {
  check_open();
  return deployment_->partners->rotate(partner_id);
}
Partner Engine::revoke_partner_keys(int64_t partner_id) {
  check_open();
  return deployment_->partners->revoke(partner_id);
}
Partner Engine::get_partner(int64_t partner_id) {
  check_open();
  return deployment_->partners->get(partner_id);
}
std::vector<Partner> Engine::list_partners(int64_t after_partner_id, int32_t limit) {
  check_open();
  return deployment_->partners->list(after_partner_id, limit);
}
Partner Engine::authenticate(std::string_view api_key) {
  check_open();
  return deployment_->partners->authenticate(api_key);
}
AuthCounters Engine::auth_counters() const { return deployment_->partners->counters(); }

// ---- life --------------------------------------------------------------------------------------

bool Engine::flush_answers() {
  check_open();
  windows::AnswerRecorder* r = deployment_->pipeline->answer_recorder();
  if (r == nullptr) return false;
  r->flush();
  return true;
}

std::optional<AnswerRecorderCounters> Engine::answer_counters() const {
  const windows::AnswerRecorder* r = deployment_->pipeline->answer_recorder();
  if (r == nullptr) return std::nullopt;
  return r->counters();
}

void Engine::close() {
  if (closed_.exchange(true, std::memory_order_acq_rel)) return;
  deployment_->close();
  deployment_->pipeline->trace_slot().disable();
}

bool Engine::closed() const noexcept { return closed_.load(std::memory_order_acquire); }

void count_results(EngineCounters& k, const std::vector<IssueResult>& results, bool fast_path) {
  k.requests += results.size();
  if (fast_path) k.fast_path += results.size();
  for (const IssueResult& r : results) k.by_status[static_cast<int>(r.status)]++;
  k.issued = k.by_status[static_cast<int>(IssueStatus::kIssued)];
}

const char* coupon_state_name(CouponState s) noexcept {
  switch (s) {
    case CouponState::kIssued: return "issued";
    case CouponState::kUsed: return "used";
    case CouponState::kExpired: return "expired";
  }
  return "unknown";
}

}  // namespace couponcore
