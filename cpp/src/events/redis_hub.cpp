// The production consumer API: see redis_hub.hpp.
#include "events/redis_hub.hpp"

#include <hiredis/hiredis.h>

#include <algorithm>
#include <charconv>
#include <climits>
#include <chrono>
#include <mutex>
#include <thread>

#include "couponcore/engine.hpp"
#include "couponcore/error.hpp"
#include "events/event.hpp"
#include "events/relay.hpp"
#include "store/postgres/pg_events.hpp"

namespace couponcore::events {

namespace {

constexpr int64_t kClusterPollMs = 20;
constexpr int64_t kClaimIntervalMs = 1000;
constexpr int64_t kBlockMsMax = 60'000;   // the binding's limit of block_ms
constexpr int64_t kBlockMarginMs = 5000;  // a reader's socket timeout: its longest BLOCK plus this

int64_t sequence_of(std::string_view json) {
  constexpr std::string_view tag = "\"sequence\":\"";
  const std::size_t at = json.find(tag);
  int64_t v = 0;
  if (at != std::string_view::npos) {
    const char* b = json.data() + at + tag.size();
    std::from_chars(b, json.data() + json.size(), v);
  }
  return v;
}

// Appends the entries of one stream reply ([[id, [field, value, ...]], ...]).
void parse_entries(const redisReply* entries, const std::string& type, bool redelivered, std::vector<EventMessage>& out) {
  if (!redis::reply_is_array(entries)) return;
  for (std::size_t i = 0; i < entries->elements; ++i) {
    const redisReply* e = entries->element[i];
    if (!redis::reply_is_array(e) || e->elements != 2 || !redis::reply_is_array(e->element[1])) continue;
    EventMessage m;
    m.type = type;
    m.entry_id = std::string(redis::reply_str(e->element[0]));
    m.redelivered = redelivered;
    const redisReply* f = e->element[1];
    for (std::size_t j = 0; j + 1 < f->elements; j += 2) {
      const std::string_view name = redis::reply_str(f->element[j]);
      if (name == "id") m.id = std::string(redis::reply_str(f->element[j + 1]));
      if (name == "e") m.json = std::string(redis::reply_str(f->element[j + 1]));
    }
    m.sequence = sequence_of(m.json);
    out.push_back(std::move(m));
  }
}

bool is_error_prefix(const redis::Reply& r, std::string_view p) { return r.is_error() && r.str().substr(0, p.size()) == p; }

void create_group(redis::RedisConn& conn, const std::string& key, const std::string& group) {
  redis::Reply r = conn.command(redis::Args{"XGROUP", "CREATE", key, group, "0", "MKSTREAM"});
  if (r.is_error() && !is_error_prefix(r, "BUSYGROUP")) redis::throw_reply_error(r.str(), "XGROUP CREATE");
}

int64_t ack_with(redis::RedisConn& conn, const std::string& prefix, const std::string& group,
                 const std::vector<EventMessage>& events) {
  std::vector<std::string> types;
  for (const EventMessage& m : events) {
    if (std::find(types.begin(), types.end(), m.type) == types.end()) types.push_back(m.type);
  }
  for (const std::string& t : types) {
    if (!known_type(t)) throw Error(ErrorCode::kInvalidArgument, "unknown event type: '" + t + "'");
    redis::Args a{"XACK", stream_key(prefix, t), group};
    for (const EventMessage& m : events) {
      if (m.type == t) a.add(m.entry_id);
    }
    conn.append(a);
  }
  int64_t n = 0;
  for (std::size_t i = 0; i < types.size(); ++i) {
    redis::Reply r = conn.read_reply();
    redis::check_reply(r, "XACK");
    n += r.integer();
  }
  return n;
}

class RedisReader final : public EventReader {
 public:
  RedisReader(const RedisHubParts& p, std::string group, std::string consumer, std::vector<std::string> types,
              int64_t claim_idle_ms)
      : prefix_(p.key_prefix), conn_(p.url, reader_options(p.conn_options)), group_(std::move(group)),
        consumer_(std::move(consumer)), types_(std::move(types)), claim_idle_ms_(claim_idle_ms) {
    for (const std::string& t : types_) keys_.push_back(stream_key(prefix_, t));
    for (const std::string& k : keys_) create_group(conn_, k, group_);
  }

