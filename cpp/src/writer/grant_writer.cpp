// The grant writer loop and run_worker(): see grant_writer.hpp and couponcore/worker.hpp.
#include "writer/grant_writer.hpp"

#include "redis/cluster.hpp"

#include <hiredis/hiredis.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <thread>

#include "couponcore/error.hpp"
#include "couponcore/limits.hpp"
#include "events/relay.hpp"
#include "store/postgres/coupon_store.hpp"
#include "store/postgres/migrations.hpp"
#include "store/postgres/pg_events.hpp"

namespace couponcore::writer {

namespace {

constexpr std::size_t kCampaignsMax = 100'000;       // campaign streams one writer follows
constexpr int64_t kWriterStatementTimeoutMs = 30'000;
constexpr int64_t kRelayDrainMs = 5'000;  // a stopping worker's relay publishes the outbox this long

bool is_error_prefix(const redis::Reply& r, std::string_view p) {
  return r.is_error() && r.str().substr(0, p.size()) == p;
}

}  // namespace

// ---- shared state ----------------------------------------------------------------------------

WorkerStats WriterShared::stats() const {
  WorkerStats s;
  s.grants_written = written.load();
  s.batches = batches.load();
  s.dead_lettered = dead_lettered.load();
  s.failures = failures.load();
  s.claimed = claimed.load();
  s.replica_waits = replica_waits.load();
  s.replica_wait_shortfalls = replica_wait_shortfalls.load();
  s.breaker_open = breaker.is_open();
  return s;
}

void check_writer_options(const WriterOptions& o) {
  if (o.read_count_max < 1 || o.read_count_max > 100'000) throw_invalid("writer.read_count_max must be 1..100000");
  if (o.block_ms < 1 || o.block_ms > 60'000) throw_invalid("writer.block_ms must be 1..60000");
  if (o.claim_idle_ms < 10) throw_invalid("writer.claim_idle_ms must be at least 10");
  if (o.claim_interval_ms < 1) throw_invalid("writer.claim_interval_ms must be positive");
  if (o.dead_letter_after_deliveries < 1) throw_invalid("writer.dead_letter_after_deliveries must be positive");
  if (o.backoff_initial_ms < 1 || o.backoff_max_ms < o.backoff_initial_ms) {
    throw_invalid("writer backoff: need 1 <= backoff_initial_ms <= backoff_max_ms");
  }
  if (o.breaker_failures < 1) throw_invalid("writer.breaker_failures must be positive");
  if (o.campaigns_refresh_ms < 1) throw_invalid("writer.campaigns_refresh_ms must be positive");
  if (o.streams_per_read_max < 1 || o.streams_per_read_max > 10'000) {
    throw_invalid("writer.streams_per_read_max must be 1..10000");
  }
  check_liveness_options(o);
}

std::string default_consumer_base() {
  char host[256] = {0};
  if (gethostname(host, sizeof host - 1) != 0 || !host[0]) std::snprintf(host, sizeof host, "host");
  std::string h;
  for (const char* p = host; *p; ++p) {
    const char c = *p;
    h.push_back((std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '.') ? c : '_');
  }
  std::mt19937 rng(std::random_device{}());
  return h + "-" + std::to_string(::getpid()) + "-" + std::to_string(rng() % 100000);
}

// ---- the writer ------------------------------------------------------------------------------

GrantWriter::GrantWriter(WriterShared& shared, std::string consumer)
    : sh_(shared),
      consumer_(std::move(consumer)),
      redis_(shared.redis_url,
             [&] {
               redis::RedisConnOptions o = shared.redis_options;
               o.command_timeout_ms = std::max(o.command_timeout_ms, shared.options.block_ms + o.command_timeout_ms);
               return o;
             }()),
      pg_(shared.postgres_url, [] {
        pg::ConnOptions o;
        o.connect_now = false;
        o.connect_timeout_s = 2;
        o.application_name = "couponcore-writer";
        o.statement_timeout_ms = kWriterStatementTimeoutMs;  // a hung server is a failure, not a hang
        return o;
      }()) {}

void GrantWriter::sleep_ms(int64_t ms) {
  const int64_t until = redis::steady_ms() + ms;
  while (!sh_.stop.load() && redis::steady_ms() < until) {
    std::this_thread::sleep_for(std::chrono::milliseconds(std::min<int64_t>(20, std::max<int64_t>(1, until - redis::steady_ms()))));
  }
}

void GrantWriter::refresh_streams(int64_t now_ms) {
  if (now_ms < next_refresh_ms_) return;
  next_refresh_ms_ = now_ms + sh_.options.campaigns_refresh_ms;
  redis::Reply r = redis_.command_checked(redis::Args{"SMEMBERS"}.add(redis::campaigns_set_key(sh_.prefix)), "SMEMBERS");
  for (std::size_t i = 0; i < r.size() && known_.size() < kCampaignsMax; ++i) {
    long long id = 0;
    redis::CampaignKeys keys;
    if (!redis::reply_int(r.at(i), &id) || !redis::CampaignKeys::from_stream_id(sh_.prefix, id, &keys)) continue;
    if (known_.count(id)) continue;
    log_.ensure_group(keys);
    known_.insert(id);
    streams_.push_back(std::move(keys));
  }
}

void GrantWriter::read_new(std::vector<StreamBatch>& out) {
  if (streams_.empty()) {
    sleep_ms(sh_.options.block_ms);
    return;
  }
  const std::size_t n = std::min(streams_.size(), sh_.options.streams_per_read_max);
  if (read_window_ >= streams_.size()) read_window_ = 0;
  // With more streams than one read takes, the windows rotate without blocking, and only the
  // first window of a rotation blocks: a grant waits at most one rotation plus one block.
  const bool block = read_window_ == 0;
  std::vector<const redis::CampaignKeys*> chosen;
  for (std::size_t k = 0; k < n; ++k) chosen.push_back(&streams_[(read_window_ + k) % streams_.size()]);
  read_window_ = (read_window_ + n) % streams_.size();

  if (redis_.is_cluster()) return read_new_per_stream(chosen, block, out);
  redis::Args a{"XREADGROUP", "GROUP"};
  a.add(redis::kWriterGroup).add(consumer_).add("COUNT").add(entries_per_read_);
  if (block) a.add("BLOCK").add(sh_.options.block_ms);
  a.add("STREAMS");
  for (const auto* k : chosen) a.add(k->grants);
  for (std::size_t k = 0; k < chosen.size(); ++k) a.add(">");
  redis::Reply r = redis_.command(a);
  if (is_error_prefix(r, "NOGROUP")) {  // a stream vanished (deleted by hand): recreate groups
    for (const auto* k : chosen) log_.ensure_group(*k);
    return;
  }
  if (r.is_error()) redis::throw_reply_error(r.str(), "XREADGROUP");
  for (std::size_t i = 0; i < r.size(); ++i) {
    const redisReply* s = r.at(i);
    if (!redis::reply_is_array(s) || s->elements != 2) continue;
    std::string_view key = redis::reply_str(s->element[0]);
    for (const auto* k : chosen) {
      if (k->grants == key) {
        StreamBatch sb{*k, grantlog::parse_entries(s->element[1]), {}, {}};
        if (!sb.entries.empty()) out.push_back(std::move(sb));
        break;
      }
    }
  }
}

// Redis Cluster: the streams live in different slots, and one XREADGROUP reads one slot. So one
// read per stream, pipelined (the masters answer in parallel), without BLOCK. When nothing came
// and this window was the one to block, the writer blocks (kClusterBlockMs) on ONE stream per
// master, in parallel: the one that last had entries (else the first). A grant on it wakes the
// writer at once; the other streams are read again within kClusterBlockMs.
void GrantWriter::read_new_per_stream(const std::vector<const redis::CampaignKeys*>& chosen, bool block,
                                      std::vector<StreamBatch>& out) {
  constexpr int64_t kClusterBlockMs = 10;
  const bool any = read_streams(chosen, 0, out);
  if (any || !block) return;
  std::vector<std::string> masters;
  std::vector<const redis::CampaignKeys*> watched;  // one per master
  for (const auto* k : chosen) {
    const std::string addr = redis_.cluster()->master_of(redis::key_slot(k->grants));
    const auto it = std::find(masters.begin(), masters.end(), addr);
    if (it == masters.end()) {
      masters.push_back(addr);
      watched.push_back(k);
    } else if (auto last = last_active_.find(addr); last != last_active_.end() && last->second == k->grants) {
      watched[it - masters.begin()] = k;
    }
  }
  read_streams(watched, std::max<int64_t>(1, std::min(kClusterBlockMs, sh_.options.block_ms)), out);
}

// One XREADGROUP per stream, pipelined; block_ms > 0: each with BLOCK (one per master only).
// True if entries came.
bool GrantWriter::read_streams(const std::vector<const redis::CampaignKeys*>& chosen, int64_t block_ms,
                               std::vector<StreamBatch>& out) {
  for (const auto* k : chosen) {
    redis::Args a{"XREADGROUP", "GROUP"};
    a.add(redis::kWriterGroup).add(consumer_).add("COUNT").add(entries_per_read_);
    if (block_ms > 0) a.add("BLOCK").add(block_ms);
    redis_.append(a.add("STREAMS").add(k->grants).add(">"));
  }
  bool any = false;
  std::vector<const redis::CampaignKeys*> no_group;
  for (const auto* k : chosen) {
    redis::Reply r = redis_.read_reply();
    if (is_error_prefix(r, "NOGROUP")) {
      no_group.push_back(k);
      continue;
    }
    if (r.is_error()) {  // this stream waits for the next read; the others' entries are taken now
      log(LogLevel::kWarning, "writer", "XREADGROUP " + k->grants + ": " + std::string(r.str()));
      continue;
    }
    for (std::size_t i = 0; i < r.size(); ++i) {
      const redisReply* s = r.at(i);
      if (!redis::reply_is_array(s) || s->elements != 2) continue;
      StreamBatch sb{*k, grantlog::parse_entries(s->element[1]), {}, {}};
      if (!sb.entries.empty()) {
        any = true;
        last_active_[redis_.cluster()->master_of(redis::key_slot(k->grants))] = k->grants;
        out.push_back(std::move(sb));
      }
    }
  }
  for (const auto* k : no_group) log_.ensure_group(*k);
  return any;
}

// With replica-acknowledged grants, a grant the gate could not confirm (its master failed
// before a replica had it) must not reach PostgreSQL either: the promoted replica lacks it and
// may grant its seq again. So the entries just read wait for WAIT on their master. Our
// XREADGROUP / XCLAIM is a write propagated after the entries' XADD, so WAIT on this connection
// covers them. Too few replicas: kUnavailable; the entries stay pending under this consumer
// and come back by claim (writer_claim_idle_ms) if their master still has them.
void GrantWriter::wait_replicas(const std::vector<StreamBatch>& batch) {
  const redis::Args w =
      redis::Args{"WAIT"}.add(static_cast<int64_t>(sh_.replicas_acked)).add(sh_.replica_wait_ms);
  std::vector<std::string> masters;
  if (redis_.is_cluster()) {
    for (const StreamBatch& sb : batch) {
      const int slot = redis::key_slot(sb.keys.grants);
      const std::string addr = redis_.cluster()->master_of(slot);
      if (std::find(masters.begin(), masters.end(), addr) != masters.end()) continue;
      masters.push_back(addr);
      redis_.cluster()->append_at(w, slot);
    }
  } else {
    redis_.append(w);
    masters.emplace_back(redis_.url().redacted());
  }
  sh_.replica_waits += masters.size();
  std::string short_of;
  for (const std::string& m : masters) {
    long long n = -1;
    redis::Reply r = redis_.read_reply();
    if (!redis::reply_int(r.raw(), &n) || n < sh_.replicas_acked) {
      short_of += (short_of.empty() ? "" : ", ") + m + ": " + (r.is_error() ? std::string(r.str()) : std::to_string(n));
    }
  }
  if (!short_of.empty()) {
    sh_.replica_wait_shortfalls++;
    throw Error(ErrorCode::kUnavailable, "entries read are not yet on " + std::to_string(sh_.replicas_acked) +
                                             " replicas (" + short_of + "); held back");
  }
}

void GrantWriter::claim_idle(std::vector<StreamBatch>& out) {
  if (streams_.empty()) return;
  const std::size_t n = std::min(streams_.size(), sh_.options.streams_per_read_max);
  if (claim_window_ >= streams_.size()) claim_window_ = 0;
  std::vector<const redis::CampaignKeys*> chosen;
  for (std::size_t k = 0; k < n; ++k) chosen.push_back(&streams_[(claim_window_ + k) % streams_.size()]);
  claim_window_ = (claim_window_ + n) % streams_.size();

  for (const auto* k : chosen) {
    std::string& cursor = claim_cursor_[k->stream_id];
    if (cursor.empty()) cursor = "0-0";
    redis_.append(redis::Args{"XAUTOCLAIM"}
                      .add(k->grants)
                      .add(redis::kWriterGroup)
                      .add(consumer_)
                      .add(sh_.options.claim_idle_ms)
                      .add(cursor)
                      .add("COUNT")
                      .add(entries_per_read_));
  }
  std::vector<StreamBatch> claimed;
  for (const auto* k : chosen) {
    redis::Reply r = redis_.read_reply();
    if (r.is_error()) continue;  // NOGROUP for a vanished stream: refresh recreates it
    if (r.size() < 2) continue;
    claim_cursor_[k->stream_id] = std::string(redis::reply_str(r.at(0)));
    StreamBatch sb{*k, grantlog::parse_entries(r.at(1)), {}, {}};
    if (!sb.entries.empty()) claimed.push_back(std::move(sb));
  }
  if (claimed.empty()) return;
  // Delivery counts of what we just claimed (XAUTOCLAIM counted this delivery already).
  for (const StreamBatch& sb : claimed) {
    redis_.append(redis::Args{"XPENDING"}
                      .add(sb.keys.grants)
                      .add(redis::kWriterGroup)
                      .add(sb.entries.front().id)
                      .add(sb.entries.back().id)
                      .add(static_cast<int64_t>(sb.entries.size()))
                      .add(consumer_));
  }
  for (StreamBatch& sb : claimed) {
    redis::Reply r = redis_.read_reply();
    std::unordered_map<std::string_view, int64_t> counts;
    for (std::size_t i = 0; i < r.size(); ++i) {
      const redisReply* p = r.at(i);
      long long d = 0;
      if (redis::reply_is_array(p) && p->elements >= 4 && redis::reply_int(p->element[3], &d)) {
        counts[redis::reply_str(p->element[0])] = d;
      }
    }
    for (LogEntry& e : sb.entries) {
      auto it = counts.find(e.id);
      e.deliveries = it == counts.end() ? sh_.options.dead_letter_after_deliveries : it->second;
    }
    sh_.claimed += sb.entries.size();
    out.push_back(std::move(sb));
  }
}

void GrantWriter::claim_dead(std::vector<StreamBatch>& out) {
  if (streams_.empty()) return;
  const int64_t now = redis::steady_ms();
  int64_t next = sh_.next_dead_scan_ms.load();
  if (now < next || !sh_.next_dead_scan_ms.compare_exchange_strong(next, now + sh_.options.heartbeat_interval_ms)) {
    return;
  }
  RegistrySnapshot reg = read_registry(redis_, sh_.prefix);
  std::vector<const BeatRecord*> dead;
  for (const BeatRecord& b : reg.beats) {
    if (b.beat_ms < 0 || reg.now_ms - b.beat_ms <= sh_.options.dead_after_ms) continue;
    if (sh_.heartbeat != nullptr && sh_.heartbeat->is_ours(b.consumer)) continue;  // we beat for it
    dead.push_back(&b);
  }
  if (dead.empty()) return;
  std::vector<std::string> names;
  names.reserve(streams_.size());
  for (const redis::CampaignKeys& k : streams_) names.push_back(k.grants);
  const std::vector<PendingByConsumer> pending = pending_summaries(redis_, names);

  // Per stream, the dead consumers' pending entries: XPENDING (ids, delivery counts), then XCLAIM
  // with a min-idle time. XCLAIM resets the idle time of what it takes, so a second live writer
  // racing for the same entries gets none of them: one commit per entry (and the commit is
  // idempotent anyway, for a "dead" process that wakes up and commits what it held).
  std::unordered_set<std::string> holding;  // dead consumers with entries somewhere
  struct Target {
    const redis::CampaignKeys* keys;
    std::string consumer;
  };
  std::vector<Target> targets;
  for (std::size_t i = 0; i < streams_.size(); ++i) {
    for (const auto& [name, n] : pending[i]) {
      for (const BeatRecord* d : dead) {
        if (d->consumer != name) continue;
        holding.insert(name);
        targets.push_back({&streams_[i], name});
      }
    }
  }
  const std::size_t per_call = std::min(targets.size(), sh_.options.streams_per_read_max);
  for (std::size_t t = 0; t < per_call; ++t) {
    redis_.append(redis::Args{"XPENDING"}
                      .add(targets[t].keys->grants)
                      .add(redis::kWriterGroup)
                      .add("-")
                      .add("+")
                      .add(entries_per_read_)
                      .add(targets[t].consumer));
  }
  std::vector<std::unordered_map<std::string, int64_t>> counts(per_call);
  for (std::size_t t = 0; t < per_call; ++t) {
    redis::Reply r = redis_.read_reply();
    for (std::size_t i = 0; r.is_array() && i < r.size(); ++i) {
      const redisReply* p = r.at(i);
      long long d = 0;
      if (redis::reply_is_array(p) && p->elements >= 4 && redis::reply_int(p->element[3], &d)) {
        counts[t][std::string(redis::reply_str(p->element[0]))] = d;
      }
    }
  }
  const int64_t min_idle = takeover_min_idle_ms(sh_.options);
  std::vector<std::size_t> sent;
  for (std::size_t t = 0; t < per_call; ++t) {
    if (counts[t].empty()) continue;
    redis::Args a{"XCLAIM"};
    a.add(targets[t].keys->grants).add(redis::kWriterGroup).add(consumer_).add(min_idle);
    for (const auto& [id, _] : counts[t]) a.add(id);
    redis_.append(a);
    sent.push_back(t);
  }
  std::size_t taken = 0;
  for (std::size_t t : sent) {
    redis::Reply r = redis_.read_reply();
    if (r.is_error()) continue;  // NOGROUP: the stream vanished; refresh recreates the group
    StreamBatch sb{*targets[t].keys, grantlog::parse_entries(r.raw()), {}, {}};
    for (LogEntry& e : sb.entries) {
      auto it = counts[t].find(e.id);
      // XCLAIM counted this delivery: one more than XPENDING said.
      e.deliveries = it == counts[t].end() ? sh_.options.dead_letter_after_deliveries : it->second + 1;
    }
    std::sort(sb.entries.begin(), sb.entries.end(), [](const LogEntry& x, const LogEntry& y) {
      redis::StreamId a, b;
      return redis::parse_stream_id(x.id, &a) && redis::parse_stream_id(y.id, &b) && a < b;
    });
    if (sb.entries.empty()) continue;
    taken += sb.entries.size();
    out.push_back(std::move(sb));
  }
  if (taken > 0) {
    sh_.claimed += taken;
    log(LogLevel::kWarning, "writer", consumer_ + " took over " + std::to_string(taken) +
                                          " grant-log entries from dead writer consumer(s) (no heartbeat for " +
                                          std::to_string(sh_.options.dead_after_ms) + " ms)");
  }
  if (per_call < targets.size() || taken > 0) sh_.next_dead_scan_ms = 0;  // more to take: look again soon
  // Dead consumers holding nothing anywhere: out of every group, out of the registry.
  for (const BeatRecord* d : dead) {
    if (holding.count(d->consumer)) continue;
    if (reap(redis_, sh_.prefix, names, *d)) {
      log(LogLevel::kInfo, "writer", "dead writer consumer " + d->consumer + " removed from the group and the registry");
    }
  }
}

void GrantWriter::refresh_idle(const std::vector<StreamBatch>& batch, int64_t now_ms) {
  if (now_ms - last_refresh_ms_ < sh_.options.claim_idle_ms / 3) return;
  last_refresh_ms_ = now_ms;
  for (const StreamBatch& sb : batch) {
    redis::Args a{"XCLAIM"};
    a.add(sb.keys.grants).add(redis::kWriterGroup).add(consumer_).add("0");
    for (const LogEntry& e : sb.entries) a.add(e.id);
    a.add("JUSTID");
    redis_.append(a);
  }
  for (std::size_t i = 0; i < batch.size(); ++i) redis_.read_reply();
}

bool GrantWriter::write(std::vector<StreamBatch>& batch, int64_t now_ms, int64_t* wait_ms) {
  std::size_t grants = 0;
  for (const StreamBatch& sb : batch) grants += sb.grants.size();
  if (grants == 0) return true;
  if (!sh_.breaker.allow(now_ms, wait_ms)) return false;
  grantlog::CommitPolicy policy;
  policy.dead_letter_after_deliveries = sh_.options.dead_letter_after_deliveries;
  policy.events = sh_.events;
  grantlog::CommitOutcome outcome;
  TraceBuffer* const tracer = sh_.trace ? sh_.trace->get() : nullptr;  // null: tracing off
  const int64_t commit_start_us = tracer ? now_us() : 0;
  try {
    outcome = grantlog::commit_entries(pg_, log_, batch, policy);
  } catch (const pg::PgError& e) {
    // The database is down, or refused the batch as a whole (not one row): retry later.
    sh_.failures++;
    const bool was_open = sh_.breaker.is_open();
    sh_.breaker.failure(redis::steady_ms());
    log(LogLevel::kWarning, "writer", "writing " + std::to_string(grants) +
                                          " grants failed; they wait in the log and are retried: " + e.what());
    if (!was_open && sh_.breaker.is_open()) {
      log(LogLevel::kError, "writer", "circuit breaker open after " + std::to_string(sh_.options.breaker_failures) +
                                          " consecutive failures: no new grants are read until PostgreSQL answers");
    }
    *wait_ms = std::max<int64_t>(1, sh_.options.backoff_initial_ms / 2);
    return false;
  }
  if (sh_.breaker.is_open()) log(LogLevel::kInfo, "writer", "PostgreSQL answers again: circuit breaker closed");
  sh_.breaker.success();
  sh_.batches++;
  if (sh_.commit_grants) sh_.commit_grants->observe(static_cast<double>(grants));
  sh_.written += static_cast<uint64_t>(outcome.inserted);
  sh_.dead_lettered += static_cast<uint64_t>(outcome.dead_letter_records);
  if (tracer) note_commit(*tracer, batch, commit_start_us, grants);
  return true;
}

// Tracing: the commit's record (campaigns, rows, the grants' traceparents as links).
void GrantWriter::note_commit(TraceBuffer& tracer, const std::vector<StreamBatch>& batch, int64_t start_us,
                              std::size_t grants) {
  TraceRecord rec;
  rec.kind = TraceKind::kWriterCommit;
  rec.start_us = start_us;
  rec.end_us = now_us();
  rec.items = static_cast<int64_t>(grants);
  for (const StreamBatch& sb : batch) {
    if (sb.grants.empty()) continue;
    rec.campaign_ids.push_back(sb.keys.campaign_id);
    for (const Grant& g : sb.grants) add_trace_link(rec, g.traceparent);
  }
  tracer.put(std::move(rec));
}

void GrantWriter::adapt_read_size(const std::vector<StreamBatch>& batch) {
  std::size_t entries = 0, grants = 0;
  for (const StreamBatch& sb : batch) {
    entries += sb.entries.size();
    grants += sb.grants.size();
  }
  if (entries == 0) return;
  const int64_t per_entry = std::max<int64_t>(1, static_cast<int64_t>((grants + entries - 1) / entries));
  entries_per_read_ = std::clamp<int64_t>(static_cast<int64_t>(sh_.options.read_count_max) / per_entry, 1,
                                          static_cast<int64_t>(sh_.options.read_count_max));
}

void GrantWriter::say_goodbye() {
  bool holds_nothing = true;
  for (const redis::CampaignKeys& k : streams_) {
    redis::Reply r = redis_.command(redis::Args{"XPENDING"}.add(k.grants).add(redis::kWriterGroup).add("-").add("+").add("1").add(consumer_));
    if (r.is_array() && r.size() == 0) {
      redis_.command(redis::Args{"XGROUP", "DELCONSUMER"}.add(k.grants).add(redis::kWriterGroup).add(consumer_));
    } else {
      holds_nothing = false;
    }
  }
  // Holding entries, it keeps its last beat: judged dead dead_after_ms from now, it is taken
  // over by a live writer within seconds rather than after claim_idle_ms.
  if (holds_nothing && sh_.heartbeat != nullptr) sh_.heartbeat->retire(consumer_, redis_);
}

void GrantWriter::run() {
  std::vector<StreamBatch> held;
  while (!sh_.stop.load()) {
    try {
      const int64_t now = redis::steady_ms();
      if (held.empty()) {
        // While the database is failing, take nothing new (grants wait in the stream); the
        // writer holding the failed batch probes for everyone.
        if (sh_.breaker.consecutive_failures() != 0) {
          sleep_ms(20);
          continue;
        }
        refresh_streams(now);
        std::vector<StreamBatch> fresh;  // into `held` only once prepared
        claim_dead(fresh);
        if (fresh.empty() && now >= next_claim_ms_) {
          next_claim_ms_ = now + sh_.options.claim_interval_ms;
          claim_idle(fresh);
        }
        if (fresh.empty()) read_new(fresh);
        if (sh_.replicas_acked > 0 && !fresh.empty()) wait_replicas(fresh);
        sh_.dead_lettered += log_.prepare(fresh, /*dead_letter_malformed=*/true);
        adapt_read_size(fresh);
        held = std::move(fresh);
        if (held.empty()) continue;
        last_refresh_ms_ = now;
      }
      int64_t wait_ms = 0;
      if (write(held, now, &wait_ms)) {
        held.clear();
        redis_failures_ = 0;
        continue;
      }
      refresh_idle(held, redis::steady_ms());
      sleep_ms(std::min<int64_t>(std::max<int64_t>(wait_ms, 1), 100));
    } catch (const Error& e) {
      log(LogLevel::kWarning, "writer", std::string("redis: ") + e.what());
      // Redis is down or dropped us. Entries in hand stay pending under our name; they are
      // written again once Redis is back (idempotently).
      sh_.failures++;
      ++redis_failures_;
      sleep_ms(jittered_backoff_ms(redis_failures_, sh_.options.backoff_initial_ms, sh_.options.backoff_max_ms, rng_));
    }
  }
  // Stopping: one last try to finish the batch in hand, then leave the group tidy.
  try {
    int64_t wait_ms = 0;
    if (!held.empty()) write(held, redis::steady_ms(), &wait_ms);
    say_goodbye();
  } catch (const Error&) {
  }
}

}  // namespace couponcore::writer

// ---- run_worker ------------------------------------------------------------------------------

namespace couponcore {

int run_worker(const WorkerOptions& options, std::atomic<bool>& stop) {
  redis::check_key_prefix(options.key_prefix);
  writer::check_writer_options(options.writer);
  if (options.threads < 1 || options.threads > 64) throw_invalid("worker threads must be 1..64");
  if (options.postgres_url.empty()) throw_invalid("worker needs a postgres url");
  if (options.replicas_acked < 0 || options.replicas_acked > 16) throw_invalid("replicas_acked must be 0..16");
  if (options.replica_wait_ms < 1 || options.replica_wait_ms > 60'000) throw_invalid("replica_wait_ms must be 1..60000");
  redis::RedisUrl url = redis::RedisUrl::parse(options.redis_url);
  // Every PostgreSQL session carries the key prefix: the outbox rows are this prefix's.
  const std::string postgres_url = pgevents::conninfo_for_prefix(options.postgres_url, options.key_prefix);
  std::mt19937_64 rng(std::random_device{}());

  if (options.migrate_on_start) {
    for (int attempt = 1; !stop.load(); ++attempt) {
      try {
        migrate(postgres_url);
        break;
      } catch (const Error& e) {
        if (e.code() != ErrorCode::kUnavailable) throw;
        const int64_t wait = writer::jittered_backoff_ms(attempt, options.writer.backoff_initial_ms,
                                                         options.writer.backoff_max_ms, rng);
        std::this_thread::sleep_for(std::chrono::milliseconds(wait));
      }
    }
  }
  redis::RedisConnOptions ro;
  ro.client_name = "couponcore-worker";
  ro.backoff_max_ms = options.writer.backoff_max_ms;
  if (options.replicas_acked > 0) ro.command_timeout_ms = std::max(ro.command_timeout_ms, options.replica_wait_ms + 1'000);
  writer::WriterShared shared(options.key_prefix, url, ro, postgres_url, options.writer, stop);
  shared.replicas_acked = options.replicas_acked;
  shared.replica_wait_ms = options.replica_wait_ms;
  shared.events = options.events.enabled;
  shared.trace = options.trace;
  check_event_options(options.events);
  // The outbox relay (docs/events.md): one active per database, the others stand by.
  std::unique_ptr<events::Relay> relay;
  if (options.events.relay) {
    redis::RedisConnOptions rro = ro;
    rro.client_name = "couponcore-worker-relay";
    relay = std::make_unique<events::Relay>(options.key_prefix, url, rro, postgres_url, options.events);
  }
  const std::string base = options.consumer_name.empty() ? writer::default_consumer_base() : options.consumer_name;
  std::vector<std::unique_ptr<writer::GrantWriter>> writers;
  std::vector<std::thread> threads;
  std::vector<std::string> consumers;
  for (int i = 0; i < options.threads; ++i) consumers.push_back(base + "-" + std::to_string(i));
  // Beating before the first read: a consumer is never without a heartbeat while it holds entries.
  writer::Heartbeat heartbeat(options.key_prefix, url, ro, options.writer.heartbeat_interval_ms, consumers);
  shared.heartbeat = &heartbeat;
  for (const std::string& c : consumers) writers.push_back(std::make_unique<writer::GrantWriter>(shared, c));
  for (auto& w : writers) threads.emplace_back([&w] { w->run(); });
  int64_t next_report_ms = redis::steady_ms() + options.report_interval_ms;
  while (!stop.load()) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
    if (options.report_interval_ms > 0 && options.report && redis::steady_ms() >= next_report_ms) {
      next_report_ms = redis::steady_ms() + options.report_interval_ms;
      options.report(shared.stats());
    }
  }
  for (auto& t : threads) t.join();
  heartbeat.stop();  // after the writers: one finishing its last batch still beats
  // After the writers: the events of their last batches are in the outbox; a bounded drain.
  if (relay) relay->stop(writer::kRelayDrainMs);
  if (options.report) options.report(shared.stats());
  return 0;
}

// ---- LogBacklogReader --------------------------------------------------------------------------

struct LogBacklogReader::Impl {
  Impl(redis::RedisUrl url, redis::RedisConnOptions ro, std::string prefix)
      : conn(std::move(url), std::move(ro)), key_prefix(std::move(prefix)) {}
  redis::RedisConn conn;
  std::string key_prefix;
};

LogBacklogReader::LogBacklogReader(const std::string& redis_url, const std::string& key_prefix) {
  redis::check_key_prefix(key_prefix);
  redis::RedisConnOptions ro;
  ro.client_name = "couponcore-worker-metrics";
  ro.connect_timeout_ms = 1'000;  // a scrape waits at most this long for a Redis that is down
  ro.command_timeout_ms = 2'000;
  impl_ = std::make_unique<Impl>(redis::RedisUrl::parse(redis_url), ro, key_prefix);
}

LogBacklogReader::~LogBacklogReader() = default;

std::vector<LogBacklog> LogBacklogReader::read() {
  impl_->conn.ensure_connected();
  grantlog::GrantLog glog(impl_->conn);
  std::vector<LogBacklog> b = glog.backlog(impl_->key_prefix, kLogBacklogCampaignsMax);
  writer::add_unread_ages(impl_->conn, impl_->key_prefix, b);
  return b;
}

int64_t LogBacklogReader::writers_alive(int64_t dead_after_ms) {
  impl_->conn.ensure_connected();
  int64_t n = 0;
  for (const WriterInfo& w : writer::list_writers(impl_->conn, impl_->key_prefix, {}, dead_after_ms)) n += w.alive ? 1 : 0;
  return n;
}

}  // namespace couponcore
