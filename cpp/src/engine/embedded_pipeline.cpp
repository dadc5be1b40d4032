// The embedded pipeline: in-process gate (gate/campaign_gate) + SQLite (store/sqlite), with
// group commit. The grant log is the commit itself: a grant exists iff its row is committed.
//
// Callers queue their requests (a BoundedQueue, util/bounded_queue.hpp). One committer thread
// takes everything queued (up to kCommitBatchRequestsMax requests), decides it under the gate
// lock, writes the batch's grants in one SQLite transaction, and only then answers the callers:
// an ISSUED answer is always durable, and durability costs one commit per batch. If the commit
// fails, the touched campaigns are rebuilt from the store (which rolled back) and every caller
// of the batch gets the error: nothing was granted.
//
// Once a campaign's sold-out state is durable, submit answers in the caller's thread (no queue
// hop, no commit): the decision can no longer grant.
//
// Campaign rules (pause / resume / close / set_quantity / rate limits) take the gate lock, write the store,
// then change the gate, all under that lock: no decision sees one without the other, and a
// failed write leaves the gate as it was. Raising the quantity clears the sold-out fast path.
//
// open_embedded() wires the deployment: this pipeline, and the coupon lifecycle
// (coupons/coupon_service) and partners (auth/partner_service) on the same SQLite file through
// store/sqlite/sqlite_coupons and store/sqlite/sqlite_partners.
#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <atomic>
#include <cassert>
#include <chrono>
#include <condition_variable>
#include <mutex>
#include <thread>
#include <unordered_map>
#include <unordered_set>

#include "auth/partner_service.hpp"
#include "coupons/coupon_service.hpp"
#include "couponcore/engine.hpp"
#include "couponcore/error.hpp"
#include "couponcore/limits.hpp"
#include "engine/pipeline.hpp"
#include "gate/campaign_gate.hpp"
#include "store/sqlite/sqlite_coupons.hpp"
#include "store/sqlite/sqlite_events.hpp"
#include "store/sqlite/sqlite_partners.hpp"
#include "store/sqlite/sqlite_store.hpp"
#include "util/assert.hpp"
#include "util/bounded_queue.hpp"
#include "windows/sources.hpp"

namespace couponcore {

namespace {

constexpr std::size_t kQueuedRequestsMax = 1'000'000;  // beyond this, submitters wait
constexpr int64_t kQueueFullWaitMs = 10'000;

// One file, one engine: the gate lives in this process's memory, so a second engine on the
// same file (another process, or a forked child) would decide from stale counters. An
// exclusive flock on "<path>.lock" refuses the second open with kConflict. (The lock is a
// separate file: closing any descriptor of the database itself would drop SQLite's POSIX locks.)
class FileLock {
 public:
  explicit FileLock(const std::string& db_path) {
    if (db_path == ":memory:" || db_path.empty()) return;
    const std::string path = db_path + ".lock";
    fd_ = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (fd_ < 0) throw_unavailable("cannot open " + path + ": " + std::strerror(errno));
    if (::flock(fd_, LOCK_EX | LOCK_NB) != 0) {
      char owner[32] = {0};
      ssize_t n = ::pread(fd_, owner, sizeof(owner) - 1, 0);
      ::close(fd_);
      fd_ = -1;
      throw_conflict(db_path + " is already open by another couponcore engine" +
                     (n > 0 ? " (process " + std::string(owner, static_cast<std::size_t>(n)) + ")" : std::string()) +
                     "; one embedded file has one engine: share that engine, or use the production deployment");
    }
    std::string pid = std::to_string(::getpid());
    if (::ftruncate(fd_, 0) == 0) (void)!::pwrite(fd_, pid.data(), pid.size(), 0);
  }
  ~FileLock() { release(); }
  void release() {
    if (fd_ >= 0) ::close(fd_);  // releases the flock
    fd_ = -1;
  }
  FileLock(const FileLock&) = delete;
  FileLock& operator=(const FileLock&) = delete;

 private:
  int fd_ = -1;
};

class EmbeddedPipeline final : public detail::Pipeline {
 public:
  EmbeddedPipeline(SqliteStore& store, FileLock& file_lock)
      : store_(store), file_lock_(file_lock), queue_("issue", kQueuedRequestsMax, kQueueFullWaitMs) {
    for (Campaign& c : store_.load_campaigns()) {
      const int64_t id = c.id;
      auto entry = std::make_unique<Entry>(std::move(c));
      store_.for_each_grant(id, [&](const Grant& g) { entry->gate.restore(g); });
      entry->sold_out_durable = entry->gate.sold_out();
      gates_.emplace(id, std::move(entry));
    }
    thread_ = std::thread([this] { run(); });
  }