  std::vector<EventMessage> read(int64_t batch, int64_t block_ms) override {
    const bool cluster = conn_.is_cluster();
    const int64_t deadline = redis::steady_ms() + block_ms;
    for (;;) {
      std::vector<EventMessage> fresh;
      // The sequences up to which this read may hand out events: the last of each full read
      // (lower ones may follow there) and, on a cluster, where the type streams are written on
      // several nodes, the relay's watermark read before the streams (below it every event is
      // in its stream: a lower-sequence event of another type cannot come later).
      std::vector<int64_t> limits;
      if (cluster) limits.push_back(watermark());
      if (history_) {
        read_streams(batch, "0", 0, fresh, limits);
        if (fresh.empty()) history_ = false;
      }
      const int64_t now = redis::steady_ms();
      if (fresh.empty() && now - last_claim_ms_ >= kClaimIntervalMs) {
        last_claim_ms_ = now;
        claim(batch, fresh);
      }
      // Held events wait for lower sequences: read on without blocking.
      if (fresh.empty()) read_streams(batch, ">", held_.empty() && !cluster ? block_ms : 0, fresh, limits);
      std::vector<EventMessage> out = release_in_order(std::move(fresh), limits, held_);
      // On a cluster a read polls the streams every kClusterPollMs while blocking.
      const int64_t left = deadline - redis::steady_ms();
      if (!out.empty() || !cluster || left <= 0) return out;
      std::this_thread::sleep_for(std::chrono::milliseconds(std::min(kClusterPollMs, left)));
    }
  }

  int64_t ack(const std::vector<EventMessage>& events) override { return ack_with(conn_, prefix_, group_, events); }

 private:
  static redis::RedisConnOptions reader_options(redis::RedisConnOptions o) {
    o.command_timeout_ms = std::max<int64_t>(o.command_timeout_ms, kBlockMsMax + kBlockMarginMs);
    return o;
  }

  // The entries of one stream's reply; notes the stream's highest sequence if the read was full.
  void take(const redisReply* entries, std::size_t i, int64_t batch, bool redelivered, std::vector<EventMessage>& out,
            std::vector<int64_t>& full_last) {
    const std::size_t before = out.size();
    parse_entries(entries, types_[i], redelivered, out);
    if (static_cast<int64_t>(out.size() - before) >= batch) {
      int64_t top = 0;
      for (std::size_t k = before; k < out.size(); ++k) top = std::max(top, out[k].sequence);
      full_last.push_back(top);
    }
  }

  // XREADGROUP from `from` ("0": this consumer's pending; ">": new). On one Redis: one command
  // over every stream (one snapshot of all types; BLOCK when asked). On a cluster: one command
  // per stream, pipelined (read() polls).
  void read_streams(int64_t batch, const char* from, int64_t block_ms, std::vector<EventMessage>& out,
                    std::vector<int64_t>& full_last) {
    const bool redelivered = std::string_view(from) == "0";
    if (!conn_.is_cluster()) {
      redis::Args a{"XREADGROUP", "GROUP", group_, consumer_, "COUNT"};
      a.add(batch);
      if (block_ms > 0) a.add("BLOCK").add(block_ms);
      a.add("STREAMS");
      for (const std::string& k : keys_) a.add(k);
      for (std::size_t i = 0; i < keys_.size(); ++i) a.add(from);
      redis::Reply r = conn_.command(a);
      if (is_error_prefix(r, "NOGROUP")) {  // a stream deleted by hand
        for (const std::string& k : keys_) create_group(conn_, k, group_);
        return;
      }
      redis::check_reply(r, "XREADGROUP");
      for (std::size_t s = 0; s < r.size(); ++s) {
        const redisReply* st = r.at(s);
        if (!redis::reply_is_array(st) || st->elements != 2) continue;
        const std::string_view key = redis::reply_str(st->element[0]);
        for (std::size_t i = 0; i < keys_.size(); ++i) {
          if (keys_[i] == key) take(st->element[1], i, batch, redelivered, out, full_last);
        }
      }
      return;
    }
    for (const std::string& k : keys_) {
      conn_.append(redis::Args{"XREADGROUP", "GROUP", group_, consumer_, "COUNT"}.add(batch).add("STREAMS").add(k).add(from));
    }
    std::vector<std::size_t> no_group;
    for (std::size_t i = 0; i < keys_.size(); ++i) {
      redis::Reply r = conn_.read_reply();
      if (is_error_prefix(r, "NOGROUP")) {
        no_group.push_back(i);
        continue;
      }
      redis::check_reply(r, "XREADGROUP");
      for (std::size_t s = 0; s < r.size(); ++s) {
        const redisReply* st = r.at(s);
        if (redis::reply_is_array(st) && st->elements == 2) take(st->element[1], i, batch, redelivered, out, full_last);
      }
    }
    for (std::size_t i : no_group) create_group(conn_, keys_[i], group_);
  }

  // The relay's watermark (relay.hpp); none yet (or a relay that writes none): no limit.
  int64_t watermark() {
    redis::Reply r = conn_.command(redis::Args{"GET", relayed_key(prefix_)});
    redis::check_reply(r, "GET watermark");
    if (r.is_nil()) return INT64_MAX;
    int64_t v = 0;
    const std::string_view t = r.str();
    std::from_chars(t.data(), t.data() + t.size(), v);
    return v;
  }

  void claim(int64_t batch, std::vector<EventMessage>& out) {
    for (const std::string& k : keys_) {
      conn_.append(redis::Args{"XAUTOCLAIM", k, group_, consumer_}.add(claim_idle_ms_).add("0-0").add("COUNT").add(batch));
    }
    for (std::size_t i = 0; i < keys_.size(); ++i) {
      redis::Reply r = conn_.read_reply();
      if (r.is_error() || r.size() < 2) continue;  // NOGROUP: the next read recreates it
      parse_entries(r.at(1), types_[i], true, out);
    }
  }

