// The outbox relay (production; docs/events.md): a thread that moves `event_outbox` rows to
// one Redis Stream per type. One relay is active per database at a time: it holds a session
// advisory lock on its own PostgreSQL connection (the others try again every few polls and
// stand by); a lost connection drops the lock, and the relay that next takes it continues.
//
// A batch: read up to relay_batch_max rows in seq order, XADD each (pipelined, MAXLEN ~
// stream_maxlen) to <prefix>events:{<type>} with the fields `id <event id> e <CloudEvent JSON>`,
// then DELETE those rows. A crash or failure between the XADD and the DELETE leaves the rows in
// the outbox: they are published again with the same event ids (at-least-once; consumers
// dedupe by id). Within a type stream the order is seq order.
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

  void stop();
  int64_t relayed() const { return relayed_.load(); }
  int64_t batches() const { return batches_.load(); }
  bool active() const { return active_.load(); }

 private:
  void run();
  // One batch; returns the rows relayed (0: the outbox was empty).
  int64_t relay_once(class RelayConns& c);

  const std::string prefix_;
  const redis::RedisUrl url_;
  const redis::RedisConnOptions redis_options_;
  const std::string postgres_url_;
  const EventOptions options_;
  std::atomic<bool> stop_{false};
  std::atomic<int64_t> relayed_{0}, batches_{0};
  std::atomic<bool> active_{false};
  std::thread thread_;
};

}  // namespace couponcore::events
