// The grant writer loop and run_worker(): see grant_writer.hpp and couponcore/worker.hpp.
#include "writer/grant_writer.hpp"

#include <hiredis/hiredis.h>
#include <unistd.h>

#include <algorithm>
#include <charconv>
#include <chrono>
#include <thread>

#include "couponcore/error.hpp"
#include "couponcore/limits.hpp"
#include "postgres/coupon_store.hpp"
#include "postgres/migrations.hpp"
#include "redis/scripts.hpp"

namespace couponcore::writer {

namespace {

constexpr std::size_t kDeadLetterFieldsMax = 16;     // original field pairs copied to a dead letter
constexpr std::size_t kDeadLetterValueBytesMax = 1024;
// A malformed batch entry keeps its grant lines whole (2,048 lines of at most ~310 bytes), so
// that its grants can still be recovered by hand from the dead-letter stream.
constexpr std::size_t kDeadLetterLinesBytesMax = 1 << 20;
constexpr std::size_t kReasonBytesMax = 500;
constexpr std::size_t kCampaignsMax = 100'000;       // campaign streams one writer follows
constexpr int64_t kWriterStatementTimeoutMs = 30'000;

bool to_i64(std::string_view s, int64_t* v) {
  if (s.empty()) return false;
  auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), *v);
  return ec == std::errc() && end == s.data() + s.size();
}

std::string clip(std::string s, std::size_t n) {
  if (s.size() > n) s.resize(n);
  return s;
}

bool is_error_prefix(const redis::Reply& r, std::string_view p) {
  return r.is_error() && r.str().substr(0, p.size()) == p;
}

}  // namespace

// ---- parsing ---------------------------------------------------------------------------------

std::vector<LogEntry> parse_entries(const redisReply* entries) {
  std::vector<LogEntry> out;
  if (!redis::reply_is_array(entries)) return out;
  out.reserve(entries->elements);
  for (std::size_t i = 0; i < entries->elements; ++i) {
    const redisReply* e = entries->element[i];
    if (!redis::reply_is_array(e) || e->elements < 1) continue;
    LogEntry le;
    le.id = std::string(redis::reply_str(e->element[0]));
    if (le.id.empty()) continue;
    if (e->elements < 2 || redis::reply_is_nil(e->element[1])) {
      le.deleted = true;
    } else if (redis::reply_is_array(e->element[1])) {
      const redisReply* f = e->element[1];
      for (std::size_t k = 0; k + 1 < f->elements; k += 2) {
        le.fields.emplace_back(std::string(redis::reply_str(f->element[k])),
                               std::string(redis::reply_str(f->element[k + 1])));
      }
    }
    out.push_back(std::move(le));
  }
  return out;
}

namespace {

// One grant's fields, checked; "" or why they are malformed.
std::string grant_from(int64_t campaign_id, std::string_view seq, std::string_view user, std::string_view ordinal,
                       std::string_view request_id, int64_t issued_at_us, Grant* g) {
  int64_t n = 0;
  *g = Grant{};
  g->campaign_id = campaign_id;
  if (!to_i64(seq, &n) || n < 1 || n > limits::kQuantityMax) return "malformed: s is not a seq in 1..quantity max";
  g->seq = static_cast<uint32_t>(n);
  if (!limits::is_valid_id(user, limits::kUserIdBytesMax)) return "malformed: u is not a valid user id";
  g->user_id = std::string(user);
  if (!to_i64(ordinal, &n) || n < 1 || n > limits::kPerUserLimitMax) return "malformed: o is not a user ordinal";
  g->user_ordinal = static_cast<uint32_t>(n);
  if (!request_id.empty() && !limits::is_valid_id(request_id, limits::kRequestIdBytesMax)) {
    return "malformed: r is not a request id";
  }
  g->request_id = std::string(request_id);
  g->issued_at_us = issued_at_us;
  return "";
}

}  // namespace

