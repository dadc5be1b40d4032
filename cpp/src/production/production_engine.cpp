// The production engine: Redis gate (one Lua call decides a batch of one campaign), a Redis
// Stream per campaign as the grant log, PostgreSQL as the store. Same Engine interface and
// semantics as the embedded engine (cpp/src/engine/embedded_engine.cpp).
//
// Threads and connections:
//   callers       validate, look the campaign up (cached; PostgreSQL on a miss), answer from the
//                 sold-out fast path when they can, else queue (bounded: queued_requests_max)
//   I/O thread    one gate connection. Takes everything queued (<= gate_cycle_requests_max),
//                 groups it per campaign into Lua calls of <= gate_batch_requests_max requests,
//                 pipelines <= gate_pipeline_calls_max EVALSHAs per round trip, decodes the
//                 replies in order and runs the callbacks, then the batch-end hook once
//   writers       writer_threads GrantWriters (cpp/src/writer), each with its own connections
//   control       one PostgreSQL and one Redis connection behind mutexes for campaigns, stats,
//                 drain and reconcile
//
// The Lua call (redis/scripts.hpp kGateLua) applies CampaignGate::decide's rule in its order
// and XADDs each grant to the campaign's stream in the same atomic step: a grant exists iff it
// is in the grant log. The writers move it to PostgreSQL.
//
// Remembered answers: a request id's first answer is kept in a per-campaign hash per
// generation of answer_ttl_s seconds (P{cN}:a:<now_s / ttl>); the script reads the current and
// the previous generation and writes the current one, which expires 2*ttl after its last
// write. So an answer is remembered for at least answer_ttl_s and at most about 2*answer_ttl_s,
// at the cost of one EXPIRE per Lua call, not per request, and with one key per campaign and
// generation instead of one key (with its ~50 bytes of overhead) per request.
//
// Dropped connection: the calls whose replies were lost have an unknown outcome. A submission
// whose requests all carry request ids is re-sent after the reconnect (gate_retries_max times):
// the script answers the ones it had decided from the remembered answers, so the caller gets
// the true answer. Any other submission gets kUnavailable; what it was granted, if anything,
// is in the grant log and lands in PostgreSQL like every grant (a retry says ALREADY_ISSUED).
//
// Sold out: when a reply shows issued >= quantity, the I/O thread reads the mirror and the
// holder hash (HSCAN) and from then on callers are answered in their own thread with no round
// trip: NOT_OPEN / ENDED by state and window, ALREADY_ISSUED for holders at their limit,
// SOLD_OUT otherwise. A holder's request carrying a request id still goes to Redis, where its
// remembered ISSUED answer lives. (Known difference: a non-holder retrying, after the sell-out,
// a request id first answered NOT_OPEN gets SOLD_OUT.) The fast path lives kFastPathRecheckMs:
// then one request goes to Redis again, and the path is re-armed from the mirror (the holders
// are re-read only if issued or quantity changed). So another process's pause or quantity raise
// reaches this one within kFastPathRecheckMs; this process's own rule changes disarm it at once.
//
// Campaign rules (pause / resume / close / set_quantity): one PostgreSQL transaction locks the
// campaign row (FOR UPDATE: rule changes of a campaign queue across processes), writes the new
// rules, applies them to the Redis mirror in one Lua call that refuses a quantity below the
// gate's counter (which includes grants still in the log), then commits. If the commit's
// outcome is lost after Redis applied the change, the caller gets kUnavailable and a retry (the
// same call) brings both to the same rules.
//
// Coupon lifecycle and partners (postgres/pg_lifecycle.hpp): a pool of PostgreSQL connections
// for use / cancel / queries / expiry / partners; authentication through the in-process cache,
// then a Redis cache shared by every engine of the deployment (redis/auth_cache.hpp), then
// PostgreSQL. A coupon whose grant is still in the log (seq <= the mirror's counter, no row yet)
// is kUnavailable ("not yet usable, retry"), never kNotFound.
#include <hiredis/hiredis.h>

#include <algorithm>
#include <atomic>
#include <cassert>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <mutex>
#include <set>
#include <thread>
#include <unordered_map>

#include "couponcore/engine.hpp"
#include "couponcore/error.hpp"
#include "couponcore/limits.hpp"
#include "couponcore/metrics.hpp"
#include "couponcore/worker.hpp"
#include "coupons/coupon_service.hpp"
#include "gate/campaign_gate.hpp"
#include "postgres/coupon_store.hpp"
#include "postgres/migrations.hpp"
#include "postgres/pg.hpp"
#include "postgres/pg_lifecycle.hpp"
#include "redis/auth_cache.hpp"
#include "redis/keys.hpp"
#include "redis/redis.hpp"
#include "redis/scripts.hpp"
#include "util/validate.hpp"
#include "writer/grant_writer.hpp"

