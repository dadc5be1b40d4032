// The engine: one API over two deployments.
//
//   open_embedded(options)    in-process gate + SQLite file, group commit (the default)
//   open_production(options)  Redis gate (batched Lua) + Redis Streams grant log + PostgreSQL
//   migrate(postgres_url)     the PostgreSQL schema (also `couponcore migrate`)
//   run_worker(...)           the standalone grant writer: couponcore/worker.hpp
//
// Callers submit issue requests for one campaign; the engine's own thread gathers concurrent
// submissions into batches, decides a batch in one atomic step, makes its grants durable, then
// runs each submission's callback. issue() and issue_many() are the blocking faces of
// submit_issue(); asyncio futures are resolved from the callbacks (python/bindings).
//
// Partner scoping: every call that names a campaign or coupon on behalf of a partner takes the
// partner_id first; another partner's object is kNotFound, exactly like an unknown one.
// PartnerScope (couponcore/scope.hpp) binds a partner_id for callers. Calls without a partner
// (submit_issue, get_campaign(id), campaign_stats, reconcile, expire_coupons) are the
// operator's.
#pragma once

#include <atomic>
#include <exception>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "couponcore/auth.hpp"
#include "couponcore/coupons.hpp"
#include "couponcore/metrics.hpp"
#include "couponcore/tracing.hpp"
#include "couponcore/types.hpp"
#include "couponcore/windows.hpp"

namespace couponcore {

namespace detail {
struct Deployment;  // engine/pipeline.hpp
}
class EventHub;  // couponcore/events.hpp

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
  uint64_t by_status[6] = {0, 0, 0, 0, 0, 0};  // indexed by IssueStatus
  uint64_t queued_requests = 0;    // requests waiting in the engine's queue now (a gauge)
  uint64_t queue_refused = 0;      // submissions refused because the queue stayed full
  // Production deployment only (0 in the embedded engine):
  uint64_t unavailable = 0;        // submissions answered with kUnavailable (Redis dropped, down)
  uint64_t redis_reconnects = 0;   // gate connections (re)established
  uint64_t grants_written = 0;     // grants the in-process writers put into PostgreSQL
  uint64_t dead_lettered = 0;      // grant-log entries the in-process writers moved to dead letters
  uint64_t writer_failures = 0;    // writer attempts that failed (database down, ...)
  uint64_t writer_claimed = 0;     // entries the in-process writers took over from dead consumers
  // replicas_acked > 0: WAITs sent (the gate's batches and stock moves, the in-process writers,
  // reconcile) and those that counted fewer replicas than asked, in time.
  uint64_t replica_waits = 0;
  uint64_t replica_wait_shortfalls = 0;
  // Coupon lifecycle calls (use_coupon / cancel_coupon_use), both deployments:
  uint64_t coupon_uses = 0;          // uses answered with a result (a replay by order_id included)
  uint64_t coupon_cancels = 0;       // cancels answered with the coupon (a replay included)
  uint64_t coupon_uses_refused = 0;  // uses answered with an error (not found, used, expired, ...)
  // The HTTP per-address limit counted in Redis (count_address; 0 in the embedded engine):
  uint64_t address_requests = 0;     // addresses counted
  uint64_t address_calls = 0;        // Lua calls that counted them (concurrent requests share one)
};

// What reconcile() found for one campaign: the gate's view against the store's rows.
struct ReconcileReport {
  int64_t campaign_id = 0;
  int64_t gate_issued = 0;          // coupons the gate granted (Redis counter / in-process gate)
  int64_t gate_holders = -1;        // distinct holders per the gate; -1 where not tracked
  int64_t log_pending = 0;          // grants in the grant log that were not in the store
  int64_t redriven = 0;             // grants from the log that this call wrote to the store
  int64_t store_rows = 0;           // rows after the re-drive
  int64_t store_distinct_users = 0;
  int64_t store_max_seq = 0;
  int64_t missing_in_store = 0;     // seqs in 1..gate_issued without a row (after re-drive)
  int64_t unexpected_in_store = 0;  // rows the gate does not know (seq > gate_issued)
  int64_t holder_mismatches = 0;    // users whose count in the gate differs from their rows
  int64_t dead_lettered = 0;        // entries in the campaign's dead-letter stream
  std::vector<int64_t> missing_seqs_sample;  // the first missing seqs, at most 100
  bool consistent = false;          // nothing missing, nothing unexpected, no mismatch
};