  ~EmbeddedPipeline() override { close(); }

  const char* kind() const noexcept override { return "embedded"; }

  Campaign create_campaign(const CampaignSpec& spec) override {
    CampaignSpec one = spec;
    one.shards = 1;  // accepted (checked by the facade); one in-process gate decides every request
    Campaign c = store_.insert_campaign(one, now_us());
    std::lock_guard lock(gate_mu_);
    gates_.emplace(c.id, std::make_unique<Entry>(c));
    return c;
  }

  Campaign get_campaign(int64_t campaign_id) override {
    std::lock_guard lock(gate_mu_);
    return entry_locked(campaign_id).gate.campaign();
  }

  std::vector<Campaign> list_campaigns(int64_t partner_id) override {
    std::vector<Campaign> out;
    {
      std::lock_guard lock(gate_mu_);
      for (const auto& [id, e] : gates_) {
        if (e->gate.campaign().spec.partner_id == partner_id) out.push_back(e->gate.campaign());
      }
    }
    std::sort(out.begin(), out.end(), [](const Campaign& a, const Campaign& b) { return a.id < b.id; });
    return out;
  }

  int64_t campaign_partner(int64_t campaign_id) override {
    std::lock_guard lock(gate_mu_);
    return entry_locked(campaign_id).gate.campaign().spec.partner_id;
  }

  void submit(int64_t campaign_id, std::vector<IssueRequest> requests, IssueCallback cb) override {
    {
      std::unique_lock lock(gate_mu_);
      Entry& e = entry_locked(campaign_id);
      if (e.sold_out_durable) {
        std::vector<IssueResult> results;
        results.reserve(requests.size());
        const int64_t now = now_us();
        for (const IssueRequest& r : requests) results.push_back(e.gate.decide(r, now, nullptr));
        lock.unlock();
        count(results, /*fast=*/true);
        histograms_.issue_latency_seconds.observe(0, results.size());
        record_answers(campaign_id, results, 0);
        cb(std::move(results), nullptr);
        run_batch_end_hook();
        return;
      }
    }
    const std::size_t n = requests.size();
    queue_.push(Pending{campaign_id, std::move(requests), std::move(cb), std::chrono::steady_clock::now()}, n);
  }

  CampaignStats campaign_stats(int64_t campaign_id) override {
    {
      std::lock_guard lock(gate_mu_);
      entry_locked(campaign_id);
    }
    return store_.stats(campaign_id);
  }

  // Every acknowledged grant is already durable in the embedded deployment.
  bool drain(double) override { return true; }

  void close() override {
    if (closing_.exchange(true)) return;
    queue_.close();
    if (thread_.joinable()) thread_.join();
    file_lock_.release();  // nothing writes any more: another engine may open the file
  }

  int64_t gate_issued(int64_t campaign_id) override {
    std::lock_guard lock(gate_mu_);
    return entry_locked(campaign_id).gate.issued();
  }

  // The gate and the store share one process and one commit, so there is no log to re-drive:
  // this only compares the gate's counter with the rows.
  ReconcileReport reconcile(int64_t campaign_id) override {
    ReconcileReport rep;
    rep.campaign_id = campaign_id;
    {
      std::lock_guard lock(gate_mu_);
      rep.gate_issued = entry_locked(campaign_id).gate.issued();
    }
    CampaignStats st = store_.stats(campaign_id);
    rep.store_rows = st.rows;
    rep.store_distinct_users = st.distinct_users;
    rep.store_max_seq = st.max_seq;
    rep.missing_in_store = std::max<int64_t>(0, rep.gate_issued - st.rows);
    rep.unexpected_in_store = std::max<int64_t>(0, st.max_seq - rep.gate_issued);
    rep.consistent = st.rows == rep.gate_issued && st.max_seq == rep.gate_issued;
    return rep;
  }