namespace couponcore {

namespace {

constexpr std::size_t kFastPathHoldersMax = 2'000'000;   // larger campaigns always ask Redis
constexpr int64_t kHscanCount = 10'000;
constexpr std::size_t kRestorePairsPerCall = 1'000;
constexpr std::size_t kReconcileLogEntriesMax = 1'000'000;
constexpr std::size_t kXrangePage = 64;  // entries per XRANGE page (a gate batch each)
constexpr std::size_t kMissingSeqsSampleMax = 100;
constexpr int kSendRoundsMax = 3;  // NOSCRIPT / NOCAMPAIGN re-sends within one cycle
constexpr int64_t kFastPathRecheckMs = 1'000;  // the sold-out fast path's life between checks

void check_requests(const std::vector<IssueRequest>& requests) {
  if (requests.size() > limits::kIssueBatchMax) {
    throw_invalid("a batch holds at most " + std::to_string(limits::kIssueBatchMax) + " requests, got " +
                  std::to_string(requests.size()));
  }
  for (const IssueRequest& r : requests) {
    limits::check_user_id(r.user_id);
    if (!r.request_id.empty()) limits::check_request_id(r.request_id);
  }
}

void check_options(const ProductionOptions& o) {
  redis::check_key_prefix(o.key_prefix);
  if (o.postgres_url.empty()) throw_invalid("postgres_url is required");
  if (o.writer_threads < 0 || o.writer_threads > 64) throw_invalid("writer_threads must be 0..64");
  if (o.answer_ttl_s < 1 || o.answer_ttl_s > 30 * 24 * 3600) throw_invalid("answer_ttl_s must be 1 s..30 days");
  if (o.gate_batch_requests_max < 1 || o.gate_batch_requests_max > 20'000) {
    throw_invalid("gate_batch_requests_max must be 1..20000");
  }
  if (o.gate_pipeline_calls_max < 1 || o.gate_pipeline_calls_max > 10'000) {
    throw_invalid("gate_pipeline_calls_max must be 1..10000");
  }
  if (o.gate_cycle_requests_max < 1) throw_invalid("gate_cycle_requests_max must be positive");
  if (o.queued_requests_max < 1) throw_invalid("queued_requests_max must be positive");
  if (o.redis_connect_timeout_ms < 1 || o.redis_command_timeout_ms < 1) throw_invalid("redis timeouts must be positive");
  if (o.gate_retries_max < 0 || o.gate_retries_max > 10) throw_invalid("gate_retries_max must be 0..10");
  if (o.close_drain_timeout_ms < 0) throw_invalid("close_drain_timeout_ms must not be negative");
  if (o.lifecycle_conns_max < 1 || o.lifecycle_conns_max > pg::ConnPool::kConnsMax) {
    throw_invalid("lifecycle_conns_max must be 1.." + std::to_string(pg::ConnPool::kConnsMax));
  }
  auth::check_auth_options(o.auth);
  writer::check_writer_options(o.writer);
}

std::exception_ptr unavailable(const std::string& m) { return std::make_exception_ptr(Error(ErrorCode::kUnavailable, m)); }

struct CampaignEntry {
  CampaignEntry(Campaign c, std::string_view prefix) : campaign(std::move(c)), keys(prefix, campaign.id) {}
  // Fixed for life except state and spec.quantity (the campaign rules), which change under
  // fast_mu; snapshot() reads them there.
  Campaign campaign;
  const redis::CampaignKeys keys;
  // I/O thread only.
  bool publish_queued = false;
  // The fast path answers while steady_ms() < fast_until_ms; holders is complete for the
  // (issued, quantity) it was read at. rules_version counts this process's rule changes, so an
  // arm that raced one is dropped.
  std::atomic<int64_t> fast_until_ms{0};
  std::atomic<uint64_t> rules_version{0};
  mutable std::mutex fast_mu;
  StringMap<uint32_t> holders;
  int64_t armed_issued = -1;    // with fast_mu
  int64_t armed_quantity = -1;  // with fast_mu
  Campaign snapshot() const {
    std::lock_guard lock(fast_mu);
    return campaign;
  }
  bool fast_path_live() const { return redis::steady_ms() < fast_until_ms.load(std::memory_order_acquire); }
};

// The helper scripts, one set per connection (a Script caches its sha; not shared across threads).
struct HelperScripts {
  redis::Script mirror{redis::kMirrorLua};
  redis::Script holders{redis::kHoldersMaxLua};
  redis::Script ack{redis::kAckLua};
  redis::Script rules{redis::kRulesLua};
};

struct Pending {
  std::shared_ptr<CampaignEntry> campaign;
  std::vector<IssueRequest> requests;
  IssueCallback cb;
  std::vector<IssueResult> results;
  std::exception_ptr error;
  bool all_have_request_ids = false;
  bool lost = false;  // a call carrying part of it lost its reply
  int attempts = 0;
  std::chrono::steady_clock::time_point submitted_at;
};

struct Segment {
  Pending* pending;
  std::size_t begin, end;
};

struct Call {
  CampaignEntry* campaign;
  std::vector<Segment> segments;
  std::size_t requests = 0;
};

class ProductionEngine final : public Engine {
 public:
  explicit ProductionEngine(const ProductionOptions& o)
      : options_(o),
        redis_url_(redis::RedisUrl::parse(o.redis_url)),
        ctl_pg_(o.postgres_url),
        ctl_redis_(redis_url_, redis_options("-ctl")),
        gate_redis_(redis_url_, redis_options("-gate")),
        gate_script_(redis::kGateLua),
        writer_shared_(o.key_prefix, redis_url_, redis_options("-writer"), o.postgres_url, o.writer, writers_stop_) {
    writer_shared_.commit_grants = &histograms_.commit_grants;
    if (o.migrate_on_open) pg::migrate_all(ctl_pg_);
    ctl_redis_.ensure_connected();  // fail fast on a wrong URL or password
    gate_script_.load(ctl_redis_);
    io_thread_ = std::thread([this] { io_loop(); });
    const std::string base = writer::default_consumer_base();
    for (int i = 0; i < o.writer_threads; ++i) {
      writers_.push_back(std::make_unique<writer::GrantWriter>(writer_shared_, base + "-" + std::to_string(i)));
    }
    for (auto& w : writers_) writer_threads_.emplace_back([&w] { w->run(); });
  }

  ~ProductionEngine() override { close(); }

  const char* kind() const noexcept override { return "production"; }

  // ---- campaigns -----------------------------------------------------------------------------

  Campaign create_campaign(const CampaignSpec& spec) override {
    check_open();
    check_campaign_spec(spec);
    if (!life_.partners.exists(spec.partner_id)) throw_not_found("partner " + std::to_string(spec.partner_id) + " not found");
    Campaign c;
    {
      std::lock_guard lock(ctl_pg_mu_);
      ping_ctl_pg_locked();  // an INSERT is not repeated blindly: find a dead connection first
      c = pgstore::insert_campaign(ctl_pg_, spec, now_us());
    }
    auto entry = std::make_shared<CampaignEntry>(c, options_.key_prefix);
    // The mirror is created now; if Redis is down, the first issue creates it (NOCAMPAIGN).
    try {
      std::lock_guard lock(ctl_redis_mu_);
      mirror(ctl_redis_, ctl_scripts_, *entry, 0);
    } catch (const Error&) {
    }
    std::lock_guard lock(campaigns_mu_);
    campaigns_.emplace(c.id, entry);
    return c;
  }

  // The record, from PostgreSQL: another process may have changed the rules. PostgreSQL
  // unreachable: this process's view.
  Campaign get_campaign(int64_t campaign_id) override {
    check_open();
    std::shared_ptr<CampaignEntry> entry = entry_for(campaign_id);
    try {
      if (std::optional<Campaign> c = ctl_read([&] { return pgstore::find_campaign(ctl_pg_, campaign_id); })) return *c;
    } catch (const Error& e) {
      if (e.code() != ErrorCode::kUnavailable) throw;
    }
    return entry->snapshot();
  }

  std::vector<Campaign> list_campaigns(int64_t partner_id) override {
    check_open();
    return ctl_read([&] { return pgstore::list_campaigns(ctl_pg_, partner_id); });
  }