// Campaigns Engine::log_backlog() reports at most (each is one series per backlog gauge).
inline constexpr std::size_t kLogBacklogCampaignsMax = 10'000;
// Dead-letter records one list_dead_letters() call returns at most.
inline constexpr int64_t kDeadLettersPageMax = 1'000;

// Adds a batch of answers to the counters (requests, issued, by_status, fast_path).
void count_results(EngineCounters& counters, const std::vector<IssueResult>& results, bool fast_path);

using IssueCallback = std::function<void(std::vector<IssueResult>&& results, std::exception_ptr error)>;

// A facade over one deployment (engine/pipeline.hpp): the pipeline that issues (gate, log,
// writer, store) and the services that follow it (coupons, partners). open_embedded() and
// open_production() build one; every call is checked here once for both deployments.
class Engine {
 public:
  explicit Engine(std::unique_ptr<detail::Deployment> deployment);
  ~Engine();
  Engine(const Engine&) = delete;
  Engine& operator=(const Engine&) = delete;

  const char* kind() const noexcept;  // "embedded" or "production"

  // Domain events (couponcore/events.hpp, docs/events.md): consumer groups over the event log.
  EventHub& events();

  // Campaigns.
  Campaign create_campaign(const CampaignSpec& spec);
  Campaign get_campaign(int64_t campaign_id);
  std::vector<Campaign> list_campaigns(int64_t partner_id);

  // Issuance. submit_issue validates its arguments in the caller's thread (throwing Error) and
  // queues them; the callback runs later on the engine's thread, exactly once.
  void submit_issue(int64_t campaign_id, std::vector<IssueRequest> requests, IssueCallback cb);
  IssueResult issue(int64_t campaign_id, IssueRequest request);
  std::vector<IssueResult> issue_many(int64_t campaign_id, std::vector<IssueRequest> requests);

  // What the store holds for a campaign (after drain(), everything granted so far).
  CampaignStats campaign_stats(int64_t campaign_id);
  // Coupons the gate has granted so far, a read without side effects (the store catches up as
  // the writers drain the log): the embedded gate's count, or the Redis mirror's (its counter
  // less the seqs a dead-letter drop gave back); -1 while production's mirror is not in Redis.
  int64_t gate_issued(int64_t campaign_id);
  // Waits until every grant acknowledged so far is in the store; false on timeout.
  bool drain(double timeout_s);

  // The HTTP layer's per-client-address limit, counted for the whole deployment (production: in
  // Redis, one Lua call; docs/rate-limits.md): 0 when the request is admitted (and counted),
  // else the ms to the window's end. nullopt when this deployment keeps no shared count
  // (embedded: the caller counts in process). limit 1..1,000,000, window_ms 10..3,600,000,
  // address at most 256 bytes; else kInvalidArgument.
  std::optional<int64_t> count_address(std::string_view address, int32_t limit, int32_t window_ms);

  EngineCounters counters() const;
  // Live windows (docs/windows.md): appends the answers recorded so far to the answer source
  // now (the recorder does so every windows_flush_ms); false when this engine records none
  // (windows=false, ":memory:"). Throws what the source threw (the records stay queued).
  bool flush_answers();
  // The answer recorder's counters; nullopt when this engine records none. Works after close().
  std::optional<AnswerRecorderCounters> answer_counters() const;
  // The grant log's backlog, one element per campaign with a log, ordered by campaign id
  // (production: the Redis Streams, read on the control connection with pipelined commands;
  // at most kLogBacklogCampaignsMax campaigns, the highest ids). Embedded: empty, its
  // log is the SQLite commit itself: a grant is in the store when it is answered.
  std::vector<LogBacklog> log_backlog();

  // Tracing (couponcore/tracing.hpp, docs/tracing.md): enable_tracing registers a buffer of
  // `capacity` records that the gate and the writers fill per batch / commit; take_trace_records
  // waits up to timeout_ms for records (empty after close()). Off by default: no buffer.
  void enable_tracing(std::size_t capacity);
  void disable_tracing();
  std::vector<TraceRecord> take_trace_records(std::size_t max, int64_t timeout_ms);
  TraceStats trace_stats() const;
  // The grant writers of the deployment by heartbeat (production; embedded: empty): every
  // consumer in the heartbeat registry and every consumer holding pending entries, by name.
  // Without with_pending, only the registry (one round trip; pending stays 0): for probes.
  std::vector<WriterInfo> writers(bool with_pending = true);
  // Latency and batch-size histograms; engines record into them (thread-safe, lock-free).
  const EngineHistograms& histograms() const;