  // Closed is final; a quantity never goes below the gate's count, which includes grants
  // decided but still being committed. The store first: if it throws, the gate is unchanged.
  Campaign change_rules(int64_t partner_id, int64_t campaign_id, const detail::RuleChange& change) override {
    std::lock_guard lock(gate_mu_);
    Entry& e = entry_for_locked(partner_id, campaign_id);
    const Campaign& c = e.gate.campaign();
    if (change.state && *change.state == c.state && !change.quantity && !change.rate) return c;  // a repeat
    if (c.state == CampaignState::kClosed) {
      throw_conflict("campaign " + std::to_string(campaign_id) + " is closed; closing is final");
    }
    if (change.state) {
      store_.update_campaign_state(campaign_id, *change.state);
      e.gate.set_state(*change.state);
    }
    if (change.quantity) {
      const int64_t quantity = *change.quantity;
      if (quantity < static_cast<int64_t>(e.gate.issued())) {
        throw_conflict("campaign " + std::to_string(campaign_id) + ": quantity " + std::to_string(quantity) +
                       " is below the " + std::to_string(e.gate.issued()) + " coupons already issued");
      }
      store_.update_campaign_quantity(campaign_id, quantity);
      e.gate.set_quantity(quantity);
      if (!e.gate.sold_out()) e.sold_out_durable = false;  // back to the queue path: it can grant again
    }
    if (change.rate) {
      const detail::RateLimits& r = *change.rate;
      store_.update_campaign_rate_limits(campaign_id, r.per_user, r.per_partner, r.window_ms);
      e.gate.set_rate_limits(r.per_user, r.per_partner, r.window_ms);
    }
    return e.gate.campaign();
  }

  // No log to fall behind: a grant is answered once its group commit is in SQLite.
  std::vector<LogBacklog> log_backlog() override { return {}; }

  // No grant log: a grant is in the store when it is answered, so nothing is ever dead-lettered.
  std::vector<DeadLetter> list_dead_letters(int64_t, const std::string&, std::size_t) override { return {}; }
  DeadLetter get_dead_letter(int64_t campaign_id, const std::string& id) override { no_dead_letter(campaign_id, id); }
  DeadLetter redrive_dead_letter(int64_t campaign_id, const std::string& id) override {
    no_dead_letter(campaign_id, id);
  }
  DeadLetter drop_dead_letter(int64_t campaign_id, const std::string& id) override { no_dead_letter(campaign_id, id); }

  [[noreturn]] static void no_dead_letter(int64_t campaign_id, const std::string& id) {
    throw_not_found("dead letter " + id + " of campaign " + std::to_string(campaign_id) +
                    " not found (the embedded engine has no grant log, so no dead letters)");
  }

  EngineCounters counters() const override {
    EngineCounters k;
    {
      std::lock_guard lock(counters_mu_);
      k = counters_;
    }
    k.queued_requests = queue_.depth();
    k.queue_refused = queue_.refused();
    return k;
  }

 private:
  struct Entry {
    explicit Entry(Campaign c) : gate(std::move(c)) {}
    CampaignGate gate;
    bool sold_out_durable = false;  // set after the commit that sold it out
    bool stale = false;             // a commit failed and the store could not be re-read
  };

  struct Pending {
    int64_t campaign_id;
    std::vector<IssueRequest> requests;
    IssueCallback cb;
    std::chrono::steady_clock::time_point submitted_at;
  };

  void count(const std::vector<IssueResult>& results, bool fast) {
    std::lock_guard lock(counters_mu_);
    count_results(counters_, results, fast);
  }

  Entry& entry_locked(int64_t campaign_id) {
    auto it = gates_.find(campaign_id);
    if (it == gates_.end()) throw_not_found("campaign " + std::to_string(campaign_id) + " not found");
    return *it->second;
  }

  // Another partner's campaign gets the unknown campaign's error, word for word.
  Entry& entry_for_locked(int64_t partner_id, int64_t campaign_id) {
    auto it = gates_.find(campaign_id);
    if (it == gates_.end() || it->second->gate.campaign().spec.partner_id != partner_id) {
      throw_not_found("campaign " + std::to_string(campaign_id) + " not found");
    }
    return *it->second;
  }

  void run() {
    std::vector<std::pair<Pending, std::size_t>> taken;
    std::vector<Pending> batch;
    while (queue_.pop(&taken, limits::kCommitBatchRequestsMax)) {
      for (auto& [p, n] : taken) batch.push_back(std::move(p));
      taken.clear();
      process(batch);
      batch.clear();
    }
  }