  // ---- issuance ------------------------------------------------------------------------------

  void submit_issue(int64_t campaign_id, std::vector<IssueRequest> requests, IssueCallback cb) override {
    check_open();
    check_requests(requests);
    std::shared_ptr<CampaignEntry> entry = entry_for(campaign_id);
    if (requests.empty()) {
      cb({}, nullptr);
      run_batch_end_hook();
      return;
    }
    if (entry->fast_path_live()) {
      std::vector<IssueResult> results;
      if (answer_locally(*entry, requests, &results)) {
        count(results, /*fast=*/true);
        histograms_.issue_latency_seconds.observe(0, results.size());
        cb(std::move(results), nullptr);
        run_batch_end_hook();
        return;
      }
    }
    auto p = std::make_unique<Pending>();
    p->campaign = std::move(entry);
    p->all_have_request_ids = std::all_of(requests.begin(), requests.end(),
                                          [](const IssueRequest& r) { return !r.request_id.empty(); });
    p->requests = std::move(requests);
    p->cb = std::move(cb);
    p->submitted_at = std::chrono::steady_clock::now();
    const std::size_t n = p->requests.size();
    std::unique_lock lock(queue_mu_);
    if (!space_cv_.wait_for(lock, std::chrono::milliseconds(options_.queue_full_wait_ms), [&] {
          return stopping_ || queued_requests_ == 0 || queued_requests_ + n <= options_.queued_requests_max;
        })) {
      throw_unavailable("the issue queue is full (" + std::to_string(options_.queued_requests_max) +
                        " requests waiting); try again");
    }
    if (stopping_) throw Error(ErrorCode::kClosed, "the engine is closed");
    queued_requests_ += n;
    queue_.push_back(std::move(p));
    work_cv_.notify_one();
  }

  // ---- store ---------------------------------------------------------------------------------

  CampaignStats campaign_stats(int64_t campaign_id) override {
    check_open();
    entry_for(campaign_id);
    return ctl_read([&] { return pgstore::stats(ctl_pg_, campaign_id); });
  }

  bool drain(double timeout_s) override {
    check_open();
    return drain_until(redis::steady_ms() + static_cast<int64_t>(std::max(0.0, timeout_s) * 1000.0));
  }

  ReconcileReport reconcile(int64_t campaign_id) override {
    check_open();
    std::shared_ptr<CampaignEntry> entry = entry_for(campaign_id);
    const redis::CampaignKeys& k = entry->keys;
    ReconcileReport rep;
    rep.campaign_id = campaign_id;
    std::lock_guard rlock(ctl_redis_mu_);
    std::lock_guard plock(ctl_pg_mu_);
    ping_ctl_pg_locked();
    // 1. Re-drive: whatever is still in the grant log goes into the table (idempotently), and
    //    is acknowledged and removed from the log once it is there.
    //    Page by page (an entry holds up to 2,048 grants), each page in chunks of about
    //    read_count_max grants (an entry's grants all in one chunk); an entry leaves the log
    //    once every grant of it is in the store.
    std::string from = "-";
    for (std::size_t seen = 0; seen < kReconcileLogEntriesMax;) {
      redis::Reply r = ctl_redis_.command_checked(
          redis::Args{"XRANGE"}.add(k.grants).add(from).add("+").add("COUNT").add(static_cast<int64_t>(kXrangePage)),
          "XRANGE");
      std::vector<writer::LogEntry> log = writer::parse_entries(r.raw());
      if (log.empty()) break;
      from = "(" + log.back().id;
      seen += log.size();
      std::size_t next = 0;
      while (next < log.size()) {
        std::vector<Grant> chunk;
        std::vector<std::size_t> grant_entry;  // chunk[i] came from log[grant_entry[i]]
        for (; next < log.size() && chunk.size() < options_.writer.read_count_max; ++next) {
          if (writer::parse_grants(log[next], campaign_id, &chunk).empty()) grant_entry.resize(chunk.size(), next);
        }
        if (chunk.empty()) continue;
        pgstore::WriteOutcome w = pgstore::write_grants(ctl_pg_, chunk);
        rep.redriven += w.inserted;
        rep.log_pending += w.inserted + static_cast<int64_t>(w.failed.size());  // not in the store before
        std::set<std::size_t> refused;
        for (const auto& f : w.failed) refused.insert(grant_entry[f.first]);
        std::vector<std::string> done;
        for (std::size_t i = 0; i < grant_entry.size(); ++i) {
          const std::size_t ei = grant_entry[i];
          if (!refused.count(ei) && (done.empty() || done.back() != log[ei].id)) done.push_back(log[ei].id);
        }
        if (!done.empty()) {
          redis::Args a;
          a.add(redis::kWriterGroup);
          for (const std::string& id : done) a.add(id);
          redis::check_reply(redis::eval(ctl_redis_, ctl_scripts_.ack, {k.grants, k.reasons}, a), "ack");
          // The ack trims only what the group delivered; entries re-driven before any writer
          // saw them are in the store now, so they leave the log here.
          redis::Args del{"XDEL"};
          del.add(k.grants);
          for (const std::string& id : done) del.add(id);
          ctl_redis_.command_checked(del, "XDEL");
        }
      }
      if (log.size() < kXrangePage) break;
    }
    // 2. The gate's view.
    redis::Reply m = ctl_redis_.command_checked(redis::Args{"HGET"}.add(k.meta).add("n"), "HGET");
    long long issued = 0;
    redis::reply_int(m.raw(), &issued);
    rep.gate_issued = issued;
    StringMap<int64_t> gate_holders = scan_holders(ctl_redis_, k);
    rep.gate_holders = static_cast<int64_t>(gate_holders.size());
    redis::Reply dl = ctl_redis_.command_checked(redis::Args{"XLEN"}.add(k.dead_letters), "XLEN");
    rep.dead_lettered = dl.integer();
    // 3. The store's view, and the differences.
    CampaignStats st = pgstore::stats(ctl_pg_, campaign_id);
    rep.store_rows = st.rows;
    rep.store_distinct_users = st.distinct_users;
    rep.store_max_seq = st.max_seq;
    auto [missing, sample] = pgstore::missing_seqs(ctl_pg_, campaign_id, rep.gate_issued, kMissingSeqsSampleMax);
    rep.missing_in_store = missing;
    rep.missing_seqs_sample = std::move(sample);
    pg::Result extra = ctl_pg_.exec("SELECT count(*) FROM coupons WHERE campaign_id = $1 AND seq > $2",
                                    pg::Params().add(campaign_id).add(rep.gate_issued));
    rep.unexpected_in_store = extra.i64(0, 0);
    pgstore::Holdings h = pgstore::holdings(ctl_pg_, campaign_id);
    for (const auto& [user, rows] : h.holders) {
      auto it = gate_holders.find(user);
      if (it == gate_holders.end() || it->second != rows) rep.holder_mismatches++;
      if (it != gate_holders.end()) gate_holders.erase(it);
    }
    rep.holder_mismatches += static_cast<int64_t>(gate_holders.size());  // in Redis, not in the store
    rep.consistent = rep.missing_in_store == 0 && rep.unexpected_in_store == 0 && rep.holder_mismatches == 0;
    return rep;
  }