std::string parse_grants(const LogEntry& entry, int64_t campaign_id, std::vector<Grant>* out) {
  if (entry.deleted) return "malformed: the entry was deleted";
  std::string_view c, s, u, o, r, t, g;
  bool have_c = false, have_s = false, have_u = false, have_o = false, have_t = false, have_g = false;
  for (const auto& [k, v] : entry.fields) {
    if (k == "c") {
      c = v, have_c = true;
    } else if (k == "s") {
      s = v, have_s = true;
    } else if (k == "u") {
      u = v, have_u = true;
    } else if (k == "o") {
      o = v, have_o = true;
    } else if (k == "r") {
      r = v;
    } else if (k == "t") {
      t = v, have_t = true;
    } else if (k == "g") {
      g = v, have_g = true;
    }
  }
  int64_t n = 0;
  if (!have_c || !to_i64(c, &n) || n != campaign_id) return "malformed: c is not this stream's campaign id";
  int64_t issued_at = 0;
  if (!have_t || !to_i64(t, &issued_at) || issued_at < 0) return "malformed: t is not a time in microseconds";
  if (!have_g) {  // one grant: c s u o r t
    if (!(have_s && have_u && have_o)) return "malformed: a field of c s u o t is missing";
    Grant one;
    std::string why = grant_from(campaign_id, s, u, o, r, issued_at, &one);
    if (why.empty()) out->push_back(std::move(one));
    return why;
  }
  // A batch: c t g, g = lines "<seq> <user_ordinal> <user_id> <request_id>".
  if (g.empty()) return "malformed: g holds no grant";
  std::vector<Grant> grants;
  for (std::size_t pos = 0; pos <= g.size();) {
    std::size_t end = g.find('\n', pos);
    if (end == std::string_view::npos) end = g.size();
    const std::string_view line = g.substr(pos, end - pos);
    const std::size_t a = line.find(' ');
    const std::size_t b = a == std::string_view::npos ? a : line.find(' ', a + 1);
    const std::size_t d = b == std::string_view::npos ? b : line.find(' ', b + 1);
    if (d == std::string_view::npos || line.find(' ', d + 1) != std::string_view::npos) {
      return "malformed: a line of g is not '<seq> <user_ordinal> <user_id> <request_id>'";
    }
    Grant one;
    std::string why = grant_from(campaign_id, line.substr(0, a), line.substr(b + 1, d - b - 1), line.substr(a + 1, b - a - 1),
                                 line.substr(d + 1), issued_at, &one);
    if (!why.empty()) return why;
    grants.push_back(std::move(one));
    pos = end + 1;
  }
  for (Grant& one : grants) out->push_back(std::move(one));
  return "";
}

// ---- shared state ----------------------------------------------------------------------------

WorkerStats WriterShared::stats() const {
  WorkerStats s;
  s.grants_written = written.load();
  s.batches = batches.load();
  s.dead_lettered = dead_lettered.load();
  s.failures = failures.load();
  s.claimed = claimed.load();
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
      }()),
      ack_script_(redis::kAckLua),
      dead_letter_script_(redis::kDeadLetterLua) {}

void GrantWriter::sleep_ms(int64_t ms) {
  const int64_t until = redis::steady_ms() + ms;
  while (!sh_.stop.load() && redis::steady_ms() < until) {
    std::this_thread::sleep_for(std::chrono::milliseconds(std::min<int64_t>(20, std::max<int64_t>(1, until - redis::steady_ms()))));
  }
}

void GrantWriter::ensure_group(const redis::CampaignKeys& keys) {
  redis::Reply r = redis_.command(redis::Args{"XGROUP", "CREATE"}.add(keys.grants).add(redis::kWriterGroup).add("0").add("MKSTREAM"));
  if (r.is_error() && !is_error_prefix(r, "BUSYGROUP")) redis::throw_reply_error(r.str(), "XGROUP CREATE");
}

