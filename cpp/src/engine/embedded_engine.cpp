// The embedded engine: in-process gate + SQLite, with group commit.
//
// Callers validate and queue their requests (submit_issue). One committer thread takes
// everything queued (up to kCommitBatchRequestsMax requests), decides it under the gate lock,
// writes the batch's grants in one SQLite transaction, and only then answers the callers: an
// ISSUED answer is always durable, and durability costs one commit per batch. If the commit
// fails, the touched campaigns are rebuilt from the store (which rolled back) and every caller
// of the batch gets the error: nothing was granted.
//
// Once a campaign's sold-out state is durable, submit_issue answers in the caller's thread
// (no queue hop, no commit): the decision can no longer grant.
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

#include "couponcore/engine.hpp"
#include "couponcore/error.hpp"
#include "couponcore/limits.hpp"
#include "gate/campaign_gate.hpp"
#include "store/sqlite_store.hpp"
#include "util/validate.hpp"

namespace couponcore {

namespace {

constexpr std::size_t kQueuedRequestsMax = 1'000'000;  // beyond this, submitters wait
constexpr auto kQueueFullWait = std::chrono::seconds(10);

void check_requests(const std::vector<IssueRequest>& requests) {
  if (requests.size() > limits::kIssueBatchMax) {
    throw_invalid("a batch holds at most " + std::to_string(limits::kIssueBatchMax) +
                  " requests, got " + std::to_string(requests.size()));
  }
  for (const IssueRequest& r : requests) {
    limits::check_user_id(r.user_id);
    if (!r.request_id.empty()) limits::check_request_id(r.request_id);
  }
}

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

class EmbeddedEngine final : public Engine {
 public:
  explicit EmbeddedEngine(const EmbeddedOptions& options)
      : file_lock_(options.path), store_(options.path, options.synchronous_full) {
    for (Campaign& c : store_.load_campaigns()) {
      const int64_t id = c.id;
      auto entry = std::make_unique<Entry>(std::move(c));
      store_.for_each_grant(id, [&](const Grant& g) { entry->gate.restore(g); });
      entry->sold_out_durable = entry->gate.sold_out();
      gates_.emplace(id, std::move(entry));
    }
    thread_ = std::thread([this] { run(); });
  }

  ~EmbeddedEngine() override { close(); }

  const char* kind() const noexcept override { return "embedded"; }

  Campaign create_campaign(const CampaignSpec& spec) override {
    check_open();
    check_campaign_spec(spec);
    Campaign c = store_.insert_campaign(spec, now_us());
    std::lock_guard lock(gate_mu_);
    gates_.emplace(c.id, std::make_unique<Entry>(c));
    return c;
  }

  Campaign get_campaign(int64_t campaign_id) override {
    check_open();
    std::lock_guard lock(gate_mu_);
    return entry_locked(campaign_id).gate.campaign();
  }

  std::vector<Campaign> list_campaigns(int64_t partner_id) override {
    check_open();
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

  void submit_issue(int64_t campaign_id, std::vector<IssueRequest> requests, IssueCallback cb) override {
    check_open();
    check_requests(requests);
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
        cb(std::move(results), nullptr);
        run_batch_end_hook();
        return;
      }
    }
    std::unique_lock lock(queue_mu_);
    if (!space_cv_.wait_for(lock, kQueueFullWait, [&] {
          return stopping_ || queued_requests_ + requests.size() <= kQueuedRequestsMax;
        })) {
      throw_unavailable("the issue queue is full (" + std::to_string(kQueuedRequestsMax) +
                        " requests waiting); try again");
    }
    if (stopping_) throw Error(ErrorCode::kClosed, "the engine is closed");
    queued_requests_ += requests.size();
    queue_.push_back(Pending{campaign_id, std::move(requests), std::move(cb), std::chrono::steady_clock::now()});
    work_cv_.notify_one();
  }

  CampaignStats campaign_stats(int64_t campaign_id) override {
    check_open();
    {
      std::lock_guard lock(gate_mu_);
      entry_locked(campaign_id);
    }
    return store_.stats(campaign_id);
  }

  // Every acknowledged grant is already durable in the embedded engine.
  bool drain(double) override {
    check_open();
    return true;
  }

  void close() override {
    {
      std::lock_guard lock(queue_mu_);
      if (stopping_) return;
      stopping_ = true;
      work_cv_.notify_all();
      space_cv_.notify_all();
    }
    if (thread_.joinable()) thread_.join();
    closed_ = true;
    file_lock_.release();  // nothing writes any more: another engine may open the file
  }