  // ---- campaign rules ------------------------------------------------------------------------

  int64_t campaign_partner(int64_t campaign_id) override {
    check_open();
    return entry_for(campaign_id)->campaign.spec.partner_id;  // immutable: no lock needed
  }

  Campaign pause_campaign(int64_t partner_id, int64_t campaign_id) override {
    return change_rules(partner_id, campaign_id, CampaignState::kPaused, std::nullopt);
  }
  Campaign resume_campaign(int64_t partner_id, int64_t campaign_id) override {
    return change_rules(partner_id, campaign_id, CampaignState::kActive, std::nullopt);
  }
  Campaign close_campaign(int64_t partner_id, int64_t campaign_id) override {
    return change_rules(partner_id, campaign_id, CampaignState::kClosed, std::nullopt);
  }
  Campaign set_campaign_quantity(int64_t partner_id, int64_t campaign_id, int64_t quantity) override {
    if (quantity <= 0 || quantity > limits::kQuantityMax) {
      throw_invalid("quantity must be 1.." + std::to_string(limits::kQuantityMax) + ", got " + std::to_string(quantity));
    }
    return change_rules(partner_id, campaign_id, std::nullopt, quantity);
  }

  // ---- coupon lifecycle ----------------------------------------------------------------------

  UseResult use_coupon(int64_t partner_id, const UseRequest& request) override {
    check_open();
    return life_.coupons.use(partner_id, request, now_us());
  }
  Coupon cancel_coupon_use(int64_t partner_id, int64_t coupon_id, const std::string& order_id) override {
    check_open();
    return life_.coupons.cancel_use(partner_id, coupon_id, order_id, now_us());
  }
  Coupon get_coupon(int64_t partner_id, int64_t coupon_id) override {
    check_open();
    return life_.coupons.get(partner_id, coupon_id, now_us());
  }
  CouponPage list_user_coupons(int64_t partner_id, const CouponQuery& query) override {
    check_open();
    return life_.coupons.list_for_user(partner_id, query, now_us());
  }
  CouponCounts coupon_counts(int64_t partner_id, int64_t campaign_id) override {
    check_open();
    return life_.coupons.counts(partner_id, campaign_id, now_us());
  }
  ExpireReport expire_coupons(int64_t now, int64_t chunk_rows, int64_t chunks_max) override {
    check_open();
    return life_.coupons.expire(now, chunk_rows, chunks_max);
  }

  // ---- partners ------------------------------------------------------------------------------

  PartnerKey create_partner(const std::string& name) override {
    check_open();
    return life_.partners.create(name);
  }
  PartnerKey rotate_partner_key(int64_t partner_id) override {
    check_open();
    return life_.partners.rotate(partner_id);
  }
  Partner revoke_partner_keys(int64_t partner_id) override {
    check_open();
    return life_.partners.revoke(partner_id);
  }
  Partner get_partner(int64_t partner_id) override {
    check_open();
    return life_.partners.get(partner_id);
  }
  std::vector<Partner> list_partners(int64_t after_partner_id, int32_t limit) override {
    check_open();
    return life_.partners.list(after_partner_id, limit);
  }
  Partner authenticate(std::string_view api_key) override {
    check_open();
    return life_.partners.authenticate(api_key);
  }
  AuthCounters auth_counters() const override { return life_.partners.counters(); }

  EngineCounters counters() const override {
    EngineCounters k;
    {
      std::lock_guard lock(counters_mu_);
      k = counters_;
    }
    k.redis_reconnects = gate_connects_.load();
    WorkerStats w = writer_shared_.stats();
    k.grants_written = w.grants_written;
    k.dead_lettered = w.dead_lettered;
    k.writer_failures = w.failures;
    return k;
  }

  void close() override {
    {
      std::lock_guard lock(queue_mu_);
      if (stopping_) return;
      stopping_ = true;
      work_cv_.notify_all();
      space_cv_.notify_all();
    }
    if (io_thread_.joinable()) io_thread_.join();
    // A script that issues and closes should find its grants in PostgreSQL: give the in-process
    // writers a bounded time to finish the log (whatever is left waits for the next writer).
    if (!writers_.empty() && options_.close_drain_timeout_ms > 0) {
      try {
        drain_until(redis::steady_ms() + options_.close_drain_timeout_ms);
      } catch (const Error&) {
      }
    }
    writers_stop_ = true;
    for (auto& t : writer_threads_) t.join();
    closed_ = true;
  }

  bool closed() const noexcept override { return closed_; }

 private:
  redis::RedisConnOptions redis_options(const char* role) const {
    redis::RedisConnOptions ro;
    ro.connect_timeout_ms = options_.redis_connect_timeout_ms;
    ro.command_timeout_ms = options_.redis_command_timeout_ms;
    ro.backoff_max_ms = options_.redis_backoff_max_ms;
    ro.client_name = options_.client_name + role;
    return ro;
  }

  void check_open() const {
    if (closed_ || stopping_) throw Error(ErrorCode::kClosed, "the engine is closed");
  }

  // A read on the control connection. A connection that died while idle (a server restart)
  // is only noticed when used: a read is safe to repeat once on a fresh connection.
  template <typename Fn>
  auto ctl_read(Fn&& fn) -> decltype(fn()) {
    std::lock_guard lock(ctl_pg_mu_);
    try {
      return fn();
    } catch (const pg::PgError& e) {
      if (!e.connection_lost()) throw;
    }
    return fn();
  }

  void ping_ctl_pg_locked() {
    try {
      ctl_pg_.exec("SELECT 1");
    } catch (const pg::PgError& e) {
      if (!e.connection_lost()) throw;
      ctl_pg_.exec("SELECT 1");
    }
  }

