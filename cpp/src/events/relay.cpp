// The outbox relay: see relay.hpp.
#include "events/relay.hpp"

#include <chrono>
#include <memory>

#include "couponcore/error.hpp"
#include "events/event.hpp"
#include "store/postgres/pg.hpp"
#include "store/postgres/pg_events.hpp"

namespace couponcore::events {

namespace {
constexpr int64_t kRelayLockKey = 0x63632d6576;  // "cc-ev": one active relay per database
constexpr int kStandbyPolls = 10;                 // a standby tries the lock every 10 polls
}  // namespace

class RelayConns {
 public:
  RelayConns(const std::string& postgres_url, const redis::RedisUrl& url, const redis::RedisConnOptions& ro)
      : pg(postgres_url, pg_options()), redis(url, ro) {}
  pg::Conn pg;
  redis::RedisConn redis;
  uint64_t locked_generation = 0;  // the PG connection generation holding the lock; 0: none

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

void Relay::stop() {
  stop_ = true;
  if (thread_.joinable()) thread_.join();
}

int64_t Relay::relay_once(RelayConns& c) {
  std::vector<Row> rows = pgevents::read_batch(c.pg, options_.relay_batch_max);
  if (c.pg.generation() != c.locked_generation) throw Error(ErrorCode::kUnavailable, "the relay lost its lock");
  if (rows.empty()) return 0;
  std::vector<int64_t> seqs;
  seqs.reserve(rows.size());
  for (const Row& r : rows) {
    c.redis.append(redis::Args{"XADD", stream_key(prefix_, r.type), "MAXLEN", "~"}
                       .add(options_.stream_maxlen)
                       .add("*")
                       .add("id")
                       .add(r.id)
                       .add("e")
                       .add(cloudevent_json(r)));
    seqs.push_back(r.seq);
  }
  for (std::size_t i = 0; i < rows.size(); ++i) redis::check_reply(c.redis.read_reply(), "event relay XADD");
  const int64_t n = static_cast<int64_t>(rows.size());
  batches_++;
  if (options_.relay_stop_after_xadd_batches > 0 && batches_.load() >= options_.relay_stop_after_xadd_batches) {
    stop_ = true;  // fault injection: "dies" between XADD and DELETE
    return n;
  }
  pgevents::delete_rows(c.pg, seqs);
  relayed_ += n;
  return n;
}

void Relay::run() {
  std::unique_ptr<RelayConns> c;
  int polls = 0;
  int64_t backoff_ms = 0;
  while (!stop_.load()) {
    try {
      if (!c) c = std::make_unique<RelayConns>(postgres_url_, url_, redis_options_);
      if (c->locked_generation == 0) {
        if (polls++ % kStandbyPolls == 0) {
          pg::Result r = c->pg.exec("SELECT pg_try_advisory_lock($1)", pg::Params().add(kRelayLockKey));
          if (r.text(0, 0) == "t") c->locked_generation = c->pg.generation();
        }
        active_ = c->locked_generation != 0;
        if (!active_) {
          std::this_thread::sleep_for(std::chrono::milliseconds(options_.relay_poll_ms));
          continue;
        }
      }
      const int64_t n = relay_once(*c);
      backoff_ms = 0;
      if (n < static_cast<int64_t>(options_.relay_batch_max)) {
        std::this_thread::sleep_for(std::chrono::milliseconds(options_.relay_poll_ms));
      }
    } catch (const Error&) {
      // Drop both connections (a new session holds no lock) and back off.
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
