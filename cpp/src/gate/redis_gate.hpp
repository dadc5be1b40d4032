// The Redis gate: one native I/O thread that coalesces concurrent issue requests into batches,
// decides each batch of one campaign with one Lua call (gate/lua/gate.lua), pipelines the calls,
// and answers the callers; plus the sold-out fast path that answers without a round trip.
//
// Threads and connections:
//   callers     answer from the sold-out fast path when they can, else queue (a BoundedQueue of
//               queued_requests_max requests)
//   I/O thread  one gate connection. Takes what is queued (<= gate_cycle_requests_max),
//               groups it per campaign into Lua calls of <= gate_batch_requests_max requests,
//               pipelines <= gate_pipeline_calls_max EVALSHAs per round trip, decodes the
//               replies in order and runs the callbacks, then the batch-end hook once. A missing
//               mirror (NOCAMPAIGN) is rebuilt on this thread from PostgreSQL over the gate's
//               OWN connection, so nothing an operator runs elsewhere (reconcile) can stall it.
//
// Remembered answers: a request id's first answer is kept in a per-campaign hash per
// generation of answer_ttl_s seconds (P{cN}:a:<now_s / ttl>); the script reads the current and
// the previous generation and writes the current one, which expires 2*ttl after its last
// write. So an answer is remembered for at least answer_ttl_s and at most about 2*answer_ttl_s,
// at the cost of one EXPIRE per Lua call, not per request.
//
// Dropped connection: the calls whose replies were lost have an unknown outcome. A submission
// whose requests all carry request ids is re-sent after the reconnect (gate_retries_max times):
// the script answers the ones it had decided from the remembered answers, so the caller gets
// the true answer. Any other submission gets kUnavailable; what it was granted, if anything,
// is in the grant log and lands in PostgreSQL like every grant (a retry says ALREADY_ISSUED).
//
// Replicas (replicas_acked > 0): after each pipeline of calls the I/O thread appends
// WAIT replicas_acked replica_wait_ms on the same connection — one per master that took a call
// of it on a cluster, one in all on a single server; never one per request. WAIT answers how
// many replicas acknowledged every write this connection made, so a call whose master's WAIT
// answered fewer (or was lost) is not answered from its reply: its grants are in the master's
// log and may or may not survive a failover. Such a submission is treated like a lost reply:
// with request ids on every request it is re-sent (the script answers from the remembered
// answers and a new WAIT follows), else, and once the re-sends are spent, kUnavailable
// ("not yet replicated": retry with the same request_id). A call redirected to another master
// (MOVED / ASK) gets a WAIT of its own on that master before its answer is used.
//
// Sold out: when a reply shows issued >= quantity, the I/O thread reads the mirror and the
// holder hash (HSCAN) and from then on callers are answered in their own thread with no round
// trip: NOT_OPEN / ENDED by state and window, ALREADY_ISSUED for holders at their limit,
// SOLD_OUT otherwise — never counted against the rate limits, as the script does not count a
// sold-out campaign's answers either (docs/rate-limits.md). A holder's request carrying a
// request id still goes to Redis, where its remembered ISSUED answer lives. (Known difference:
// a non-holder retrying, after the sell-out, a request id first answered NOT_OPEN gets
// SOLD_OUT.) The fast path lives kFastPathRecheckMs:
// then one request goes to Redis again, and the path is re-armed from the mirror (the holders
// are re-read only if issued or quantity changed). So another process's pause or quantity raise
// reaches this one within kFastPathRecheckMs; this process's own rule changes disarm it at once.
//
// Sharded campaigns (gate/shards.hpp): a submission's requests go to their users' shards, one
// call per shard (gate_shard.lua). A request answered DRY is not answered yet: after the cycle's
// calls, the I/O thread moves stock into each dry shard from the others and asks again
// (resolve_dry), and answers SOLD_OUT only when every shard is dry. Then the sold-out fast path
// is armed as above, from every shard: no shard with a free seq, no move in flight, the holders
// of every shard (a user is in one). A dead-letter drop (a seq back to a shard) disarms it.
#pragma once

#include <atomic>
#include <chrono>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "couponcore/engine.hpp"
#include "gate/mirror.hpp"
#include "redis/replica_wait.hpp"
#include "store/postgres/pg.hpp"
#include "util/bounded_queue.hpp"

