// The outbox relay (production; docs/events.md): a thread that moves `event_outbox` rows to
// one Redis Stream per type. One relay is active per database and key prefix at a time: it holds
// the prefix's advisory lock on its own PostgreSQL connection (the others try again every few
// polls and stand by); a lost connection drops the lock, and the relay that next takes it
// continues. It publishes only its prefix's outbox rows (pg_events.hpp).
//
// A batch, in one PostgreSQL transaction: DELETE the prefix's first relay_batch_max rows (seq
// order) RETURNING them, XADD each (pipelined, sent in chunks while the rest are built, MAXLEN ~
// stream_maxlen) to <prefix>events:{<type>} with the fields `id <event id> e <CloudEvent JSON>`,
// then, once every XADD is acknowledged, raise the watermark <prefix>events:relayed to the
// batch's highest sequence (readers of several types on a cluster hand out events only up to
// it), then COMMIT (synchronous_commit off: a commit lost in a crash only republishes). A crash
// or failure between the XADD and the commit rolls the DELETE back: the rows are published
// again with the same event ids (at-least-once; consumers dedupe by id). Within a type stream
// the order is seq order.
#pragma once

#include <atomic>
#include <cstdint>
#include <string>
#include <thread>

#include "couponcore/engine.hpp"
#include "redis/redis.hpp"

namespace couponcore::events {

class Relay {
 public:
  Relay(std::string key_prefix, redis::RedisUrl url, redis::RedisConnOptions redis_options, std::string postgres_url,
        EventOptions options);
  ~Relay();  // stops and joins
  Relay(const Relay&) = delete;
  Relay& operator=(const Relay&) = delete;

  // Stops and joins; the active relay first publishes the outbox, for at most drain_ms.
  void stop(int64_t drain_ms = 0);
  int64_t relayed() const { return relayed_.load(); }
  int64_t batches() const { return batches_.load(); }
  bool active() const { return active_.load(); }

 private:
  void run();
  // Takes the prefix's locks if they are free; reads the watermark. False: stand by.
  bool try_lock(class RelayConns& c);
  // One batch; returns the rows relayed (0: the outbox was empty).
  int64_t relay_once(RelayConns& c);

  const std::string prefix_;
  const redis::RedisUrl url_;
  const redis::RedisConnOptions redis_options_;
  const std::string postgres_url_;
  const EventOptions options_;
  std::atomic<bool> stop_{false};
  std::atomic<int64_t> drain_until_ms_{0};
  bool crashed_ = false;  // the fault injection fired: no drain
  std::atomic<int64_t> relayed_{0}, batches_{0};
  std::atomic<bool> active_{false};
  std::thread thread_;
};

}  // namespace couponcore::events
