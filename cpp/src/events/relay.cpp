// The outbox relay: see relay.hpp.
#include "events/relay.hpp"

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <future>
#include <memory>

#include "couponcore/error.hpp"
#include "events/event.hpp"
#include "store/postgres/pg.hpp"
#include "store/postgres/pg_events.hpp"

namespace couponcore::events {

namespace {
// One active relay per database and key prefix. Its two PostgreSQL connections each hold an
// exclusive advisory lock of the prefix (a 64-bit hash of "cc-ev:<connection>:<prefix>") and
// the shared lock of the database-wide key that relays held exclusively before outboxes were
// per prefix (so one of those never runs beside us). A relay is active only with both.
constexpr int64_t kRelayLockKey = 0x63632d6576;  // "cc-ev"
constexpr int kStandbyPolls = 10;                 // a standby tries the locks every 10 polls
constexpr std::size_t kFlushEvery = 512;          // XADDs sent while the rest are built

pg::ConnOptions pg_options() {
  pg::ConnOptions o;
  o.application_name = "couponcore-relay";
  o.statement_timeout_ms = 30'000;
  return o;
}
}  // namespace

// A batch's connection: the lock it holds and its open transaction (the batch's DELETE).
struct RelaySlot {
  explicit RelaySlot(const std::string& postgres_url) : pg(postgres_url, pg_options()) {}
  pg::Conn pg;
  uint64_t locked_generation = 0;  // the connection generation holding the lock; 0: none
  std::unique_ptr<pg::Tx> tx;
  std::vector<Row> rows;
};

class RelayConns {
 public:
  RelayConns(const std::string& postgres_url, const redis::RedisUrl& url, const redis::RedisConnOptions& ro)
      : slots{RelaySlot(postgres_url), RelaySlot(postgres_url)}, redis(url, ro) {}
  // Batches alternate between the two: the next one is taken while this one's XADDs run.
  RelaySlot slots[2];
  redis::RedisConn redis;
  int64_t watermark = 0;  // the highest sequence published in relayed_key
  bool locked() const { return slots[0].locked_generation != 0 && slots[1].locked_generation != 0; }
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
  for (int i = 0; i < 2; ++i) {
    RelaySlot& s = c.slots[i];
    pg::Result r = s.pg.exec(
        "SELECT CASE WHEN pg_try_advisory_lock_shared($1) THEN pg_try_advisory_lock(hashtextextended($2, 0))"
        " ELSE false END",
        pg::Params().add(kRelayLockKey).add("cc-ev:" + std::to_string(i) + ":" + prefix_));
    if (r.text(0, 0) != "t") {
      for (RelaySlot& u : c.slots) {  // a standby holds none
        u.pg.exec("SELECT pg_advisory_unlock_all()");
        u.locked_generation = 0;
      }
      return false;
    }
    // A lost commit only publishes again (the same ids): the DELETEs need not wait for the WAL.
    s.pg.exec("SET synchronous_commit = off");
    s.locked_generation = s.pg.generation();
  }
  // The watermark only grows: continue from the previous relay's.
  redis::Reply w = c.redis.command(redis::Args{"GET", relayed_key(prefix_)});
  redis::check_reply(w, "event relay GET watermark");
  c.watermark = w.is_nil() ? 0 : std::atoll(std::string(w.str()).c_str());
  return true;
}

void Relay::take(RelaySlot& s) {
  s.tx = std::make_unique<pg::Tx>(s.pg);
  s.rows = pgevents::take_batch(s.pg, prefix_, options_.relay_batch_max);
  if (s.pg.generation() != s.locked_generation) throw Error(ErrorCode::kUnavailable, "the relay lost its lock");
}

int64_t Relay::relay_batches(RelayConns& c) {
  int cur = 0;
  take(c.slots[cur]);
  int64_t total = 0;
  while (!c.slots[cur].rows.empty()) {
    RelaySlot& s = c.slots[cur];
    // The CloudEvent JSON is built while the XADDs sent so far are being executed.
    int64_t top = 0;
    for (std::size_t i = 0; i < s.rows.size(); ++i) {
      const Row& r = s.rows[i];
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
    c.redis.flush();
    // A full batch: the next is taken on the other connection meanwhile. Its DELETE skips the
    // rows this one's holds (SKIP LOCKED); its XADDs follow this one's acknowledgements.
    const bool more = s.rows.size() >= options_.relay_batch_max && !stop_.load();
    std::future<void> next;
    if (more) next = std::async(std::launch::async, [this, &c, cur] { take(c.slots[1 - cur]); });
    for (std::size_t i = 0; i < s.rows.size(); ++i) redis::check_reply(c.redis.read_reply(), "event relay XADD");
    // Every XADD is acknowledged: readers of several types may hand out events up to here.
    if (top > c.watermark) {
      redis::check_reply(c.redis.command(redis::Args{"SET", relayed_key(prefix_)}.add(top)), "event relay SET watermark");
      c.watermark = top;
    }
    const int64_t n = static_cast<int64_t>(s.rows.size());
    batches_++;
    if (options_.relay_stop_after_xadd_batches > 0 && batches_.load() >= options_.relay_stop_after_xadd_batches) {
      crashed_ = true;  // fault injection: "dies" between XADD and the DELETE's commit (rolled back)
      stop_ = true;
      if (next.valid()) next.get();
      return total + n;
    }
    s.tx->commit();
    s.tx.reset();
    s.rows.clear();
    relayed_ += n;
    total += n;
    if (!more) return total;
    next.get();  // rethrows the take's error
    cur = 1 - cur;
  }
  c.slots[cur].tx.reset();  // nothing taken: roll back the empty DELETE
  return total;
}

void Relay::run() {
  std::unique_ptr<RelayConns> c;
  int polls = 0;
  int64_t backoff_ms = 0;
  int64_t last = -1;  // rows of the last batch; -1: none yet
  for (;;) {
    // Stopping: the active relay first publishes what is in the outbox, within drain_ms.
    if (stop_.load() && (crashed_ || !c || !c->locked() || last == 0 ||
                         redis::steady_ms() >= drain_until_ms_.load())) {
      break;
    }
    try {
      if (!c) c = std::make_unique<RelayConns>(postgres_url_, url_, redis_options_);
      if (!c->locked()) {
        if (polls++ % kStandbyPolls == 0) try_lock(*c);
        active_ = c->locked();
        if (!active_) {
          std::this_thread::sleep_for(std::chrono::milliseconds(options_.relay_poll_ms));
          continue;
        }
      }
      const int64_t n = last = relay_batches(*c);
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
