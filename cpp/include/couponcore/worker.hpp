// The standalone grant writer: `couponcore worker --redis URL --postgres URL` runs this for
// deployments that keep the writer out of the web processes (ProductionOptions::writer_threads
// = 0 there). It does exactly what the engine's in-process writers do: reads every campaign's
// grant stream through the consumer group "writers", inserts batches idempotently into
// PostgreSQL, commits, then acknowledges; claims entries left pending by dead consumers;
// dead-letters entries that keep failing; backs off (with jitter, behind a circuit breaker)
// while PostgreSQL is down. Any number of workers may run side by side.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "couponcore/engine.hpp"

namespace couponcore {

struct WorkerStats {
  uint64_t grants_written = 0;   // rows inserted (redeliveries of present rows not counted)
  uint64_t batches = 0;          // committed batches
  uint64_t dead_lettered = 0;    // entries moved to a dead-letter stream
  uint64_t failures = 0;         // failed attempts (database or Redis down, ...)
  uint64_t claimed = 0;          // entries claimed from other (dead) consumers
  uint64_t replica_waits = 0;    // WAITs sent before inserting (replicas_acked > 0)
  uint64_t replica_wait_shortfalls = 0;  // of which counted too few replicas (entries held back)
  bool breaker_open = false;     // the circuit breaker is open right now
};

struct WorkerOptions {
  std::string redis_url = "redis://127.0.0.1:6379/0";
  std::string postgres_url;
  std::string key_prefix = "cc:";
  int threads = 1;                 // writer threads, each with its own connections (1..64)
  std::string consumer_name;       // base name; default "<host>-<pid>"; threads add "-<n>"
  bool migrate_on_start = true;    // apply the migrations first (retrying while PG is down)
  // > 0: entries go to PostgreSQL only once WAIT says this many replicas hold them (as the
  // in-process writers of an engine opened with ProductionOptions::replicas_acked).
  int replicas_acked = 0;
  int64_t replica_wait_ms = 100;
  WriterOptions writer;
  EventOptions events;  // the grants' events, and this worker's outbox relay (docs/events.md)
  // Called every report_interval_ms (0 = never) from run_worker's thread.
  int64_t report_interval_ms = 0;
  std::function<void(const WorkerStats&)> report;
  // A trace sink (couponcore/tracing.hpp): while enabled, each writer commit is noted in it (the
  // spans "couponcore.writer.commit", docs/tracing.md). Not owned; must outlive run_worker.
  TraceSlot* trace = nullptr;
};

// Runs until `stop` becomes true (e.g. from a signal handler), then finishes the batch in hand
// and returns 0. Throws couponcore::Error(kInvalidArgument) for bad options; servers that are
// down are waited for, never fatal.
int run_worker(const WorkerOptions& options, std::atomic<bool>& stop);

// The grant log's backlog as Engine::log_backlog() reads it (same campaigns, same gauges), over
// a Redis connection of its own: the standalone worker's metrics endpoint. Not thread-safe: one
// caller at a time. read() throws Error(kUnavailable) when Redis does not answer (the next call
// reconnects, after the connection's backoff).
class LogBacklogReader {
 public:
  LogBacklogReader(const std::string& redis_url, const std::string& key_prefix);
  ~LogBacklogReader();
  LogBacklogReader(const LogBacklogReader&) = delete;
  LogBacklogReader& operator=(const LogBacklogReader&) = delete;
  std::vector<LogBacklog> read();
  // Writer consumers of the deployment whose heartbeat is younger than dead_after_ms.
  int64_t writers_alive(int64_t dead_after_ms);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace couponcore