  std::shared_ptr<CampaignEntry> entry_for(int64_t campaign_id) {
    const std::string not_found = "campaign " + std::to_string(campaign_id) + " not found";
    if (campaign_id <= 0 || campaign_id > limits::kCampaignIdMax) throw_not_found(not_found);
    {
      std::lock_guard lock(campaigns_mu_);
      if (auto it = campaigns_.find(campaign_id); it != campaigns_.end()) return it->second;
    }
    std::optional<Campaign> c = ctl_read([&] { return pgstore::find_campaign(ctl_pg_, campaign_id); });
    if (!c) throw_not_found(not_found);
    auto entry = std::make_shared<CampaignEntry>(std::move(*c), options_.key_prefix);
    std::lock_guard lock(campaigns_mu_);
    return campaigns_.emplace(campaign_id, entry).first->second;
  }

  // Creates or refreshes the campaign's mirror hash, its stream and consumer group, and lists
  // it for the writers. `issued_if_new` starts the counter when the mirror is new.
  void mirror(redis::RedisConn& conn, HelperScripts& scripts, const CampaignEntry& e, int64_t issued_if_new) {
    const Campaign c = e.snapshot();
    const CampaignSpec& s = c.spec;
    redis::Args a;
    a.add(s.quantity).add(int64_t{s.per_user_limit});
    a.add(s.starts_at_us ? std::to_string(*s.starts_at_us) : std::string());
    a.add(s.ends_at_us ? std::to_string(*s.ends_at_us) : std::string());
    a.add(static_cast<int64_t>(c.state)).add(issued_if_new);
    redis::check_reply(redis::eval(conn, scripts.mirror, {e.keys.meta}, a), "mirror campaign");
    redis::Reply g = conn.command(
        redis::Args{"XGROUP", "CREATE"}.add(e.keys.grants).add(redis::kWriterGroup).add("0").add("MKSTREAM"));
    if (g.is_error() && g.str().substr(0, 9) != "BUSYGROUP") redis::throw_reply_error(g.str(), "XGROUP CREATE");
    conn.command_checked(redis::Args{"SADD"}.add(redis::campaigns_set_key(options_.key_prefix)).add(e.campaign.id),
                         "SADD");
  }

  // The mirror is missing (Redis lost it, or create could not reach Redis): rebuild it from
  // the store. Holders first, the meta hash last: until it exists the script refuses. The
  // rules come from the store too (another process may have changed them).
  void restore_mirror(redis::RedisConn& conn, HelperScripts& scripts, CampaignEntry& e) {
    if (std::optional<Campaign> fresh = ctl_read([&] { return pgstore::find_campaign(ctl_pg_, e.campaign.id); })) {
      std::lock_guard lock(e.fast_mu);
      e.campaign.state = fresh->state;
      e.campaign.spec.quantity = fresh->spec.quantity;
    }
    pgstore::Holdings h = ctl_read([&] { return pgstore::holdings(ctl_pg_, e.campaign.id); });
    for (std::size_t off = 0; off < h.holders.size(); off += kRestorePairsPerCall) {
      redis::Args a;
      for (std::size_t i = off; i < std::min(h.holders.size(), off + kRestorePairsPerCall); ++i) {
        a.add(h.holders[i].first).add(h.holders[i].second);
      }
      redis::check_reply(redis::eval(conn, scripts.holders, {e.keys.holders}, a), "restore holders");
    }
    mirror(conn, scripts, e, h.max_seq);
  }

  StringMap<int64_t> scan_holders(redis::RedisConn& conn, const redis::CampaignKeys& k) {
    StringMap<int64_t> out;
    std::string cursor = "0";
    do {
      redis::Reply r = conn.command_checked(
          redis::Args{"HSCAN"}.add(k.holders).add(cursor).add("COUNT").add(kHscanCount), "HSCAN");
      if (r.size() != 2) throw Error(ErrorCode::kInternal, "redis: odd HSCAN reply");
      cursor = std::string(redis::reply_str(r.at(0)));
      const redisReply* kv = r.at(1);
      for (std::size_t i = 0; redis::reply_is_array(kv) && i + 1 < kv->elements; i += 2) {
        long long n = 0;
        redis::reply_int(kv->element[i + 1], &n);
        out[std::string(redis::reply_str(kv->element[i]))] = n;
      }
    } while (cursor != "0");
    return out;
  }

  // The sold-out fast path; false if some request needs Redis (a holder's request id).
  bool answer_locally(CampaignEntry& e, const std::vector<IssueRequest>& requests, std::vector<IssueResult>* out) {
    const Campaign& c = e.campaign;
    const int64_t now = now_us();
    std::lock_guard lock(e.fast_mu);
    out->reserve(requests.size());
    for (const IssueRequest& r : requests) {
      auto it = e.holders.find(r.user_id);
      const uint32_t held = it == e.holders.end() ? 0 : it->second;
      if (held > 0 && !r.request_id.empty()) return false;
      IssueResult res;
      if (c.state == CampaignState::kPaused) {
        res.status = IssueStatus::kNotOpen;
      } else if (c.state == CampaignState::kClosed) {
        res.status = IssueStatus::kEnded;
      } else if (outside_window(c.spec, now, &res.status)) {
      } else if (held >= static_cast<uint32_t>(c.spec.per_user_limit)) {
        res.status = IssueStatus::kAlreadyIssued;
      } else {
        res.status = IssueStatus::kSoldOut;
      }
      out->push_back(res);
    }
    return true;
  }

  void count(const std::vector<IssueResult>& results, bool fast) {
    std::lock_guard lock(counters_mu_);
    counters_.requests += results.size();
    if (fast) counters_.fast_path += results.size();
    for (const IssueResult& r : results) counters_.by_status[static_cast<int>(r.status)]++;
    counters_.issued = counters_.by_status[static_cast<int>(IssueStatus::kIssued)];
  }

  // ---- the I/O thread ------------------------------------------------------------------------

  void io_loop() {
    std::vector<std::unique_ptr<Pending>> batch;
    for (;;) {
      {
        std::unique_lock lock(queue_mu_);
        work_cv_.wait(lock, [&] { return stopping_ || !queue_.empty(); });
        if (queue_.empty()) return;  // stopping and nothing left
        std::size_t taken = 0;
        while (!queue_.empty() &&
               (batch.empty() || taken + queue_.front()->requests.size() <= options_.gate_cycle_requests_max)) {
          taken += queue_.front()->requests.size();
          batch.push_back(std::move(queue_.front()));
          queue_.pop_front();
        }
        queued_requests_ -= taken;
        space_cv_.notify_all();
      }
      process(batch);
      batch.clear();
    }
  }