namespace couponcore::detail {
class Pipeline;
}

namespace couponcore::gate {

struct RedisGateOptions {
  std::string key_prefix;
  std::string postgres_url;  // for mirror repair, on the gate's own connection
  int64_t answer_ttl_s = 0;
  std::size_t batch_requests_max = 0;
  std::size_t pipeline_calls_max = 0;
  std::size_t cycle_requests_max = 0;
  std::size_t queued_requests_max = 0;
  int64_t queue_full_wait_ms = 0;
  int retries_max = 0;
  // Replica acknowledgement: > 0 sends WAIT replicas_acked replica_wait_ms after each
  // pipeline of calls, on the same connection (on a cluster: one per master touched), and a
  // call answers only if that many replicas hold it (see "Replicas" above).
  int replicas_acked = 0;
  int64_t replica_wait_ms = 0;
};

// What the gate counts; the pipeline adds it to EngineCounters.
struct GateCounters {
  EngineCounters answers;  // requests, by_status, fast_path, batches, commits, unavailable
  uint64_t connects = 0;
  uint64_t replica_waits = 0;       // WAITs sent (replicas_acked > 0), stock moves' included
  uint64_t replica_shortfalls = 0;  // calls (or stock move steps) whose master's WAIT answered too few replicas
};

class RedisGate {
 public:
  RedisGate(RedisGateOptions options, const redis::RedisUrl& url, const redis::RedisConnOptions& conn_options,
            detail::Pipeline& owner);
  ~RedisGate();
  RedisGate(const RedisGate&) = delete;
  RedisGate& operator=(const RedisGate&) = delete;

  // Answers from the fast path in the caller's thread, or queues for the I/O thread.
  void submit(std::shared_ptr<GateCampaign> campaign, std::vector<IssueRequest> requests, IssueCallback cb);
  // Finishes what was queued, then stops the I/O thread.
  void close();
  GateCounters counters() const;

 private:
  struct Pending;
  struct Segment;
  struct Call;
  using Queued = std::unique_ptr<Pending>;

  void io_loop();
  void process(std::vector<std::pair<Queued, std::size_t>>& batch);
  std::vector<Call> build_calls(std::vector<std::pair<Queued, std::size_t>>& batch);
  redis::Args call_args(const Call& call, int64_t generation) const;
  void note_call(TraceBuffer& tracer, const Call& call, int64_t sent_us) const;
  void send(std::vector<Call>& calls);
  bool decode(const Call& call, const redis::Reply& r);  // true if the reply was a decision
  void decode_shard(const Call& call, const redis::Reply& r);
  void mark_lost(const Call& call, const std::string& reason);
  redis::Args wait_args() const;
  void check_replicas(const std::vector<std::pair<Call*, std::string>>& decided, const std::vector<std::string>& waited);
  void fail_call(const Call& call, std::exception_ptr error);
  void resolve_dry();
  void publish_sold_out();
  void arm_fast_path(GateCampaign& c);
  bool answer_locally(GateCampaign& e, const std::vector<IssueRequest>& requests, std::vector<IssueResult>* out);
  void count(const std::vector<IssueResult>& results, bool fast);

  const RedisGateOptions options_;
  detail::Pipeline& owner_;  // histograms and the batch-end hook
  BoundedQueue<Queued> queue_;

  // I/O thread only.
  redis::RedisConn redis_;
  redis::Script script_;
  redis::Script shard_script_;
  struct Dry {
    Pending* pending;
    std::size_t index;
    GateCampaign* campaign;
    int shard;
  };
  std::vector<Dry> dry_;  // requests a shard answered DRY this cycle
  std::string move_id_base_;
  uint64_t moves_ = 0;
  redis::ReplicaWaitCounts move_waits_;  // the stock moves' WAITs (replicas_acked > 0)
  MirrorScripts mirror_scripts_;
  pg::Conn repair_pg_;  // mirror repair: the gate's own PostgreSQL connection, opened when needed
  std::vector<GateCampaign*> sold_out_now_;
  std::vector<GateCampaign*> restore_queue_;
  std::string lost_reason_;
  bool lost_after_send_ = false;  // the lost calls had been sent: their outcome is unknown

  mutable std::mutex counters_mu_;
  GateCounters counters_;
  std::atomic<bool> stopping_{false};
  std::thread io_thread_;
};

}  // namespace couponcore::gate