  void process(std::vector<Pending>& batch) {
    std::vector<std::vector<IssueResult>> results(batch.size());
    std::vector<std::exception_ptr> errors(batch.size());
    std::vector<Grant> grants;
    std::unordered_set<int64_t> touched;
    const int64_t now = now_us();
    TraceBuffer* const tracer = trace_slot_.get();  // null: tracing off, nothing noted
    std::vector<TraceRecord> decided;                // tracing: one gate record per campaign
    {
      std::lock_guard lock(gate_mu_);
      for (std::size_t i = 0; i < batch.size(); ++i) {
        auto it = gates_.find(batch[i].campaign_id);
        CC_ASSERT(it != gates_.end(), "a queued campaign vanished: campaigns are never removed");
        Entry& e = *it->second;
        if (e.stale && !rebuild_locked(e)) {
          errors[i] = std::make_exception_ptr(
              Error(ErrorCode::kUnavailable, "the store cannot be read to restore the campaign"));
          continue;
        }
        touched.insert(batch[i].campaign_id);
        results[i].reserve(batch[i].requests.size());
        const std::size_t grants_before = grants.size();
        for (const IssueRequest& r : batch[i].requests) results[i].push_back(e.gate.decide(r, now, &grants));
        check_decisions(e.gate, results[i], grants, grants_before);
        if (tracer) note_decided(decided, batch[i].campaign_id, batch[i].requests);
      }
    }
    std::exception_ptr commit_error;
    const int64_t commit_start = tracer ? now_us() : 0;
    for (TraceRecord& r : decided) {
      r.start_us = now;
      r.end_us = commit_start;
      tracer->put(std::move(r));
    }
    try {
      store_.write_grants(grants);
    } catch (const std::exception& e) {
      commit_error = std::current_exception();
      log(LogLevel::kError, "embedded", std::string("group commit of ") + std::to_string(grants.size()) +
                                            " grants failed; the batch is refused: " + e.what());
    } catch (...) {
      commit_error = std::current_exception();
    }
    std::size_t batch_requests = 0;
    for (const Pending& p : batch) batch_requests += p.requests.size();
    histograms_.batch_requests.observe(static_cast<double>(batch_requests));
    if (!grants.empty() && !commit_error) histograms_.commit_grants.observe(static_cast<double>(grants.size()));
    if (tracer && !grants.empty() && !commit_error) {
      TraceRecord r;
      r.kind = TraceKind::kWriterCommit;
      r.start_us = commit_start;
      r.end_us = now_us();
      r.items = static_cast<int64_t>(grants.size());
      r.campaign_ids.assign(touched.begin(), touched.end());
      for (const Grant& g : grants) add_trace_link(r, g.traceparent);
      tracer->put(std::move(r));
    }
    {
      std::lock_guard lock(gate_mu_);
      for (int64_t id : touched) {
        Entry& e = *gates_.at(id);
        if (commit_error) {
          rebuild_locked(e);
        } else if (e.gate.sold_out()) {
          e.sold_out_durable = true;
        }
      }
    }
    {
      std::lock_guard lock(counters_mu_);
      counters_.batches++;
      if (!grants.empty()) (commit_error ? counters_.commit_failures : counters_.commits)++;
    }
    const auto answered_at = std::chrono::steady_clock::now();
    for (std::size_t i = 0; i < batch.size(); ++i) {
      std::exception_ptr err = errors[i] ? errors[i] : commit_error;
      const auto latency = answered_at - batch[i].submitted_at;
      if (!err) {
        count(results[i], /*fast=*/false);
        record_answers(batch[i].campaign_id, results[i],
                       std::chrono::duration_cast<std::chrono::microseconds>(latency).count());
      }
      histograms_.issue_latency_seconds.observe(std::chrono::duration<double>(latency).count(),
                                                batch[i].requests.size());
      if (err) {
        batch[i].cb({}, err);
      } else {
        batch[i].cb(std::move(results[i]), nullptr);
      }
    }
    run_batch_end_hook();
  }

  // Tracing: a submission's requests join its campaign's gate record of this batch.
  static void note_decided(std::vector<TraceRecord>& decided, int64_t campaign_id, const std::vector<IssueRequest>& requests) {
    auto it = std::find_if(decided.begin(), decided.end(), [&](const TraceRecord& r) { return r.campaign_ids[0] == campaign_id; });
    if (it == decided.end()) {
      decided.emplace_back();
      decided.back().campaign_ids.push_back(campaign_id);
      it = decided.end() - 1;
    }
    it->items += static_cast<int64_t>(requests.size());
    for (const IssueRequest& q : requests) add_trace_link(*it, q.traceparent);
  }

