// Replica acknowledgement outside the gate's batch pipeline: stock moves between a sharded
// campaign's shards and reconcile's re-drive (ProductionOptions::replicas_acked). The gate's
// batches and the writers pipeline their WAITs themselves (redis_gate.cpp, grant_writer.cpp).
//
// WAIT answers how many replicas hold everything up to this connection's replication offset,
// and Redis sets that offset after every command, reads included (measured on Redis 7.0: a
// GET on a fresh connection, then WAIT, counts 0 while the replica is stopped after another
// connection's write). So a WAIT after reading a record covers that record, whoever wrote it.
#pragma once

#include <atomic>
#include <cstdint>
#include <string_view>

#include "redis/redis.hpp"

namespace couponcore::redis {

struct ReplicaWaitCounts {
  std::atomic<uint64_t> waits{0};       // WAITs sent
  std::atomic<uint64_t> shortfalls{0};  // WAITs that counted fewer replicas than asked (or none)
};

struct ReplicaWait {
  int replicas = 0;  // 0: off
  int64_t wait_ms = 0;
  ReplicaWaitCounts* counts = nullptr;  // optional

  bool on() const { return replicas > 0; }
  // WAIT replicas wait_ms on the master that serves key (on a single server or behind Sentinel:
  // the one connection). Nothing when off. Fewer replicas in time: kUnavailable "not yet
  // replicated: <what> ...". Call with no reply left unread on conn.
  void require(RedisConn& conn, std::string_view key, std::string_view what) const;
};

}  // namespace couponcore::redis
