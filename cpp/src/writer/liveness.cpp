// Writer liveness by heartbeat: see liveness.hpp.
#include "writer/liveness.hpp"

#include <hiredis/hiredis.h>

#include <algorithm>
#include <chrono>
#include <map>

#include "couponcore/error.hpp"
#include "couponcore/metrics.hpp"
#include "writer/lua_scripts.hpp"

namespace couponcore::writer {

namespace {

constexpr std::size_t kPipelineChunk = 1000;  // commands per round trip: reply buffers stay bounded

int64_t server_now_ms(const redis::Reply& t) {
  long long sec = 0, usec = 0;
  if (t.size() < 2 || !redis::reply_int(t.at(0), &sec) || !redis::reply_int(t.at(1), &usec)) {
    throw Error(ErrorCode::kUnavailable, "redis: TIME gave an unexpected reply");
  }
  return static_cast<int64_t>(sec) * 1000 + static_cast<int64_t>(usec) / 1000;
}

}  // namespace

std::string registry_key(std::string_view prefix) { return std::string(prefix) + "writers"; }

void check_liveness_options(const WriterOptions& o) {
  if (o.heartbeat_interval_ms < 10 || o.heartbeat_interval_ms > 60'000) {
    throw_invalid("writer.heartbeat_interval_ms must be 10..60000");
  }
  if (o.dead_after_ms < 3 * o.heartbeat_interval_ms || o.dead_after_ms > 3'600'000) {
    throw_invalid("writer.dead_after_ms must be at least 3 * heartbeat_interval_ms (" +
                  std::to_string(3 * o.heartbeat_interval_ms) + ") and at most 3600000");
  }
}

int64_t takeover_min_idle_ms(const WriterOptions& o) { return o.dead_after_ms - 2 * o.heartbeat_interval_ms; }

RegistrySnapshot read_registry(redis::RedisConn& conn, std::string_view prefix) {
  conn.append(redis::Args{"TIME"});
  conn.append(redis::Args{"HGETALL"}.add(registry_key(prefix)));
  redis::Reply t = conn.read_reply();
  redis::Reply h = conn.read_reply();
  redis::check_reply(t, "TIME");
  redis::check_reply(h, "HGETALL");
  RegistrySnapshot s;
  s.now_ms = server_now_ms(t);
  for (std::size_t i = 0; i + 1 < h.size(); i += 2) {
    BeatRecord b;
    b.consumer = std::string(redis::reply_str(h.at(i)));
    b.raw = std::string(redis::reply_str(h.at(i + 1)));
    long long ms = 0;
    if (redis::reply_int(h.at(i + 1), &ms) && ms >= 0) b.beat_ms = ms;
    s.beats.push_back(std::move(b));
  }
  return s;
}

std::vector<PendingByConsumer> pending_summaries(redis::RedisConn& conn, const std::vector<std::string>& streams) {
  std::vector<PendingByConsumer> out(streams.size());
  for (std::size_t from = 0; from < streams.size(); from += kPipelineChunk) {
    const std::size_t to = std::min(streams.size(), from + kPipelineChunk);
    for (std::size_t i = from; i < to; ++i) conn.append(redis::Args{"XPENDING"}.add(streams[i]).add(redis::kWriterGroup));
    for (std::size_t i = from; i < to; ++i) {
      redis::Reply r = conn.read_reply();  // every reply read before judging: the connection stays in step
      // count, smallest id, greatest id, [[consumer, count], ...] (NOGROUP: an error reply)
      if (!r.is_array() || r.size() < 4 || !redis::reply_is_array(r.at(3))) continue;
      const redisReply* cs = r.at(3);
      for (std::size_t k = 0; k < cs->elements; ++k) {
        const redisReply* c = cs->element[k];
        long long n = 0;
        if (redis::reply_is_array(c) && c->elements >= 2 && redis::reply_int(c->element[1], &n) && n > 0) {
          out[i].emplace_back(std::string(redis::reply_str(c->element[0])), n);
        }
      }
    }
  }
  return out;
}

// ---- Heartbeat -------------------------------------------------------------------------------

Heartbeat::Heartbeat(std::string prefix, const redis::RedisUrl& url, redis::RedisConnOptions options,
                     int64_t interval_ms, std::vector<std::string> consumers)
    : prefix_(std::move(prefix)),
      key_(registry_key(prefix_)),
      interval_ms_(interval_ms),
      ours_(consumers.begin(), consumers.end()),
      consumers_(std::move(consumers)),
      conn_(url, [&] {
        // A beat must not wait longer than the margin it protects.
        options.command_timeout_ms = std::min(options.command_timeout_ms, std::max<int64_t>(interval_ms, 100));
        if (!options.client_name.empty()) options.client_name += "-beat";
        return options;
      }()),
      beat_script_(lua::kBeat) {
  {
    std::lock_guard lock(mu_);
    beat_locked();
  }
  thread_ = std::thread([this] { run(); });
}

Heartbeat::~Heartbeat() { stop(); }

void Heartbeat::stop() {
  {
    std::lock_guard lock(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
}

void Heartbeat::retire(const std::string& consumer, redis::RedisConn& conn) {
  std::lock_guard lock(mu_);
  consumers_.erase(std::remove(consumers_.begin(), consumers_.end(), consumer), consumers_.end());
  conn.command(redis::Args{"HDEL"}.add(key_).add(consumer));
}

void Heartbeat::beat_locked() {
  if (consumers_.empty()) return;
  try {
    redis::Args a;
    for (const std::string& c : consumers_) a.add(c);
    redis::check_reply(redis::eval(conn_, beat_script_, {key_}, a), "heartbeat");
    if (failing_) log(LogLevel::kInfo, "writer", "heartbeat: beating again");
    failing_ = false;
  } catch (const Error& e) {
    // Logged once per outage: while Redis is away the writers cannot work either.
    if (!failing_) {
      log(LogLevel::kWarning, "writer",
          std::string("heartbeat failed (other writers will judge this process's consumers dead if it lasts): ") +
              e.what());
    }
    failing_ = true;
  }
}

void Heartbeat::run() {
  std::unique_lock lock(mu_);
  auto next = std::chrono::steady_clock::now();
  while (!stop_) {
    next += std::chrono::milliseconds(interval_ms_);
    const auto now = std::chrono::steady_clock::now();
    if (next < now) next = now;  // late (a slow beat): no burst to catch up
    cv_.wait_until(lock, next, [this] { return stop_; });
    if (stop_) break;
    beat_locked();
  }
}

// ---- reaping, listing ------------------------------------------------------------------------

bool reap(redis::RedisConn& conn, std::string_view prefix, const std::vector<std::string>& streams,
          const BeatRecord& dead) {
  redis::Script reap_script(lua::kReap);
  reap_script.load(conn);
  bool gone_everywhere = true;
  for (std::size_t from = 0; from < streams.size(); from += kPipelineChunk) {
    const std::size_t to = std::min(streams.size(), from + kPipelineChunk);
    for (std::size_t i = from; i < to; ++i) {
      redis::Args a = reap_script.evalsha_args({streams[i]});
      conn.append(a.add(redis::kWriterGroup).add(dead.consumer));
    }
    for (std::size_t i = from; i < to; ++i) {
      redis::Reply r = conn.read_reply();
      // 0: it holds entries there again (it came back, or a claim lost a race): keep it.
      if (!r.is_integer() || r.integer() == 0) gone_everywhere = false;
    }
  }
  if (!gone_everywhere) return false;
  redis::Script forget(lua::kForget);
  redis::Reply f = redis::eval(conn, forget, {registry_key(prefix)}, redis::Args{}.add(dead.consumer).add(dead.raw));
  return f.is_integer() && f.integer() == 1;
}

std::vector<WriterInfo> list_writers(redis::RedisConn& conn, std::string_view prefix,
                                     const std::vector<std::string>& streams, int64_t dead_after_ms) {
  RegistrySnapshot reg = read_registry(conn, prefix);
  std::map<std::string, WriterInfo> by_name;
  for (const BeatRecord& b : reg.beats) {
    WriterInfo& w = by_name[b.consumer];
    w.consumer = b.consumer;
    if (b.beat_ms >= 0) {
      w.last_beat_age_ms = std::max<int64_t>(0, reg.now_ms - b.beat_ms);
      w.alive = w.last_beat_age_ms <= dead_after_ms;
    }
  }
  for (const PendingByConsumer& s : pending_summaries(conn, streams)) {
    for (const auto& [name, n] : s) {
      WriterInfo& w = by_name[name];
      w.consumer = name;
      w.pending += n;
    }
  }
  std::vector<WriterInfo> out;
  out.reserve(by_name.size());
  for (auto& [_, w] : by_name) out.push_back(std::move(w));
  return out;
}

void add_unread_ages(redis::RedisConn& conn, std::string_view prefix, std::vector<LogBacklog>& backlog) {
  if (backlog.empty()) return;
  redis::Script unread(lua::kUnread);
  unread.load(conn);
  const int64_t now_ms = server_now_ms(conn.command_checked(redis::Args{"TIME"}, "TIME"));
  for (std::size_t from = 0; from < backlog.size(); from += kPipelineChunk) {
    const std::size_t to = std::min(backlog.size(), from + kPipelineChunk);
    for (std::size_t i = from; i < to; ++i) {
      redis::CampaignKeys k = redis::keys_of_stream(prefix, backlog[i].campaign_id);
      redis::Args a = unread.evalsha_args({k.grants});
      conn.append(a.add(redis::kWriterGroup));
    }
    for (std::size_t i = from; i < to; ++i) {
      redis::Reply r = conn.read_reply();
      if (r.is_integer() && r.integer() > 0) backlog[i].oldest_unread_age_ms = std::max<int64_t>(0, now_ms - r.integer());
    }
  }
  for (LogBacklog& b : backlog) b.campaign_id = redis::keys_of_stream(prefix, b.campaign_id).campaign_id;
}

}  // namespace couponcore::writer
