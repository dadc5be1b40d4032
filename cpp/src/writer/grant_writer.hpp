// The grant writer: moves grants from the campaigns' grant streams into PostgreSQL.
//
// One GrantWriter is one thread with its own Redis and PostgreSQL connections; the engine runs
// ProductionOptions::writer_threads of them, run_worker() runs WorkerOptions::threads. A loop:
//   1. every campaigns_refresh_ms: SMEMBERS Pcampaigns; XGROUP CREATE for new streams
//   2. every heartbeat_interval_ms (one thread of the process at a time): consumers whose
//      heartbeat is older than dead_after_ms (writer/liveness.hpp) are dead: XPENDING of each,
//      XCLAIM to me with a min-idle time (of two live writers racing, one gets each entry);
//      once a dead consumer holds nothing, XGROUP DELCONSUMER and it leaves the registry.
//      Every claim_interval_ms: XAUTOCLAIM entries idle > claim_idle_ms on any consumer (one
//      that never beat: an older version), XPENDING for their delivery counts
//   3. otherwise XREADGROUP GROUP writers <me> COUNT n BLOCK block_ms STREAMS ... >, where n
//      is read_count_max divided by the grants per entry of the previous read (an entry holds
//      one gate batch: up to 2,048 grants; older entries one), so a read brings about
//      read_count_max grants
//   4. write the batch: GrantLog::prepare parses it (malformed -> dead letter at once: retrying
//      cannot fix it); grantlog::commit_entries writes it in one transaction, commits, then
//      acknowledges (log/lua/ack.lua: XACK, then XTRIM MINID up to the oldest pending entry:
//      only acknowledged entries are ever removed, one trim per batch instead of an XDEL per
//      entry). An entry with a grant the database refuses (conflict, foreign key) stays pending
//      and comes back through XAUTOCLAIM (its other grants are written again, idempotently); on
//      its dead_letter_after_deliveries-th delivery the refused grants move to the dead-letter
//      stream, one record each with its reason, and the entry is removed (log/lua/dead_letter.lua).
//   5. database down: the batch stays in hand (and in our PEL, its idle time refreshed by
//      XCLAIM JUSTID so no one else claims it), the shared circuit breaker paces retries, and
//      no new entries are read: grants wait in the stream.
// A crash anywhere before the XACK means redelivery; the insert is idempotent (ON CONFLICT DO
// NOTHING on the unique keys), so redelivery never makes a duplicate row.
#pragma once

#include <atomic>
#include <cstdint>
#include <string>
#include <unordered_map>
#include <unordered_set>
#include <utility>
#include <vector>

#include "couponcore/engine.hpp"
#include "couponcore/metrics.hpp"
#include "couponcore/types.hpp"
#include "couponcore/worker.hpp"
#include "log/grant_log.hpp"
#include "store/postgres/pg.hpp"
#include "redis/keys.hpp"
#include "redis/redis.hpp"
#include "writer/backoff.hpp"
#include "writer/liveness.hpp"

namespace couponcore::writer {

using grantlog::LogEntry;
using grantlog::StreamBatch;

// What all writer threads of one process share.
struct WriterShared {
  WriterShared(std::string prefix_, redis::RedisUrl redis_url_, redis::RedisConnOptions redis_options_,
               std::string postgres_url_, WriterOptions options_, std::atomic<bool>& stop_)
      : prefix(std::move(prefix_)),
        redis_url(std::move(redis_url_)),
        redis_options(std::move(redis_options_)),
        postgres_url(std::move(postgres_url_)),
        options(options_),
        stop(stop_),
        breaker(options_.breaker_failures, options_.backoff_initial_ms, options_.backoff_max_ms) {}
  const std::string prefix;
  const redis::RedisUrl redis_url;
  const redis::RedisConnOptions redis_options;
  const std::string postgres_url;
  const WriterOptions options;
  std::atomic<bool>& stop;
  CircuitBreaker breaker;
  std::atomic<uint64_t> written{0}, batches{0}, dead_lettered{0}, failures{0}, claimed{0};
  Histogram* commit_grants = nullptr;  // grants per committed batch, when an engine keeps one
  Heartbeat* heartbeat = nullptr;      // the process's beats, once started (before the writers)
  std::atomic<int64_t> next_dead_scan_ms{0};  // steady clock: one thread scans per interval
  // > 0: entries read are put in PostgreSQL only once WAIT replicas_acked replica_wait_ms on
  // their master says that many replicas hold them (ProductionOptions::replicas_acked).
  int replicas_acked = 0;
  // Write the domain events of the grants (EventOptions::enabled; docs/events.md).
  bool events = true;
  int64_t replica_wait_ms = 0;

  WorkerStats stats() const;
};

// Checks WriterOptions; throws kInvalidArgument.
void check_writer_options(const WriterOptions& o);

class GrantWriter {
 public:
  GrantWriter(WriterShared& shared, std::string consumer);
  void run();  // until shared.stop

 private:
  void refresh_streams(int64_t now_ms);
  void claim_idle(std::vector<StreamBatch>& out);
  void claim_dead(std::vector<StreamBatch>& out);  // step 2 by heartbeat
  void read_new(std::vector<StreamBatch>& out);
  void read_new_per_stream(const std::vector<const redis::CampaignKeys*>& chosen, bool block,
                           std::vector<StreamBatch>& out);
  // True when the batch is finished with (written, dead-lettered or left pending to come
  // back); false when it must be retried after *wait_ms (the database is down, or the
  // breaker says wait).
  bool write(std::vector<StreamBatch>& batch, int64_t now_ms, int64_t* wait_ms);
  void refresh_idle(const std::vector<StreamBatch>& batch, int64_t now_ms);  // XCLAIM JUSTID: keep what we hold from XAUTOCLAIM
  void adapt_read_size(const std::vector<StreamBatch>& batch);  // sets entries_per_read_
  void say_goodbye();  // XGROUP DELCONSUMER where we hold nothing; retire if nowhere
  void sleep_ms(int64_t ms);
  void wait_replicas(const std::vector<StreamBatch>& batch);  // throws kUnavailable if too few

  WriterShared& sh_;
  const std::string consumer_;
  redis::RedisConn redis_;
  pg::Conn pg_;
  grantlog::GrantLog log_{redis_};
  std::vector<redis::CampaignKeys> streams_;
  std::unordered_set<int64_t> known_;
  std::unordered_map<int64_t, std::string> claim_cursor_;
  std::size_t read_window_ = 0;
  std::size_t claim_window_ = 0;
  int64_t next_refresh_ms_ = 0;
  int64_t next_claim_ms_ = 0;
  int64_t last_refresh_ms_ = 0;
  int redis_failures_ = 0;
  int64_t entries_per_read_ = 16;  // see step 3 above; starts small until entries are seen
  std::mt19937_64 rng_{std::random_device{}()};
};

// The default consumer base name: "<host>-<pid>-<random>".
std::string default_consumer_base();

}  // namespace couponcore::writer