  std::vector<Call> build_calls(std::vector<std::unique_ptr<Pending>>& batch) {
    std::vector<Call> calls;
    std::unordered_map<CampaignEntry*, std::size_t> open;  // campaign -> call being filled
    for (auto& up : batch) {
      Pending* p = up.get();
      p->results.assign(p->requests.size(), IssueResult{});
      p->lost = false;
      std::size_t off = 0;
      while (off < p->requests.size()) {
        CampaignEntry* c = p->campaign.get();
        auto it = open.find(c);
        if (it == open.end() || calls[it->second].requests >= options_.gate_batch_requests_max) {
          calls.push_back(Call{c, {}, 0});
          open[c] = calls.size() - 1;
          it = open.find(c);
        }
        Call& call = calls[it->second];
        const std::size_t take = std::min(p->requests.size() - off, options_.gate_batch_requests_max - call.requests);
        call.segments.push_back(Segment{p, off, off + take});
        call.requests += take;
        off += take;
      }
    }
    return calls;
  }

  redis::Args call_args(const Call& call, int64_t generation) const {
    redis::Args a = gate_script_.evalsha_args({call.campaign->keys.meta, call.campaign->keys.holders,
                                               call.campaign->keys.grants, call.campaign->keys.answers(generation),
                                               call.campaign->keys.answers(generation - 1)});
    a.add(call.campaign->campaign.id).add(options_.answer_ttl_s * 2 + 60);
    for (const Segment& s : call.segments) {
      for (std::size_t i = s.begin; i < s.end; ++i) {
        a.add(s.pending->requests[i].user_id).add(s.pending->requests[i].request_id);
      }
    }
    return a;
  }

  void fail_call(const Call& call, std::exception_ptr error) {
    for (const Segment& s : call.segments) {
      if (!s.pending->error) s.pending->error = error;
    }
  }

  // Decodes one reply into the results of the call's segments.
  void decode(const Call& call, const redis::Reply& r) {
    if (!r.is_array() || r.size() != 3 + call.requests) {
      fail_call(call, std::make_exception_ptr(Error(ErrorCode::kInternal, "redis: unexpected gate reply")));
      return;
    }
    long long issued = 0, quantity = 0;
    redis::reply_int(r.at(0), &issued);
    redis::reply_int(r.at(1), &quantity);
    std::size_t k = 3;
    for (const Segment& s : call.segments) {
      for (std::size_t i = s.begin; i < s.end; ++i, ++k) {
        long long code = 0;
        if (!redis::reply_int(r.at(k), &code) || code < 0 || (code & 7) > 4) {
          fail_call(call, std::make_exception_ptr(Error(ErrorCode::kInternal, "redis: bad code in gate reply")));
          return;
        }
        IssueResult& res = s.pending->results[i];
        res.status = static_cast<IssueStatus>(code & 7);
        if (res.status == IssueStatus::kIssued) {
          res.seq = static_cast<uint32_t>(code >> 3);
          res.coupon_id = make_coupon_id(call.campaign->campaign.id, res.seq);
        }
      }
    }
    {
      std::lock_guard lock(counters_mu_);
      counters_.batches++;
      counters_.commits++;
    }
    histograms_.batch_requests.observe(static_cast<double>(call.requests));
    if (issued >= quantity && !call.campaign->publish_queued) {
      call.campaign->publish_queued = true;
      sold_out_now_.push_back(call.campaign);
    }
  }

  // Sends the calls, pipelined, and decodes the replies. Calls whose replies are lost mark
  // their submissions lost; error replies fail their submissions.
  void send(std::vector<Call>& calls) {
    std::vector<Call*> todo;
    for (Call& c : calls) todo.push_back(&c);
    std::unordered_map<CampaignEntry*, bool> restored;
    for (int round = 0; round < kSendRoundsMax && !todo.empty(); ++round) {
      std::vector<Call*> again;
      bool reload = false;
      std::size_t next = 0;  // first call of todo not yet answered
      bool appended = false;
      try {
        const uint64_t before = gate_redis_.connects();
        gate_redis_.ensure_connected();
        if (gate_redis_.connects() != before) gate_connects_++;
        if (gate_script_.sha().empty()) gate_script_.load(gate_redis_);
        const int64_t generation = now_us() / 1'000'000 / options_.answer_ttl_s;
        while (next < todo.size()) {
          const std::size_t end = std::min(todo.size(), next + options_.gate_pipeline_calls_max);
          for (std::size_t i = next; i < end; ++i) {
            appended = true;
            gate_redis_.append(call_args(*todo[i], generation));
          }
          for (; next < end; ++next) {
            Call& call = *todo[next];
            redis::Reply r = gate_redis_.read_reply();
            if (redis::is_noscript(r)) {
              reload = true;
              again.push_back(&call);
            } else if (r.is_error() && r.str().substr(0, 10) == "NOCAMPAIGN") {
              if (!restored[call.campaign]) {
                restored[call.campaign] = true;
                restore_queue_.push_back(call.campaign);
              }
              again.push_back(&call);
            } else if (r.is_error()) {
              try {
                redis::throw_reply_error(r.str(), "gate");
              } catch (...) {
                fail_call(call, std::current_exception());
              }
            } else {
              decode(call, r);
            }
          }
        }
        if (reload) gate_script_.load(gate_redis_);
        for (CampaignEntry* c : restore_queue_) {
          log(LogLevel::kWarning, "gate", "campaign " + std::to_string(c->campaign.id) +
                                              " is not mirrored in Redis; rebuilding the mirror from PostgreSQL");
          restore_mirror(gate_redis_, gate_scripts_, *c);
        }
        restore_queue_.clear();
      } catch (const Error& e) {
        // The connection failed: everything not answered has an unknown outcome.
        for (std::size_t i = next; i < todo.size(); ++i) {
          for (const Segment& s : todo[i]->segments) s.pending->lost = true;
        }
        for (Call* c : again) {
          for (const Segment& s : c->segments) s.pending->lost = true;
        }
        lost_reason_ = e.what();
        lost_after_send_ = appended || round > 0;
        log(LogLevel::kWarning, "gate", std::string(lost_after_send_ ? "connection lost with calls in flight: " : "") +
                                            e.what());
        restore_queue_.clear();
        return;
      }
      todo = std::move(again);
    }
    for (Call* c : todo) {
      fail_call(*c, std::make_exception_ptr(Error(ErrorCode::kInternal, "redis: the gate call could not be made")));
    }
  }

