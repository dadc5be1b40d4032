// The engine: one API over two deployments.
//
//   open_embedded(options)    in-process gate + SQLite file, group commit (the default)
//   open_production(options)  Redis gate (batched Lua) + Redis Streams grant log + PostgreSQL
//
// Callers submit issue requests for one campaign; the engine's own thread gathers concurrent
// submissions into batches, decides a batch in one atomic step, makes its grants durable, then
// runs each submission's callback. issue() and issue_many() are the blocking faces of
// submit_issue(); asyncio futures are resolved from the callbacks (python/bindings).
#pragma once

#include <exception>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "couponcore/metrics.hpp"
#include "couponcore/types.hpp"

namespace couponcore {

// Runs on the engine's thread. results.size() == the number of requests submitted, in order,
// unless error is set (then results is empty and nothing of this submission was granted).
// Monotonic counters since open; metrics are built on them.
struct EngineCounters {
  uint64_t requests = 0;           // issue requests decided
  uint64_t issued = 0;             // of which ISSUED
  uint64_t batches = 0;            // decision batches (one atomic step each)
  uint64_t commits = 0;            // durable writes of grants (group commits / Lua calls)
  uint64_t fast_path = 0;          // requests answered without a round trip (sold out)
  uint64_t commit_failures = 0;    // batches whose grants could not be made durable
  uint64_t by_status[5] = {0, 0, 0, 0, 0};  // indexed by IssueStatus
};

using IssueCallback = std::function<void(std::vector<IssueResult>&& results, std::exception_ptr error)>;

class Engine {
 public:
  virtual ~Engine() = default;
  Engine() = default;
  Engine(const Engine&) = delete;
  Engine& operator=(const Engine&) = delete;

  virtual const char* kind() const noexcept = 0;  // "embedded" or "production"

  // Campaigns.
  virtual Campaign create_campaign(const CampaignSpec& spec) = 0;
  virtual Campaign get_campaign(int64_t campaign_id) = 0;
  virtual std::vector<Campaign> list_campaigns(int64_t partner_id) = 0;

  // Issuance. submit_issue validates its arguments in the caller's thread (throwing Error) and
  // queues them; the callback runs later on the engine's thread, exactly once.
  virtual void submit_issue(int64_t campaign_id, std::vector<IssueRequest> requests, IssueCallback cb) = 0;
  IssueResult issue(int64_t campaign_id, IssueRequest request);
  std::vector<IssueResult> issue_many(int64_t campaign_id, std::vector<IssueRequest> requests);

  // What the store holds for a campaign (after drain(), everything granted so far).
  virtual CampaignStats campaign_stats(int64_t campaign_id) = 0;
  // Waits until every grant acknowledged so far is in the store; false on timeout.
  virtual bool drain(double timeout_s) = 0;

  virtual EngineCounters counters() const = 0;
  // Latency and batch-size histograms; engines record into them (thread-safe, lock-free).
  const EngineHistograms& histograms() const { return histograms_; }

  // Stops the engine's threads after finishing what was queued; later calls throw kClosed.
  virtual void close() = 0;
  virtual bool closed() const noexcept = 0;

  // Called on the engine's thread after each batch of callbacks (the asyncio binding uses it to
  // wake the event loop once per batch). Set it before the first submit.
  void set_batch_end_hook(std::function<void()> hook) { batch_end_hook_ = std::move(hook); }

 protected:
  void run_batch_end_hook() {
    if (batch_end_hook_) batch_end_hook_();
  }

  EngineHistograms histograms_;

 private:
  std::function<void()> batch_end_hook_;
};

struct EmbeddedOptions {
  std::string path = "couponcore.db";  // ":memory:" for a throwaway engine
  bool synchronous_full = true;        // PRAGMA synchronous=FULL (durable at commit)
};

std::unique_ptr<Engine> open_embedded(const EmbeddedOptions& options);

// Microseconds since the Unix epoch, from the system clock.
int64_t now_us();

}  // namespace couponcore