  // Compares the gate with the store for one campaign and re-drives grants that are in the
  // grant log but missing from the store. Read-only apart from the re-drive.
  ReconcileReport reconcile(int64_t campaign_id);

  // ---- Dead letters (docs/dead-letters.md) -------------------------------------------------
  // Grants that left the grant log without reaching the store. Production only: the embedded
  // engine has no grant log (list: empty; the others: kNotFound). Ids are dead-letter stream
  // ids ("<ms>-<n>"; anything else is kInvalidArgument); an unknown campaign or record is
  // kNotFound and nothing changes.
  // Records of one campaign (campaign_id > 0) or of every campaign (0), ordered by (campaign,
  // id), after the cursor `after` ("" from the start; one campaign: a record id; every campaign:
  // "<campaign_id>:<record id>"), at most limit (1..kDeadLettersPageMax).
  std::vector<DeadLetter> list_dead_letters(int64_t campaign_id, const std::string& after, int64_t limit);
  DeadLetter get_dead_letter(int64_t campaign_id, const std::string& id);
  // The record's grant goes back into the grant log (a new version-1 entry with the same seq,
  // user, ordinal, request and issue time, rd = redrives + 1) and the record is deleted, in one
  // atomic step; the writers then write it like any grant. Returns the record re-driven.
  DeadLetter redrive_dead_letter(int64_t campaign_id, const std::string& id);
  // The grant is void: the record is deleted and, in the same atomic step, the gate gets back
  // what the store shows free: the seq (issuable again, before the counter advances) unless a
  // row holds it, and the user's slot if this grant was the user's latest. Returns the record.
  DeadLetter drop_dead_letter(int64_t campaign_id, const std::string& id);

  // ---- Campaign rules --------------------------------------------------------------------
  // The partner that owns a campaign (immutable); kNotFound for an unknown campaign.
  int64_t campaign_partner(int64_t campaign_id);
  // kNotFound unless the campaign exists and belongs to partner_id (same message either way).
  void check_campaign_partner(int64_t partner_id, int64_t campaign_id);
  // Pause (issue answers NOT_OPEN), resume, close (ENDED, final: kConflict afterwards). The gate
  // and the store change together; repeating the current state is a no-op. Issued coupons stay
  // usable whatever the campaign's state.
  Campaign pause_campaign(int64_t partner_id, int64_t campaign_id);
  Campaign resume_campaign(int64_t partner_id, int64_t campaign_id);
  Campaign close_campaign(int64_t partner_id, int64_t campaign_id);
  // Changes the quantity while running: 1..limits::kQuantityMax and never below the coupons
  // already issued (kConflict). Raising it reopens a sold-out campaign.
  Campaign set_campaign_quantity(int64_t partner_id, int64_t campaign_id, int64_t quantity);
  // Changes the rate limits while running (ranges in limits.hpp, kInvalidArgument outside them,
  // nothing written); the store first, then the gate. The counters of the current window start
  // again from zero. kConflict on a closed campaign. docs/rate-limits.md.
  Campaign set_campaign_rate_limits(int64_t partner_id, int64_t campaign_id, int32_t per_user, int32_t per_partner,
                                    int32_t window_ms);

