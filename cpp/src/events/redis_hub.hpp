// The production consumer API (couponcore/events.hpp) over the type streams the relay fills:
// a group is created at the start of each stream it reads (XGROUP CREATE ... 0 MKSTREAM);
// a reader reads its own pending entries first (XREADGROUP ... 0), then claims entries idle on
// another consumer for claim_idle_ms (XAUTOCLAIM, once a second), then new ones (XREADGROUP
// ... >; BLOCK over all its streams on one Redis, per stream with a short poll on a cluster,
// where each type stream has its own hash tag). A reader of several types hands out events in
// sequence order up to the last sequence of any full read and, on a cluster, up to the relay's
// watermark read before the streams (relay.hpp); it holds later ones (delivered to it, pending)
// for a later read. Dead letters: XADD to <prefix>events:dl:{<group>}.
#pragma once

#include <functional>
#include <memory>
#include <string>

#include "couponcore/engine.hpp"
#include "couponcore/events.hpp"
#include "redis/redis.hpp"
#include "store/postgres/conn_pool.hpp"

namespace couponcore::events {

struct RedisHubParts {
  std::string key_prefix;
  redis::RedisUrl url;
  redis::RedisConnOptions conn_options;
  std::function<EventStats()> stats;  // the relay's counters and the outbox backlog
};

std::unique_ptr<EventHub> make_redis_hub(RedisHubParts parts);

// What a production engine runs for events: the relay (unless EventOptions::relay is off) and
// the hub; stats() reads the relay's counters and the outbox backlog over `pool`.
class Relay;
class ProductionEvents {
 public:
  ProductionEvents();
  ~ProductionEvents();
  EventHub* start(const ProductionOptions& o, const redis::RedisUrl& url, const redis::RedisConnOptions& relay_conn,
                  const redis::RedisConnOptions& reader_conn, pg::ConnPool& pool);
  // Stops the relay, which first publishes the outbox for at most drain_ms; the hub stays
  // (reads after close() fail at the engine).
  void stop(int64_t drain_ms = 0);

 private:
  std::unique_ptr<Relay> relay_;
  std::unique_ptr<EventHub> hub_;
};

}  // namespace couponcore::events