  bool closed() const noexcept override { return closed_; }

  // The gate and the store share one process and one commit, so there is no log to re-drive:
  // this only compares the gate's counter with the rows.
  ReconcileReport reconcile(int64_t campaign_id) override {
    check_open();
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

  EngineCounters counters() const override {
    std::lock_guard lock(counters_mu_);
    return counters_;
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
    counters_.requests += results.size();
    if (fast) counters_.fast_path += results.size();
    for (const IssueResult& r : results) counters_.by_status[static_cast<int>(r.status)]++;
    counters_.issued = counters_.by_status[static_cast<int>(IssueStatus::kIssued)];
  }

  void check_open() const {
    if (closed_ || stopping_) throw Error(ErrorCode::kClosed, "the engine is closed");
  }

  Entry& entry_locked(int64_t campaign_id) {
    auto it = gates_.find(campaign_id);
    if (it == gates_.end()) throw_not_found("campaign " + std::to_string(campaign_id) + " not found");
    return *it->second;
  }

  void run() {
    std::vector<Pending> batch;
    for (;;) {
      {
        std::unique_lock lock(queue_mu_);
        work_cv_.wait(lock, [&] { return stopping_ || !queue_.empty(); });
        if (queue_.empty()) return;  // stopping and nothing left
        std::size_t taken = 0;
        std::size_t n = 0;
        while (n < queue_.size() && (n == 0 || taken + queue_[n].requests.size() <= limits::kCommitBatchRequestsMax)) {
          taken += queue_[n].requests.size();
          ++n;
        }
        batch.assign(std::make_move_iterator(queue_.begin()), std::make_move_iterator(queue_.begin() + n));
        queue_.erase(queue_.begin(), queue_.begin() + n);
        queued_requests_ -= taken;
        space_cv_.notify_all();
      }
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
    {
      std::lock_guard lock(gate_mu_);
      for (std::size_t i = 0; i < batch.size(); ++i) {
        auto it = gates_.find(batch[i].campaign_id);
        if (it == gates_.end()) {  // cannot happen: campaigns are never removed
          errors[i] = std::make_exception_ptr(Error(ErrorCode::kNotFound, "campaign not found"));
          continue;
        }
        Entry& e = *it->second;
        if (e.stale && !rebuild_locked(e)) {
          errors[i] = std::make_exception_ptr(
              Error(ErrorCode::kUnavailable, "the store cannot be read to restore the campaign"));
          continue;
        }
        touched.insert(batch[i].campaign_id);
        results[i].reserve(batch[i].requests.size());
        for (const IssueRequest& r : batch[i].requests) results[i].push_back(e.gate.decide(r, now, &grants));
      }
    }
    std::exception_ptr commit_error;
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
      if (!err) count(results[i], /*fast=*/false);
      histograms_.issue_latency_seconds.observe(
          std::chrono::duration<double>(answered_at - batch[i].submitted_at).count(), batch[i].requests.size());
      if (err) {
        batch[i].cb({}, err);
      } else {
        batch[i].cb(std::move(results[i]), nullptr);
      }
    }
    run_batch_end_hook();
  }

  // After a failed commit the store rolled back: rebuild the gate from what it holds. If the
  // store cannot be read either, the entry stays stale and is not decided on until it can.
  bool rebuild_locked(Entry& e) {
    CampaignGate fresh(e.gate.campaign());
    try {
      store_.for_each_grant(fresh.campaign().id, [&](const Grant& g) { fresh.restore(g); });
    } catch (...) {
      e.stale = true;
      return false;
    }
    e.gate = std::move(fresh);
    e.stale = false;
    e.sold_out_durable = e.gate.sold_out();
    return true;
  }

  FileLock file_lock_;  // before store_: nothing touches the file unless the lock is ours
  SqliteStore store_;
  std::mutex gate_mu_;  // guards gates_ and every Entry
  std::unordered_map<int64_t, std::unique_ptr<Entry>> gates_;

  std::mutex queue_mu_;
  std::condition_variable work_cv_;
  std::condition_variable space_cv_;
  std::vector<Pending> queue_;
  std::size_t queued_requests_ = 0;
  std::atomic<bool> stopping_{false};
  std::atomic<bool> closed_{false};
  std::thread thread_;

  mutable std::mutex counters_mu_;
  EngineCounters counters_;
};

}  // namespace

std::unique_ptr<Engine> open_embedded(const EmbeddedOptions& options) {
  return std::make_unique<EmbeddedEngine>(options);
}

}  // namespace couponcore