  // ---- Coupon lifecycle (couponcore/coupons.hpp) -------------------------------------------
  // Checks owner, state, validity and minimum order, computes the discount and marks the coupon
  // used in one atomic step. Concurrent uses: one wins, the others get kConflict (or, with the
  // same order_id, the winner's result). A repeat with the same order_id returns the first
  // result; with another order_amount it is kConflict. Unknown coupon, another partner's, or
  // another user's: kNotFound. Production: a coupon whose grant is not yet in the store is
  // kUnavailable ("not yet usable, retry"), never kNotFound.
  UseResult use_coupon(int64_t partner_id, const UseRequest& request);
  // Undoes the use by order_id: the coupon is issued again, or expired if its validity passed
  // meanwhile (the returned coupon says which). Idempotent per order_id; kConflict if the
  // coupon is not (and was not) used by that order.
  // traceparent: the call's W3C trace context ("" = none; malformed: ignored), see docs/tracing.md.
  Coupon cancel_coupon_use(int64_t partner_id, int64_t coupon_id, const std::string& order_id,
                           const std::string& traceparent = {});
  Coupon get_coupon(int64_t partner_id, int64_t coupon_id);
  CouponPage list_user_coupons(int64_t partner_id, const CouponQuery& query);
  CouponCounts coupon_counts(int64_t partner_id, int64_t campaign_id);
  // The expiry job (all partners): marks issued coupons with valid_until_us <= now_us as
  // expired, chunk_rows (1..limits::kExpireChunkRowsMax) per short transaction, at most
  // chunks_max chunks (then report.more is set).
  ExpireReport expire_coupons(int64_t now_us, int64_t chunk_rows, int64_t chunks_max);

  // ---- Partners and API keys (couponcore/auth.hpp) --------------------------------------------
  PartnerKey create_partner(const std::string& name);
  // A new key; every older key of the partner is revoked in the same transaction.
  PartnerKey rotate_partner_key(int64_t partner_id);
  // Revokes every key of the partner (it can get a new one with rotate_partner_key).
  Partner revoke_partner_keys(int64_t partner_id);
  Partner get_partner(int64_t partner_id);
  // Ordered by id, after after_partner_id; limit 1..1000.
  std::vector<Partner> list_partners(int64_t after_partner_id, int32_t limit);
  // The partner owning api_key; kUnauthenticated (one message) for unknown, revoked, malformed.
  Partner authenticate(std::string_view api_key);
  AuthCounters auth_counters() const;

  // Stops the engine's threads after finishing what was queued; later calls throw kClosed.
  void close();
  bool closed() const noexcept;

  // Called on the engine's thread after each batch of callbacks (the asyncio binding uses it to
  // wake the event loop once per batch). Set it before the first submit.
  void set_batch_end_hook(std::function<void()> hook);

 private:
  void check_open() const;

  std::unique_ptr<detail::Deployment> deployment_;
  std::atomic<bool> closed_{false};
  std::atomic<uint64_t> coupon_uses_{0}, coupon_cancels_{0}, coupon_uses_refused_{0};
};

// Domain events (docs/events.md): the outbox / log rows written with each change, and the
// production relay that moves the outbox to a Redis Stream per type.
struct EventOptions {
  bool enabled = true;                   // write events with each change (false: measure the cost)
  bool relay = true;                     // production: run a relay thread (one active per database)
  int64_t relay_poll_ms = 20;            // an empty outbox is looked at again after this long (1..1000)
  std::size_t relay_batch_max = 5000;    // outbox rows per DELETE ... RETURNING and XADD pipeline (1..10000)
  int64_t stream_maxlen = 1'000'000;     // XADD MAXLEN ~ per type stream (1000..1e9)
  // Fault injection for tests: the relay stops after XADD of this many batches, before the
  // commit of their DELETE, as if its process died there (0: never).
  int64_t relay_stop_after_xadd_batches = 0;
};
void check_event_options(const EventOptions& options);

struct EmbeddedOptions {
  std::string path = "couponcore.db";  // ":memory:" for a throwaway engine
  bool synchronous_full = true;        // PRAGMA synchronous=FULL (durable at commit)
  AuthOptions auth;                    // the authentication cache
  // Live windows (docs/windows.md): every answer is recorded and flushed every windows_flush_ms
  // (10..10000) to the file's answer_log table. Not for ":memory:" (ignored there).
  bool windows = true;
  int64_t windows_flush_ms = 200;
  bool events = true;                  // write domain events to the `events` table (docs/events.md)
};

std::unique_ptr<Engine> open_embedded(const EmbeddedOptions& options);