  void process(std::vector<std::unique_ptr<Pending>>& batch) {
    std::vector<Call> calls = build_calls(batch);
    send(calls);
    std::vector<std::unique_ptr<Pending>> retry;
    const auto answered_at = std::chrono::steady_clock::now();
    for (auto& up : batch) {
      Pending& p = *up;
      if (p.lost && !p.error) {
        if (p.all_have_request_ids && p.attempts < options_.gate_retries_max && !stopping_) {
          p.attempts++;
          retry.push_back(std::move(up));
          continue;
        }
        p.error = unavailable(lost_after_send_ ? "redis connection lost before the answer arrived (" + lost_reason_ +
                                                     "); the outcome is unknown: retry with the same request_id"
                                               : lost_reason_);
      }
      if (p.error) {
        std::lock_guard lock(counters_mu_);
        if (error_code_of(p.error) == ErrorCode::kUnavailable) counters_.unavailable += p.requests.size();
      } else {
        count(p.results, /*fast=*/false);
      }
      histograms_.issue_latency_seconds.observe(std::chrono::duration<double>(answered_at - p.submitted_at).count(),
                                                p.requests.size());
      try {
        if (p.error) {
          p.cb({}, p.error);
        } else {
          p.cb(std::move(p.results), nullptr);
        }
      } catch (...) {
        // A callback must not take the I/O thread down.
      }
    }
    run_batch_end_hook();
    if (!retry.empty()) {
      std::lock_guard lock(queue_mu_);
      for (auto it = retry.rbegin(); it != retry.rend(); ++it) {
        queued_requests_ += (*it)->requests.size();
        queue_.push_front(std::move(*it));
      }
      work_cv_.notify_one();
    }
    publish_sold_out();
  }

  static ErrorCode error_code_of(const std::exception_ptr& e) {
    try {
      std::rethrow_exception(e);
    } catch (const Error& err) {
      return err.code();
    } catch (...) {
      return ErrorCode::kInternal;
    }
  }

  // Arms (or re-arms) the fast path of campaigns whose replies showed them sold out.
  void publish_sold_out() {
    for (CampaignEntry* c : sold_out_now_) {
      c->publish_queued = false;
      try {
        arm_fast_path(*c);
      } catch (const Error&) {
        // Redis hiccup: the next reply that shows the campaign sold out tries again.
      }
    }
    sold_out_now_.clear();
  }

  // Reads the mirror (Redis's rules are the gate's truth), the holders if issued or quantity
  // moved since they were read, and arms the fast path for kFastPathRecheckMs.
  void arm_fast_path(CampaignEntry& c) {
    const int64_t now = redis::steady_ms();
    if (c.fast_until_ms.load(std::memory_order_acquire) - now > kFastPathRecheckMs / 2) return;  // fresh
    const uint64_t version = c.rules_version.load(std::memory_order_acquire);
    redis::Reply m = gate_redis_.command_checked(redis::Args{"HMGET"}.add(c.keys.meta).add("q").add("st").add("n"), "HMGET");
    long long q = 0, st = 0, n = 0;
    if (m.size() != 3 || !redis::reply_int(m.at(0), &q) || !redis::reply_int(m.at(2), &n)) return;  // no mirror
    if (!redis::reply_int(m.at(1), &st) || st < 0 || st > 2) st = 0;
    const bool sold_out = n >= q && static_cast<std::size_t>(q) <= kFastPathHoldersMax;
    bool rescan = false;
    {
      std::lock_guard lock(c.fast_mu);
      rescan = sold_out && (c.armed_issued != n || c.armed_quantity != q);
    }
    StringMap<int64_t> h;
    if (rescan) h = scan_holders(gate_redis_, c.keys);
    std::lock_guard lock(c.fast_mu);
    if (c.rules_version.load(std::memory_order_acquire) != version) return;  // a local rule change won
    c.campaign.spec.quantity = q;
    c.campaign.state = static_cast<CampaignState>(st);
    if (!sold_out) return;
    if (rescan) {
      c.holders.clear();
      for (auto& [user, held] : h) c.holders.emplace(user, static_cast<uint32_t>(held));
      c.armed_issued = n;
      c.armed_quantity = q;
    }
    c.fast_until_ms.store(now + kFastPathRecheckMs, std::memory_order_release);
  }

