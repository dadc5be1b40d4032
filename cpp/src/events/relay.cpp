// The outbox relay: see relay.hpp.
#include "events/relay.hpp"

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <memory>

#include "couponcore/error.hpp"
#include "events/event.hpp"
#include "store/postgres/pg.hpp"
#include "store/postgres/pg_events.hpp"

namespace couponcore::events {

namespace {
// One active relay per database and key prefix: it holds the prefix's exclusive advisory lock (a
// 64-bit hash of "cc-ev:<prefix>") and the shared lock of the database-wide key that relays held
// exclusively before outboxes were per prefix (so one of those never runs beside us).
constexpr int64_t kRelayLockKey = 0x63632d6576;  // "cc-ev"
constexpr int kStandbyPolls = 10;                 // a standby tries the locks every 10 polls
constexpr std::size_t kFlushEvery = 512;          // XADDs sent while the rest are built
}  // namespace

class RelayConns {
 public:
  RelayConns(const std::string& postgres_url, const redis::RedisUrl& url, const redis::RedisConnOptions& ro)
      : pg(postgres_url, pg_options()), redis(url, ro) {}
  pg::Conn pg;
  redis::RedisConn redis;
  uint64_t locked_generation = 0;  // the PG connection generation holding the lock; 0: none
  int64_t watermark = 0;           // the highest sequence published in relayed_key

 private:
  static pg::ConnOptions pg_options() {
    pg::ConnOptions o;
    o.application_name = "couponcore-relay";
    o.statement_timeout_ms = 30'000;
    return o;
  }
};

Relay::Relay(std::string key_prefix, redis::RedisUrl url, redis::RedisConnOptions redis_options,
             std::string postgres_url, EventOptions options)
    : prefix_(std::move(key_prefix)),
      url_(std::move(url)),
      redis_options_(std::move(redis_options)),
      postgres_url_(std::move(postgres_url)),
      options_(options) {
  thread_ = std::thread([this] { run(); });
}

Relay::~Relay() { stop(); }

void Relay::stop(int64_t drain_ms) {
  drain_until_ms_ = redis::steady_ms() + drain_ms;
  stop_ = true;
  if (thread_.joinable()) thread_.join();
}

bool Relay::try_lock(RelayConns& c) {
  pg::Result r = c.pg.exec(
      "SELECT CASE WHEN pg_try_advisory_lock_shared($1) THEN pg_try_advisory_lock(hashtextextended($2, 0))"
      " ELSE false END",
      pg::Params().add(kRelayLockKey).add("cc-ev:" + prefix_));
  if (r.text(0, 0) != "t") {
    c.pg.exec("SELECT pg_advisory_unlock_all()");  // a standby holds neither
    return false;
  }
  // A lost commit only publishes again (the same ids): the DELETEs need not wait for the WAL.
  c.pg.exec("SET synchronous_commit = off");
  // The watermark only grows: continue from the previous relay's.
  redis::Reply w = c.redis.command(redis::Args{"GET", relayed_key(prefix_)});
  redis::check_reply(w, "event relay GET watermark");
  c.watermark = w.is_nil() ? 0 : std::atoll(std::string(w.str()).c_str());
  c.locked_generation = c.pg.generation();
  return true;
}

int64_t Relay::relay_once(RelayConns& c) {
  pg::Tx tx(c.pg);
  std::vector<Row> rows = pgevents::take_batch(c.pg, prefix_, options_.relay_batch_max);
  if (c.pg.generation() != c.locked_generation) throw Error(ErrorCode::kUnavailable, "the relay lost its lock");
  if (rows.empty()) return 0;
  // The CloudEvent JSON is built while the XADDs sent so far are being executed.
  int64_t top = 0;
  for (std::size_t i = 0; i < rows.size(); ++i) {
    const Row& r = rows[i];
    top = std::max(top, r.seq);
    c.redis.append(redis::Args{"XADD", stream_key(prefix_, r.type), "MAXLEN", "~"}
                       .add(options_.stream_maxlen)
                       .add("*")
                       .add("id")
                       .add(r.id)
                       .add("e")
                       .add(cloudevent_json(r)));
    if ((i + 1) % kFlushEvery == 0) c.redis.flush();
  }
  for (std::size_t i = 0; i < rows.size(); ++i) redis::check_reply(c.redis.read_reply(), "event relay XADD");
  // Every XADD is acknowledged: readers of several types may hand out events up to here.
  if (top > c.watermark) {
    redis::check_reply(c.redis.command(redis::Args{"SET", relayed_key(prefix_)}.add(top)), "event relay SET watermark");
    c.watermark = top;
  }
  const int64_t n = static_cast<int64_t>(rows.size());
  batches_++;
  if (options_.relay_stop_after_xadd_batches > 0 && batches_.load() >= options_.relay_stop_after_xadd_batches) {
    crashed_ = true;  // fault injection: "dies" between XADD and the DELETE's commit (rolled back)
    stop_ = true;
    return n;
  }
  tx.commit();
  relayed_ += n;
  return n;
}

void Relay::run() {
  std::unique_ptr<RelayConns> c;
  int polls = 0;
  int64_t backoff_ms = 0;
  int64_t last = -1;  // rows of the last batch; -1: none yet
  for (;;) {
    // Stopping: the active relay first publishes what is in the outbox, within drain_ms.
    if (stop_.load() && (crashed_ || !c || c->locked_generation == 0 || last == 0 ||
                         redis::steady_ms() >= drain_until_ms_.load())) {
      break;
    }
    try {
      if (!c) c = std::make_unique<RelayConns>(postgres_url_, url_, redis_options_);
      if (c->locked_generation == 0) {
        if (polls++ % kStandbyPolls == 0) try_lock(*c);
        active_ = c->locked_generation != 0;
        if (!active_) {
          std::this_thread::sleep_for(std::chrono::milliseconds(options_.relay_poll_ms));
          continue;
        }
      }
      const int64_t n = last = relay_once(*c);
      backoff_ms = 0;
      if (n < static_cast<int64_t>(options_.relay_batch_max) && !stop_.load()) {
        std::this_thread::sleep_for(std::chrono::milliseconds(options_.relay_poll_ms));
      }
    } catch (const Error&) {
      // Drop both connections (a new connection holds no lock) and back off.
      c.reset();
      active_ = false;
      backoff_ms = std::min<int64_t>(backoff_ms == 0 ? 50 : backoff_ms * 2, 1000);
      for (int64_t waited = 0; waited < backoff_ms && !stop_.load(); waited += 10) {
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
      }
    }
  }
  active_ = false;
}

}  // namespace couponcore::events