// How grant-log writers work: shared by the engine's in-process writers and run_worker()
// (couponcore/worker.hpp). Every batch and wait has a limit.
struct WriterOptions {
  std::size_t read_count_max = 2000;      // about this many grants per XREADGROUP per stream (and per insert)
  int64_t block_ms = 100;                 // XREADGROUP BLOCK
  int64_t claim_idle_ms = 30'000;         // entries idle this long on any consumer are claimed
  int64_t claim_interval_ms = 1'000;      // how often a writer looks for such entries
  int dead_letter_after_deliveries = 5;   // an entry failing on its N-th delivery is dead-lettered
  int64_t backoff_initial_ms = 50;        // database retries: exponential backoff with jitter
  int64_t backoff_max_ms = 5'000;
  int breaker_failures = 3;               // consecutive failures that open the circuit breaker
  int64_t campaigns_refresh_ms = 500;     // how often the set of campaign streams is re-read
  std::size_t streams_per_read_max = 256;  // streams in one XREADGROUP call
  // Liveness (writer/liveness.hpp): every writer consumer's beat, on the Redis server's clock,
  // from a thread of its process that no batch holds up; a consumer whose beat is older than
  // dead_after_ms is dead, and any live writer takes its pending entries over at once.
  int64_t heartbeat_interval_ms = 1'000;  // 10..60000
  int64_t dead_after_ms = 3'000;          // >= 3 * heartbeat_interval_ms, <= 3600000
};

// The production deployment: Redis gate (one Lua call per batch of a campaign) + a Redis
// Stream per campaign as the grant log + PostgreSQL as the store.
struct ProductionOptions {
  std::string redis_url = "redis://127.0.0.1:6379/0";  // redis://[[user]:password@]host[:port][/db]
  std::string postgres_url;          // libpq URL or conninfo (sslmode etc. are passed on)
  std::string key_prefix = "cc:";   // every Redis key starts with it; [A-Za-z0-9:_.-], <= 64 bytes
  int writer_threads = 1;            // 0: no in-process writer (a separate `couponcore worker`)
  bool migrate_on_open = true;
  int64_t answer_ttl_s = 24 * 3600;  // remembered request-id answers live ttl..2*ttl
  std::size_t gate_batch_requests_max = 2048;   // requests decided by one Lua call
  std::size_t gate_pipeline_calls_max = 64;     // Lua calls sent before reading replies
  std::size_t gate_cycle_requests_max = 65'536;  // requests the I/O thread takes per cycle
  std::size_t queued_requests_max = 1'000'000;  // beyond this, submitters wait (then kUnavailable)
  int64_t queue_full_wait_ms = 10'000;
  int64_t redis_connect_timeout_ms = 2'000;
  int64_t redis_command_timeout_ms = 5'000;
  int64_t redis_backoff_max_ms = 1'000;
  int gate_retries_max = 2;          // re-sends of a batch whose reply was lost (request ids only)
  // Replica-acknowledged grants: > 0 (1..16) makes the gate send WAIT replicas_acked
  // replica_wait_ms after each pipeline of batches (one per master touched) and answer only
  // batches that many replicas hold; the others are re-sent or kUnavailable ("not yet
  // replicated"). The writers also wait for the replicas before putting entries in PostgreSQL.
  int replicas_acked = 0;
  int64_t replica_wait_ms = 100;     // 1..60000, below redis_command_timeout_ms
  std::string client_name = "couponcore";  // CLIENT SETNAME base: <name>-gate, -ctl, -writer
  // close() gives the in-process writers this long to put the log into PostgreSQL.
  int64_t close_drain_timeout_ms = 5'000;
  // The coupon lifecycle and partners: a pool of PostgreSQL connections (1..256), and the
  // authentication cache (in-process; then Redis, shared by the deployment's engines).
  std::size_t lifecycle_conns_max = 8;
  AuthOptions auth;
  WriterOptions writer;
  // Live windows (docs/windows.md): every answer is recorded and flushed every windows_flush_ms
  // (10..10000) to the campaign's stream P{cN}:answers, capped near windows_stream_maxlen
  // (1000..100000000) records.
  bool windows = true;
  int64_t windows_flush_ms = 200;
  int64_t windows_stream_maxlen = 100'000;
  EventOptions events;
};

std::unique_ptr<Engine> open_production(const ProductionOptions& options);

// Applies the PostgreSQL migrations of every component (coupons, and those registered by other
// components); returns how many were applied. Safe to run concurrently and repeatedly.
int migrate(const std::string& postgres_url);

// Microseconds since the Unix epoch, from the system clock.
int64_t now_us();

}  // namespace couponcore