  // The gate's side of a batch: never more than the quantity, every ISSUED answer has the grant
  // appended for it, seqs in 1..issued.
  static void check_decisions(const CampaignGate& gate, const std::vector<IssueResult>& results,
                              const std::vector<Grant>& grants, std::size_t grants_before) {
    if constexpr (kAssertions) {
      const Campaign& c = gate.campaign();
      CC_ASSERT(static_cast<int64_t>(gate.issued()) <= c.spec.quantity, "the gate issued more than the quantity");
      std::size_t issued = 0;
      for (const IssueResult& r : results) {
        if (r.status != IssueStatus::kIssued) continue;
        ++issued;
        CC_ASSERT(r.seq >= 1 && r.seq <= gate.issued(), "an ISSUED seq outside 1..issued");
      }
      CC_ASSERT(grants.size() - grants_before <= issued, "a grant without an ISSUED answer");
    }
  }

  // After a failed commit the store rolled back: rebuild the gate from what it holds. If the
  // store cannot be read either, the entry stays stale and is not decided on until it can. The
  // rate window's counters are kept (requests of the failed batch stay counted): they are not
  // in the store, and starting them from zero would let the window admit its limit again.
  bool rebuild_locked(Entry& e) {
    CampaignGate fresh(e.gate.campaign());
    try {
      store_.for_each_grant(fresh.campaign().id, [&](const Grant& g) { fresh.restore(g); });
    } catch (...) {
      e.stale = true;
      return false;
    }
    fresh.keep_rate_counts(e.gate);
    e.gate = std::move(fresh);
    e.stale = false;
    e.sold_out_durable = e.gate.sold_out();
    return true;
  }

  SqliteStore& store_;
  FileLock& file_lock_;
  std::mutex gate_mu_;  // guards gates_ and every Entry
  std::unordered_map<int64_t, std::unique_ptr<Entry>> gates_;

  BoundedQueue<Pending> queue_;
  std::atomic<bool> closing_{false};
  std::thread thread_;

  mutable std::mutex counters_mu_;
  EngineCounters counters_;
};

// The embedded deployment's parts, in the order they are built (and the reverse of teardown):
// the file lock before anything touches the file, the pipeline last.
struct EmbeddedDeployment final : detail::Deployment {
  explicit EmbeddedDeployment(const EmbeddedOptions& options)
      : file_lock(options.path),
        store(options.path, options.synchronous_full, options.events),
        coupon_store(store),
        partner_store(store),
        coupon_service(coupon_store),
        partner_service(partner_store, options.auth),
        recorder(options.windows && options.path != ":memory:"
                     ? std::make_unique<windows::AnswerRecorder>(
                           std::make_unique<windows::SqliteAnswerSink>(options.path),
                           windows::RecorderOptions{options.windows_flush_ms})
                     : nullptr),
        embedded(store, file_lock),
        event_hub(sqlite_events::make_hub(store.db(), store.mutex())) {
    embedded.set_answer_recorder(recorder.get());
    if (!recorder && options.path != ":memory:") {  // the windows' tables, whether recorded or not
      std::lock_guard lock(store.mutex());
      store.db().migrate(windows::sqlite_windows_migrations());
    }
    pipeline = &embedded;
    coupons = &coupon_service;
    partners = &partner_service;
    events = event_hub.get();
  }
  FileLock file_lock;
  SqliteStore store;
  SqliteCouponStore coupon_store;
  SqlitePartnerStore partner_store;
  CouponService coupon_service;
  auth::PartnerService partner_service;
  std::unique_ptr<windows::AnswerRecorder> recorder;  // outlives the pipeline that feeds it
  EmbeddedPipeline embedded;
  std::unique_ptr<EventHub> event_hub;

  void close() override {
    embedded.close();
    if (recorder) recorder->stop();  // the last records, after the last answers
  }
};

}  // namespace

std::unique_ptr<Engine> open_embedded(const EmbeddedOptions& options) {
  return std::make_unique<Engine>(std::make_unique<EmbeddedDeployment>(options));
}

}  // namespace couponcore