  // Waits until every grant in the logs at the time of the call is in PostgreSQL: for each
  // campaign stream, the group has delivered past its last entry and nothing at or before it
  // is pending.
  bool drain_until(int64_t deadline_ms) {
    std::vector<std::pair<std::string, redis::StreamId>> targets;
    for (;;) {
      try {
        std::lock_guard lock(ctl_redis_mu_);
        if (targets.empty()) {
          redis::Reply ids = ctl_redis_.command_checked(
              redis::Args{"SMEMBERS"}.add(redis::campaigns_set_key(options_.key_prefix)), "SMEMBERS");
          for (std::size_t i = 0; i < ids.size(); ++i) {
            long long id = 0;
            if (!redis::reply_int(ids.at(i), &id)) continue;
            redis::CampaignKeys k(options_.key_prefix, id);
            redis::Reply last = ctl_redis_.command_checked(
                redis::Args{"XREVRANGE"}.add(k.grants).add("+").add("-").add("COUNT").add("1"), "XREVRANGE");
            if (last.size() == 0) continue;
            std::vector<writer::LogEntry> e = writer::parse_entries(last.raw());
            redis::StreamId sid;
            if (!e.empty() && redis::parse_stream_id(e[0].id, &sid)) targets.emplace_back(k.grants, sid);
          }
          if (targets.empty()) return true;
        }
        std::vector<std::pair<std::string, redis::StreamId>> left;
        for (auto& t : targets) {
          if (!stream_done(t.first, t.second)) left.push_back(t);
        }
        targets = std::move(left);
        if (targets.empty()) return true;
      } catch (const Error& e) {
        if (e.code() != ErrorCode::kUnavailable) throw;
      }
      if (redis::steady_ms() >= deadline_ms) return false;
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
  }

  bool stream_done(const std::string& key, const redis::StreamId& target) {
    redis::Reply groups = ctl_redis_.command_checked(redis::Args{"XINFO", "GROUPS"}.add(key), "XINFO GROUPS");
    bool delivered = false;
    for (std::size_t g = 0; g < groups.size(); ++g) {
      const redisReply* fields = groups.at(g);
      std::string_view name, last;
      for (std::size_t i = 0; redis::reply_is_array(fields) && i + 1 < fields->elements; i += 2) {
        std::string_view f = redis::reply_str(fields->element[i]);
        if (f == "name") name = redis::reply_str(fields->element[i + 1]);
        if (f == "last-delivered-id") last = redis::reply_str(fields->element[i + 1]);
      }
      redis::StreamId lid;
      if (name == redis::kWriterGroup && redis::parse_stream_id(last, &lid)) delivered = lid >= target;
    }
    if (!delivered) return false;
    redis::Reply p = ctl_redis_.command_checked(redis::Args{"XPENDING"}.add(key).add(redis::kWriterGroup), "XPENDING");
    if (p.size() < 2) return false;
    long long pending = 0;
    redis::reply_int(p.at(0), &pending);
    if (pending == 0) return true;
    redis::StreamId min_id;
    return redis::parse_stream_id(redis::reply_str(p.at(1)), &min_id) && min_id > target;
  }

  // The campaign rules: see the file top. Closed is final; anything else may be repeated.
  Campaign change_rules(int64_t partner_id, int64_t campaign_id, std::optional<CampaignState> state,
                        std::optional<int64_t> quantity) {
    check_open();
    std::shared_ptr<CampaignEntry> entry = entry_for(campaign_id);
    const std::string not_found = "campaign " + std::to_string(campaign_id) + " not found";
    if (entry->campaign.spec.partner_id != partner_id) throw_not_found(not_found);
    auto conn = life_.pool.acquire();
    pg::Tx tx(*conn);
    std::optional<PgCouponStore::CampaignRules> current = PgCouponStore::lock_campaign_rules(*conn, partner_id, campaign_id);
    if (!current) throw_not_found(not_found);
    PgCouponStore::CampaignRules next = *current;
    if (state) next.state = *state;
    if (quantity) next.quantity = *quantity;
    const bool same = next.state == current->state && next.quantity == current->quantity;
    if (current->state == CampaignState::kClosed && !same) {
      throw_conflict("campaign " + std::to_string(campaign_id) + " is closed; closing is final");
    }
    PgCouponStore::write_campaign_rules(*conn, campaign_id, next);
    apply_rules_to_gate(*entry, next);  // even when `same`: it repairs a mirror a lost commit left ahead
    tx.commit();
    {
      std::lock_guard lock(entry->fast_mu);
      entry->campaign.state = next.state;
      entry->campaign.spec.quantity = next.quantity;
      entry->rules_version.fetch_add(1, std::memory_order_acq_rel);
      entry->fast_until_ms.store(0, std::memory_order_release);  // decided by Redis again
    }
    return entry->snapshot();
  }

  void apply_rules_to_gate(CampaignEntry& e, const PgCouponStore::CampaignRules& r) {
    std::lock_guard lock(ctl_redis_mu_);
    for (int attempt = 0;; ++attempt) {
      redis::Reply rep = redis::eval(ctl_redis_, ctl_scripts_.rules, {e.keys.meta},
                                     redis::Args{}.add(static_cast<int64_t>(r.state)).add(r.quantity));
      if (rep.is_error() && rep.str().substr(0, 10) == "NOCAMPAIGN" && attempt == 0) {
        restore_mirror(ctl_redis_, ctl_scripts_, e);
        continue;
      }
      if (rep.is_error() && rep.str().substr(0, 11) == "BELOWISSUED") {
        throw_conflict("campaign " + std::to_string(e.campaign.id) + ": quantity " + std::to_string(r.quantity) +
                       " is below the " + std::string(rep.str().substr(12)) + " coupons already issued");
      }
      redis::check_reply(rep, "campaign rules");
      return;
    }
  }

  // For a coupon without a row: did the gate grant it? (Its grant is then still in the log.)
  // No mirror (Redis lost it): it cannot be ruled out, so the answer is "retry".
  bool gate_granted(int64_t campaign_id, uint32_t seq) {
    redis::CampaignKeys k(options_.key_prefix, campaign_id);
    std::lock_guard lock(ctl_redis_mu_);
    redis::Reply r = ctl_redis_.command_checked(redis::Args{"HGET"}.add(k.meta).add("n"), "HGET");
    long long n = 0;
    if (!redis::reply_int(r.raw(), &n)) return true;
    return static_cast<long long>(seq) <= n;
  }

  PgLifecycleOptions lifecycle_options() {
    PgLifecycleOptions lo;
    lo.conns_max = options_.lifecycle_conns_max;
    lo.coupons.grant_pending = [this](int64_t campaign_id, uint32_t seq) { return gate_granted(campaign_id, seq); };
    lo.auth = options_.auth;
    lo.shared_key_cache = options_.auth.cache_ttl_ms > 0 ? &auth_cache_ : nullptr;
    return lo;
  }

  const ProductionOptions options_;
  const redis::RedisUrl redis_url_;

  std::mutex ctl_pg_mu_;
  pg::Conn ctl_pg_;
  std::mutex ctl_redis_mu_;
  redis::RedisConn ctl_redis_;
  HelperScripts ctl_scripts_;  // with ctl_redis_mu_

  // I/O thread only.
  redis::RedisConn gate_redis_;
  redis::Script gate_script_;
  HelperScripts gate_scripts_;
  std::vector<CampaignEntry*> sold_out_now_;
  std::vector<CampaignEntry*> restore_queue_;
  std::string lost_reason_;
  bool lost_after_send_ = false;  // the lost calls had been sent: their outcome is unknown

  std::mutex campaigns_mu_;
  std::unordered_map<int64_t, std::shared_ptr<CampaignEntry>> campaigns_;

  std::mutex queue_mu_;
  std::condition_variable work_cv_;
  std::condition_variable space_cv_;
  std::deque<std::unique_ptr<Pending>> queue_;
  std::size_t queued_requests_ = 0;
  std::atomic<bool> stopping_{false};
  std::atomic<bool> closed_{false};
  std::thread io_thread_;

  std::atomic<bool> writers_stop_{false};
  writer::WriterShared writer_shared_;
  std::vector<std::unique_ptr<writer::GrantWriter>> writers_;
  std::vector<std::thread> writer_threads_;

  mutable std::mutex counters_mu_;
  EngineCounters counters_;
  std::atomic<uint64_t> gate_connects_{0};

  // Last, so everything above exists when the lifecycle's hooks run.
  redis::RedisKeyCache auth_cache_{redis_url_, redis_options("-auth"), options_.key_prefix};
  PgLifecycle life_{options_.postgres_url, lifecycle_options()};
};

}  // namespace

std::unique_ptr<Engine> open_production(const ProductionOptions& options) {
  check_options(options);
  return std::make_unique<ProductionEngine>(options);
}

}  // namespace couponcore
