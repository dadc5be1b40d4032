// Writer liveness by heartbeat: who writes the grant log, who died, and what nobody read yet.
//
// The registry: one hash per deployment, P"writers", consumer name -> its last beat (ms since
// the epoch on the Redis server's clock, written by writer/lua/beat.lua, so no host clock is
// ever compared with another). A hash rather than a key per consumer with a TTL: a dead
// consumer must stay visible until its pending entries are taken over (a TTL would erase the
// evidence, and a consumer whose key expired looks like one that never beat), and one HGETALL
// lists the deployment. Its size stays bounded: a dead consumer is forgotten once it holds
// nothing (reap), a clean shutdown retires its consumers at once.
//
//   Heartbeat        one thread per process (engine with in-process writers, or run_worker):
//                    beats for all the process's consumers every heartbeat_interval_ms. It
//                    shares nothing with the writers' loops, so a batch stalled on PostgreSQL
//                    (up to the writer's 30 s statement timeout) never makes its consumer look
//                    dead; only a dead process (or one cut off from Redis) stops beating.
//   read_registry    the registry and the server's TIME, pipelined on one connection
//   pending_summaries  XPENDING summaries (consumer -> count) of many streams, pipelined
//   reap             a dead consumer that holds nothing: XGROUP DELCONSUMER on every stream
//                    (check and removal in one script), then its registry entry (unless it beat
//                    again meanwhile)
//   list_writers     Engine::writers(): the registry and every consumer with pending entries
//   add_unread_ages  LogBacklog::oldest_unread_age_ms of every campaign of a backlog
// The takeover itself (XPENDING of the dead consumer, XCLAIM with a min-idle time so that of
// two live writers racing only one gets each entry) is GrantWriter::claim_dead.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <mutex>
#include <string>
#include <string_view>
#include <thread>
#include <unordered_set>
#include <utility>
#include <vector>

#include "couponcore/engine.hpp"
#include "couponcore/types.hpp"
#include "redis/keys.hpp"
#include "redis/redis.hpp"

namespace couponcore::writer {

// P"writers": the heartbeat registry hash.
std::string registry_key(std::string_view prefix);

// Throws kInvalidArgument unless heartbeat_interval_ms and dead_after_ms are sound.
void check_liveness_options(const WriterOptions& o);

// The min-idle time of a takeover's XCLAIM: an entry of a consumer dead by heartbeat has been
// idle at least about dead_after - interval; requiring dead_after - 2 * interval (>= interval)
// keeps that margin and lets only the first of two racing claimers have it.
int64_t takeover_min_idle_ms(const WriterOptions& o);

struct BeatRecord {
  std::string consumer;
  std::string raw;       // the stored value, as forget.lua compares it
  int64_t beat_ms = -1;  // -1: unreadable
};
struct RegistrySnapshot {
  int64_t now_ms = 0;  // the Redis server's TIME
  std::vector<BeatRecord> beats;
};
RegistrySnapshot read_registry(redis::RedisConn& conn, std::string_view prefix);

// XPENDING <stream> writers (summary) of each stream, pipelined in chunks: per stream, the
// consumers holding entries and how many. A stream without group reports nobody.
using PendingByConsumer = std::vector<std::pair<std::string, int64_t>>;
std::vector<PendingByConsumer> pending_summaries(redis::RedisConn& conn, const std::vector<std::string>& streams);

class Heartbeat {
 public:
  // Beats once for every consumer before returning (a failure there is logged, not thrown: the
  // writers still run, and the next beat follows), then every interval_ms on its own thread.
  Heartbeat(std::string prefix, const redis::RedisUrl& url, redis::RedisConnOptions options, int64_t interval_ms,
            std::vector<std::string> consumers);
  ~Heartbeat();
  Heartbeat(const Heartbeat&) = delete;
  Heartbeat& operator=(const Heartbeat&) = delete;

  // Stops beating (idempotent). Consumers not retired keep their last beat: they are judged
  // dead dead_after_ms later, and another writer takes over whatever they still hold.
  void stop();
  // A consumer that leaves holding nothing: no more beats, and its registry entry goes now (on
  // the caller's connection, under the lock the beats take, so no beat brings it back).
  void retire(const std::string& consumer, redis::RedisConn& conn);
  bool is_ours(const std::string& consumer) const { return ours_.count(consumer) > 0; }

 private:
  void run();
  void beat_locked();

  const std::string prefix_;
  const std::string key_;
  const int64_t interval_ms_;
  const std::unordered_set<std::string> ours_;
  std::mutex mu_;  // consumers_, conn_, stop_
  std::condition_variable cv_;
  bool stop_ = false;
  bool failing_ = false;
  std::vector<std::string> consumers_;
  redis::RedisConn conn_;
  redis::Script beat_script_;
  std::thread thread_;
};

// Removes a dead consumer from the group of every stream where it holds nothing, then forgets
// its registry entry if it still holds `raw` and the consumer is gone from every stream.
// Returns true if forgotten.
bool reap(redis::RedisConn& conn, std::string_view prefix, const std::vector<std::string>& streams,
          const BeatRecord& dead);

// The deployment's writers: every consumer in the registry, and every consumer holding entries
// in one of the given streams, by name.
std::vector<WriterInfo> list_writers(redis::RedisConn& conn, std::string_view prefix,
                                     const std::vector<std::string>& streams, int64_t dead_after_ms);

// Sets oldest_unread_age_ms of each element (one pipelined script call per campaign + TIME).
void add_unread_ages(redis::RedisConn& conn, std::string_view prefix, std::vector<LogBacklog>& backlog);

}  // namespace couponcore::writer