  const std::string prefix_;
  redis::RedisConn conn_;
  const std::string group_, consumer_;
  const std::vector<std::string> types_;
  std::vector<std::string> keys_;
  const int64_t claim_idle_ms_;
  bool history_ = true;
  int64_t last_claim_ms_ = 0;
  std::vector<EventMessage> held_;  // delivered, waiting for lower sequences (release_in_order)
};

class RedisHub final : public EventHub {
 public:
  explicit RedisHub(RedisHubParts p) : parts_(std::move(p)), conn_(parts_.url, parts_.conn_options) {}

  std::unique_ptr<EventReader> open_reader(const std::string& group, const std::string& consumer,
                                           const std::vector<std::string>& types, int64_t claim_idle_ms) override {
    check_name("group", group);
    check_name("consumer", consumer);
    return std::make_unique<RedisReader>(parts_, group, consumer, check_types(types), claim_idle_ms);
  }

  int64_t ack(const std::string& group, const std::vector<EventMessage>& events) override {
    check_name("group", group);
    std::lock_guard lock(mu_);
    return ack_with(conn_, parts_.key_prefix, group, events);
  }

  void dead_letter(const std::string& group, const EventMessage& e, const std::string& reason) override {
    check_name("group", group);
    if (!known_type(e.type)) throw Error(ErrorCode::kInvalidArgument, "unknown event type: '" + e.type + "'");
    std::lock_guard lock(mu_);
    redis::check_reply(conn_.command(redis::Args{"XADD", dead_letter_key(parts_.key_prefix, group), "*", "id", e.id, "type",
                                                 e.type, "reason", reason, "e", e.json, "at"}
                                         .add(now_us())),
                       "XADD dead letter");
    // The event leaves the group's pending list (it is settled: dead-lettered).
    redis::check_reply(conn_.command(redis::Args{"XACK", stream_key(parts_.key_prefix, e.type), group, e.entry_id}),
                       "XACK");
  }

  std::vector<EventDeadLetter> list_dead_letters(const std::string& group, int64_t limit) override {
    check_name("group", group);
    std::lock_guard lock(mu_);
    redis::Reply r = conn_.command(
        redis::Args{"XRANGE", dead_letter_key(parts_.key_prefix, group), "-", "+", "COUNT"}.add(limit));
    redis::check_reply(r, "XRANGE");
    std::vector<EventDeadLetter> out;
    for (std::size_t i = 0; i < r.size(); ++i) {
      const redisReply* e = r.at(i);
      if (!redis::reply_is_array(e) || e->elements != 2) continue;
      EventDeadLetter d;
      d.id = std::string(redis::reply_str(e->element[0]));
      d.group = group;
      const redisReply* f = e->element[1];
      for (std::size_t j = 0; j + 1 < f->elements; j += 2) {
        const std::string_view n = redis::reply_str(f->element[j]);
        const std::string v(redis::reply_str(f->element[j + 1]));
        if (n == "id") d.event_id = v;
        if (n == "type") d.type = v;
        if (n == "reason") d.reason = v;
        if (n == "e") d.json = v;
        if (n == "at") d.dead_lettered_at_us = std::atoll(v.c_str());
      }
      out.push_back(std::move(d));
    }
    return out;
  }

  EventStats stats() override { return parts_.stats ? parts_.stats() : EventStats{}; }

 private:
  RedisHubParts parts_;
  std::mutex mu_;
  redis::RedisConn conn_;
};

}  // namespace

std::unique_ptr<EventHub> make_redis_hub(RedisHubParts parts) { return std::make_unique<RedisHub>(std::move(parts)); }

ProductionEvents::ProductionEvents() = default;
ProductionEvents::~ProductionEvents() { stop(); }

EventHub* ProductionEvents::start(const ProductionOptions& o, const redis::RedisUrl& url,
                                  const redis::RedisConnOptions& relay_conn, const redis::RedisConnOptions& reader_conn,
                                  pg::ConnPool& pool) {
  if (o.events.relay) relay_ = std::make_unique<Relay>(o.key_prefix, url, relay_conn, o.postgres_url, o.events);
  hub_ = make_redis_hub(RedisHubParts{o.key_prefix, url, reader_conn, [this, &pool, prefix = o.key_prefix] {
                                        EventStats st;
                                        if (Relay* r = relay_.get()) {
                                          st.relayed = r->relayed();
                                          st.relay_active = r->active();
                                        }
                                        auto c = pool.acquire();
                                        pgevents::Backlog b = pgevents::backlog(*c, prefix);
                                        st.outbox_rows = b.rows;
                                        st.outbox_oldest_age_ms = b.oldest_age_ms;
                                        st.written = b.written;
                                        return st;
                                      }});
  return hub_.get();
}

void ProductionEvents::stop(int64_t drain_ms) {
  if (relay_) relay_->stop(drain_ms);
  relay_.reset();
}

}  // namespace couponcore::events