void GrantWriter::refresh_streams(int64_t now_ms) {
  if (now_ms < next_refresh_ms_) return;
  next_refresh_ms_ = now_ms + sh_.options.campaigns_refresh_ms;
  redis::Reply r = redis_.command_checked(redis::Args{"SMEMBERS"}.add(redis::campaigns_set_key(sh_.prefix)), "SMEMBERS");
  for (std::size_t i = 0; i < r.size() && known_.size() < kCampaignsMax; ++i) {
    long long id = 0;
    if (!redis::reply_int(r.at(i), &id) || id <= 0 || id > limits::kCampaignIdMax) continue;
    if (known_.count(id)) continue;
    redis::CampaignKeys keys(sh_.prefix, id);
    ensure_group(keys);
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

  redis::Args a{"XREADGROUP", "GROUP"};
  a.add(redis::kWriterGroup).add(consumer_).add("COUNT").add(entries_per_read_);
  if (block) a.add("BLOCK").add(sh_.options.block_ms);
  a.add("STREAMS");
  for (const auto* k : chosen) a.add(k->grants);
  for (std::size_t k = 0; k < chosen.size(); ++k) a.add(">");
  redis::Reply r = redis_.command(a);
  if (is_error_prefix(r, "NOGROUP")) {  // a stream vanished (deleted by hand): recreate groups
    for (const auto* k : chosen) ensure_group(*k);
    return;
  }
  if (r.is_error()) redis::throw_reply_error(r.str(), "XREADGROUP");
  for (std::size_t i = 0; i < r.size(); ++i) {
    const redisReply* s = r.at(i);
    if (!redis::reply_is_array(s) || s->elements != 2) continue;
    std::string_view key = redis::reply_str(s->element[0]);
    for (const auto* k : chosen) {
      if (k->grants == key) {
        StreamBatch sb{*k, parse_entries(s->element[1]), {}, {}};
        if (!sb.entries.empty()) out.push_back(std::move(sb));
        break;
      }
    }
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
    std::string& cursor = claim_cursor_[k->campaign_id];
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
    claim_cursor_[k->campaign_id] = std::string(redis::reply_str(r.at(0)));
    StreamBatch sb{*k, parse_entries(r.at(1)), {}, {}};
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

void GrantWriter::heartbeat(const std::vector<StreamBatch>& batch, int64_t now_ms) {
  if (now_ms - last_heartbeat_ms_ < sh_.options.claim_idle_ms / 3) return;
  last_heartbeat_ms_ = now_ms;
  for (const StreamBatch& sb : batch) {
    redis::Args a{"XCLAIM"};
    a.add(sb.keys.grants).add(redis::kWriterGroup).add(consumer_).add("0");
    for (const LogEntry& e : sb.entries) a.add(e.id);
    a.add("JUSTID");
    redis_.append(a);
  }
  for (std::size_t i = 0; i < batch.size(); ++i) redis_.read_reply();
}

void GrantWriter::dead_letter(const StreamBatch& sb, const LogEntry& e, const std::string& reason,
                              const std::vector<std::pair<std::size_t, std::string>>* refused) {
  redis::Args a;
  a.add(redis::kWriterGroup).add(e.id).add(e.deliveries);
  int64_t records = 0;
  if (refused == nullptr) {
    std::vector<std::pair<std::string, std::string>> fields;
    for (const auto& [k, v] : e.fields) {
      if (fields.size() == kDeadLetterFieldsMax) break;
      fields.emplace_back(clip(k, 64), clip(v, k == "g" ? kDeadLetterLinesBytesMax : kDeadLetterValueBytesMax));
    }
    a.add(int64_t{1}).add(clip(reason, kReasonBytesMax)).add(static_cast<int64_t>(fields.size()));
    for (const auto& [k, v] : fields) a.add(k).add(v);
    records = 1;
  } else {
    a.add(static_cast<int64_t>(refused->size()));
    for (const auto& [gi, why] : *refused) {
      const Grant& g = sb.grants[gi];
      a.add(clip(why, kReasonBytesMax)).add(int64_t{6});
      a.add("c").add(g.campaign_id).add("s").add(int64_t{g.seq}).add("u").add(g.user_id);
      a.add("o").add(int64_t{g.user_ordinal}).add("r").add(g.request_id).add("t").add(g.issued_at_us);
    }
    records = static_cast<int64_t>(refused->size());
  }
  redis::Reply r = redis::eval(redis_, dead_letter_script_, {sb.keys.grants, sb.keys.dead_letters, sb.keys.reasons}, a);
  if (r.is_error()) redis::throw_reply_error(r.str(), "dead letter");
  if (r.integer() == 1) {
    sh_.dead_lettered += static_cast<uint64_t>(records);
    log(LogLevel::kWarning, "writer", "grant-log entry " + e.id + " of campaign " + std::to_string(sb.keys.campaign_id) +
                                          ": " + std::to_string(records) +
                                          " record(s) moved to the dead-letter stream after " +
                                          std::to_string(e.deliveries) + " deliveries: " + clip(reason, kReasonBytesMax));
  }
}

void GrantWriter::prepare(std::vector<StreamBatch>& batch) {
  for (StreamBatch& sb : batch) {
    std::vector<LogEntry> keep;
    std::vector<std::string> clear;
    keep.reserve(sb.entries.size());
    sb.grants.clear();
    sb.grant_entry.clear();
    for (LogEntry& e : sb.entries) {
      if (e.deleted) {  // deleted while pending: nothing to write, just clear it
        clear.push_back(e.id);
        continue;
      }
      const std::string why = parse_grants(e, sb.keys.campaign_id, &sb.grants);
      if (!why.empty()) {  // retrying cannot fix a malformed entry
        dead_letter(sb, e, why);
        continue;
      }
      sb.grant_entry.resize(sb.grants.size(), keep.size());
      keep.push_back(std::move(e));
    }
    sb.entries = std::move(keep);
    if (!clear.empty()) {
      redis::Args a;
      a.add(redis::kWriterGroup);
      for (const std::string& id : clear) a.add(id);
      redis::check_reply(redis::eval(redis_, ack_script_, {sb.keys.grants, sb.keys.reasons}, a), "ack");
    }
  }
  batch.erase(std::remove_if(batch.begin(), batch.end(), [](const StreamBatch& sb) { return sb.entries.empty(); }),
              batch.end());
}

bool GrantWriter::write(std::vector<StreamBatch>& batch, int64_t now_ms, int64_t* wait_ms) {
  std::vector<Grant> grants;
  std::vector<std::pair<std::size_t, std::size_t>> where;  // grant index -> (stream, its index there)
  for (std::size_t s = 0; s < batch.size(); ++s) {
    for (std::size_t i = 0; i < batch[s].grants.size(); ++i) {
      grants.push_back(batch[s].grants[i]);
      where.emplace_back(s, i);
    }
  }
  if (grants.empty()) return true;
  // 1. One transaction for the whole batch, if the breaker lets us.
  if (!sh_.breaker.allow(now_ms, wait_ms)) return false;
  pgstore::WriteOutcome outcome;
  try {
    outcome = pgstore::write_grants(pg_, grants);
  } catch (const Error& e) {
    // The database is down, or refused the batch as a whole (not one row): retry later.
    sh_.failures++;
    const bool was_open = sh_.breaker.is_open();
    sh_.breaker.failure(redis::steady_ms());
    log(LogLevel::kWarning, "writer", "writing " + std::to_string(grants.size()) +
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
  if (sh_.commit_grants) sh_.commit_grants->observe(static_cast<double>(grants.size()));
  sh_.written += static_cast<uint64_t>(outcome.inserted);
  // 2. Entries with a grant the database refused: on the last allowed delivery their refused
  //    grants go to the dead-letter stream (the others are written) and the entry is removed;
  //    before that, the entry is left pending (it comes back through XAUTOCLAIM, and its other
  //    grants are written again, idempotently) with the reason noted.
  std::vector<std::vector<std::vector<std::pair<std::size_t, std::string>>>> refused(batch.size());
  for (std::size_t s = 0; s < batch.size(); ++s) refused[s].resize(batch[s].entries.size());
  for (const auto& [gi, reason] : outcome.failed) {
    const auto [s, i] = where[gi];
    refused[s][batch[s].grant_entry[i]].emplace_back(i, reason);
  }
  for (std::size_t s = 0; s < batch.size(); ++s) {
    for (std::size_t ei = 0; ei < batch[s].entries.size(); ++ei) {
      const auto& why = refused[s][ei];
      if (why.empty()) continue;
      const LogEntry& e = batch[s].entries[ei];
      const std::string reason =
          why.size() == 1 ? why[0].second : std::to_string(why.size()) + " grants refused; the first: " + why[0].second;
      if (e.deliveries >= sh_.options.dead_letter_after_deliveries) {
        dead_letter(batch[s], e, reason, &why);
      } else {
        redis_.command_checked(
            redis::Args{"HSET"}.add(batch[s].keys.reasons).add(e.id).add(clip(reason, kReasonBytesMax)), "HSET reason");
      }
    }
  }
  // 3. Acknowledge (and delete) the entries whose grants are all in PostgreSQL now.
  for (std::size_t s = 0; s < batch.size(); ++s) {
    redis::Args a;
    a.add(redis::kWriterGroup);
    std::size_t n = 0;
    for (std::size_t ei = 0; ei < batch[s].entries.size(); ++ei) {
      if (refused[s][ei].empty()) {
        a.add(batch[s].entries[ei].id);
        ++n;
      }
    }
    if (n) redis::check_reply(redis::eval(redis_, ack_script_, {batch[s].keys.grants, batch[s].keys.reasons}, a), "ack");
  }
  return true;
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
  for (const redis::CampaignKeys& k : streams_) {
    redis::Reply r = redis_.command(redis::Args{"XPENDING"}.add(k.grants).add(redis::kWriterGroup).add("-").add("+").add("1").add(consumer_));
    if (r.is_array() && r.size() == 0) {
      redis_.command(redis::Args{"XGROUP", "DELCONSUMER"}.add(k.grants).add(redis::kWriterGroup).add(consumer_));
    }
  }
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
        if (now >= next_claim_ms_) {
          next_claim_ms_ = now + sh_.options.claim_interval_ms;
          claim_idle(fresh);
        }
        if (fresh.empty()) read_new(fresh);
        prepare(fresh);
        adapt_read_size(fresh);
        held = std::move(fresh);
        if (held.empty()) continue;
        last_heartbeat_ms_ = now;
      }
      int64_t wait_ms = 0;
      if (write(held, now, &wait_ms)) {
        held.clear();
        redis_failures_ = 0;
        continue;
      }
      heartbeat(held, redis::steady_ms());
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
  redis::RedisUrl url = redis::RedisUrl::parse(options.redis_url);
  std::mt19937_64 rng(std::random_device{}());

  if (options.migrate_on_start) {
    for (int attempt = 1; !stop.load(); ++attempt) {
      try {
        migrate(options.postgres_url);
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
  writer::WriterShared shared(options.key_prefix, url, ro, options.postgres_url, options.writer, stop);
  const std::string base = options.consumer_name.empty() ? writer::default_consumer_base() : options.consumer_name;
  std::vector<std::unique_ptr<writer::GrantWriter>> writers;
  std::vector<std::thread> threads;
  for (int i = 0; i < options.threads; ++i) {
    writers.push_back(std::make_unique<writer::GrantWriter>(shared, base + "-" + std::to_string(i)));
  }
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
  if (options.report) options.report(shared.stats());
  return 0;
}

}  // namespace couponcore
