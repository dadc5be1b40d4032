// The pipeline of one deployment: the flow of a grant (gate -> log -> writer -> store) behind
// one small interface, with two implementations:
//
//   EmbeddedPipeline  (engine/embedded_pipeline.cpp)  in-process gate (gate/campaign_gate),
//                     group commit into SQLite (store/sqlite): the log is the commit itself
//   RedisPipeline     (engine/redis_pipeline.cpp)     Redis gate (gate/redis_gate), grant log
//                     as Redis Streams (log/), writers (writer/), PostgreSQL (store/postgres)
//
// The Engine (couponcore/engine.hpp, engine/engine.cpp) is a facade over a Deployment: one
// pipeline plus the services that do not depend on it (coupons after issue, partners). The
// facade validates arguments and checks that the engine is open, once, for both deployments;
// the pipeline only does what differs between them.
#pragma once

#include <functional>
#include <memory>
#include <optional>
#include <string_view>
#include <vector>

#include "couponcore/engine.hpp"
#include "couponcore/events.hpp"
#include "couponcore/metrics.hpp"

namespace couponcore {

class CouponService;
namespace windows {
class AnswerRecorder;
void record_answers(AnswerRecorder* recorder, int64_t campaign_id, const std::vector<IssueResult>& results,
                    int64_t latency_us);
void set_event_clock(AnswerRecorder* recorder, int64_t server_now_us);
}
namespace auth {
class PartnerService;
}

namespace detail {

// A campaign's rate limits (CampaignSpec::rate_limit_per_user / _per_partner / rate_window_ms).
struct RateLimits {
  int32_t per_user = 0;
  int32_t per_partner = 0;
  int32_t window_ms = 1000;
};

// A change of a campaign's rules; any part may be absent.
struct RuleChange {
  std::optional<CampaignState> state;
  std::optional<int64_t> quantity;
  std::optional<RateLimits> rate;
};

class Pipeline {
 public:
  virtual ~Pipeline() = default;
  Pipeline() = default;
  Pipeline(const Pipeline&) = delete;
  Pipeline& operator=(const Pipeline&) = delete;

  virtual const char* kind() const noexcept = 0;

  // Campaigns: the spec and the partner were checked by the facade.
  virtual Campaign create_campaign(const CampaignSpec& spec) = 0;
  virtual Campaign get_campaign(int64_t campaign_id) = 0;
  virtual std::vector<Campaign> list_campaigns(int64_t partner_id) = 0;
  virtual int64_t campaign_partner(int64_t campaign_id) = 0;
  // Closed is final (kConflict); a quantity is never below the coupons issued (kConflict);
  // another partner's campaign is kNotFound. Repeating the current rules changes nothing.
  virtual Campaign change_rules(int64_t partner_id, int64_t campaign_id, const RuleChange& change) = 0;

  // Issuance: requests were checked by the facade (non-empty, within limits). The callback
  // runs exactly once, on the pipeline's thread or (fast path) in the caller's.
  virtual void submit(int64_t campaign_id, std::vector<IssueRequest> requests, IssueCallback cb) = 0;
  virtual CampaignStats campaign_stats(int64_t campaign_id) = 0;
  // Coupons the gate has granted (durable, not necessarily in the store yet); -1 when the gate's
  // state is not loaded now (production: the campaign's Redis mirror is missing).
  virtual int64_t gate_issued(int64_t campaign_id) = 0;
  virtual bool drain(double timeout_s) = 0;
  virtual ReconcileReport reconcile(int64_t campaign_id) = 0;

  virtual EngineCounters counters() const = 0;
  // The grant log's backlog per campaign (production); empty where the commit is the log.
  virtual std::vector<LogBacklog> log_backlog() = 0;
  // The grant writers by heartbeat (production); empty where there are none.
  virtual std::vector<WriterInfo> writers(bool with_pending) { return {}; }
  // Dead letters: arguments checked by the facade (ids are stream ids, 1 <= limit).
  virtual std::vector<DeadLetter> list_dead_letters(int64_t campaign_id, const std::string& after, std::size_t limit) = 0;
  virtual DeadLetter get_dead_letter(int64_t campaign_id, const std::string& id) = 0;
  virtual DeadLetter redrive_dead_letter(int64_t campaign_id, const std::string& id) = 0;
  virtual DeadLetter drop_dead_letter(int64_t campaign_id, const std::string& id) = 0;
  // Finishes what was queued, then stops the pipeline's threads. Idempotent.
  virtual void close() = 0;

  EngineHistograms& histograms() { return histograms_; }
  // The live windows' answer records (windows/answer_recorder.hpp); null when windows=false.
  // Set by the deployment before the first submission.
  void set_answer_recorder(windows::AnswerRecorder* recorder) { recorder_ = recorder; }
  windows::AnswerRecorder* answer_recorder() const { return recorder_; }
  // On the answering thread, once per answered submission (latency: submit -> answer).
  void record_answers(int64_t campaign_id, const std::vector<IssueResult>& results, int64_t latency_us) {
    if (recorder_) windows::record_answers(recorder_, campaign_id, results, latency_us);
  }
  // The gate's clock (production: Redis TIME from a gate reply) becomes the answers' event clock.
  void note_gate_clock(int64_t server_now_us) {
    if (recorder_) windows::set_event_clock(recorder_, server_now_us);
  }
  // Tracing: the gate and the writers note their batches in trace_slot().get() when it is set.
  TraceSlot& trace_slot() { return trace_slot_; }
  void set_batch_end_hook(std::function<void()> hook) { batch_end_hook_ = std::move(hook); }
  // After each batch of callbacks, on the thread that ran them.
  void run_batch_end_hook() {
    if (batch_end_hook_) batch_end_hook_();
  }

 protected:
  EngineHistograms histograms_;
  TraceSlot trace_slot_;

 private:
  std::function<void()> batch_end_hook_;
  windows::AnswerRecorder* recorder_ = nullptr;
};

// The per-client-address limit of the HTTP layer, shared by the deployment's processes
// (production: redis/address_limit.hpp). Arguments were checked by the facade.
struct AddressCounts {
  uint64_t requests = 0;  // refuse_ms calls
  uint64_t calls = 0;     // round trips that counted them (batches)
};
struct AddressCounter {
  virtual ~AddressCounter() = default;
  // 0: admitted and counted; else the ms to the window's end, in (0, window_ms].
  virtual int64_t refuse_ms(std::string_view address, int32_t limit, int32_t window_ms) = 0;
  virtual AddressCounts counts() const = 0;
};

// What an engine is made of; the concrete deployment owns the parts (and orders their lifetimes).
struct Deployment {
  virtual ~Deployment() = default;
  // Stops the pipeline; a deployment also gives back what its services hold (connections).
  virtual void close() { pipeline->close(); }
  Pipeline* pipeline = nullptr;
  CouponService* coupons = nullptr;
  auth::PartnerService* partners = nullptr;
  EventHub* events = nullptr;  // domain events (couponcore/events.hpp)
  AddressCounter* addresses = nullptr;  // null: the deployment counts no addresses (embedded)
};

}  // namespace detail
}  // namespace couponcore
