// The grant log's operations and its one commit path: see grant_log.hpp.
#include "log/grant_log.hpp"

#include <hiredis/hiredis.h>

#include <algorithm>
#include <functional>

#include "couponcore/error.hpp"
#include "couponcore/limits.hpp"
#include "couponcore/metrics.hpp"
#include "log/lua_scripts.hpp"
#include "store/postgres/coupon_store.hpp"
#include "util/assert.hpp"

namespace couponcore::grantlog {

namespace {

constexpr std::size_t kDeadLetterFieldsMax = 16;  // original field pairs copied to a dead letter
constexpr std::size_t kDeadLetterValueBytesMax = 1024;
// A malformed batch entry keeps its grant lines whole (2,048 lines of at most ~310 bytes), so
// that its grants can still be recovered by hand from the dead-letter stream.
constexpr std::size_t kDeadLetterLinesBytesMax = 1 << 20;
constexpr std::size_t kReasonBytesMax = 500;

std::string clip(std::string s, std::size_t n) {
  if (s.size() > n) s.resize(n);
  return s;
}

}  // namespace

GrantLog::GrantLog(redis::RedisConn& conn) : conn_(conn), ack_script_(lua::kAck), dead_letter_script_(lua::kDeadLetter) {}

void GrantLog::ensure_group(const redis::CampaignKeys& keys) {
  redis::Reply r =
      conn_.command(redis::Args{"XGROUP", "CREATE"}.add(keys.grants).add(redis::kWriterGroup).add("0").add("MKSTREAM"));
  if (r.is_error() && r.str().substr(0, 9) != "BUSYGROUP") redis::throw_reply_error(r.str(), "XGROUP CREATE");
}

void GrantLog::register_campaign(std::string_view prefix, const redis::CampaignKeys& keys) {
  ensure_group(keys);
  conn_.command_checked(redis::Args{"SADD"}.add(redis::campaigns_set_key(prefix)).add(keys.stream_id), "SADD");
}

std::vector<int64_t> GrantLog::campaigns(std::string_view prefix) {
  redis::Reply r = conn_.command_checked(redis::Args{"SMEMBERS"}.add(redis::campaigns_set_key(prefix)), "SMEMBERS");
  std::vector<int64_t> out;
  for (std::size_t i = 0; i < r.size(); ++i) {
    long long id = 0;
    redis::CampaignKeys k;
    if (redis::reply_int(r.at(i), &id) && redis::CampaignKeys::from_stream_id(prefix, id, &k)) out.push_back(id);
  }
  return out;
}

std::vector<LogEntry> GrantLog::range(const redis::CampaignKeys& keys, const std::string& after, std::size_t count) {
  redis::Reply r = conn_.command_checked(
      redis::Args{"XRANGE"}.add(keys.grants).add(after).add("+").add("COUNT").add(static_cast<int64_t>(count)), "XRANGE");
  return parse_entries(r.raw());
}

bool GrantLog::last_id(const redis::CampaignKeys& keys, redis::StreamId* out) {
  redis::Reply r =
      conn_.command_checked(redis::Args{"XREVRANGE"}.add(keys.grants).add("+").add("-").add("COUNT").add("1"), "XREVRANGE");
  std::vector<LogEntry> e = parse_entries(r.raw());
  return !e.empty() && redis::parse_stream_id(e[0].id, out);
}

bool GrantLog::settled_through(const redis::CampaignKeys& keys, const redis::StreamId& target) {
  redis::Reply groups = conn_.command_checked(redis::Args{"XINFO", "GROUPS"}.add(keys.grants), "XINFO GROUPS");
  bool delivered = false;
  for (std::size_t g = 0; g < groups.size(); ++g) {
    const redisReply* fields = groups.at(g);
    std::string_view name, last;
    for (std::size_t i = 0; redis::reply_is_array(fields) && i + 1 < fields->elements; i += 2) {
      std::string_view f = redis::reply_str(fields->element[i]);
      if (f == "name") name = redis::reply_str(fields->element[i + 1]);
      if (f == "last-delivered-id") last = redis::reply_str(fields->element[i + 1]);
    }
    redis::StreamId lid;
    if (name == redis::kWriterGroup && redis::parse_stream_id(last, &lid)) delivered = lid >= target;
  }
  if (!delivered) return false;
  redis::Reply p = conn_.command_checked(redis::Args{"XPENDING"}.add(keys.grants).add(redis::kWriterGroup), "XPENDING");
  if (p.size() < 2) return false;
  long long pending = 0;
  redis::reply_int(p.at(0), &pending);
  if (pending == 0) return true;
  redis::StreamId min_id;
  return redis::parse_stream_id(redis::reply_str(p.at(1)), &min_id) && min_id > target;
}

int64_t GrantLog::dead_letter_count(const redis::CampaignKeys& keys) {
  return conn_.command_checked(redis::Args{"XLEN"}.add(keys.dead_letters), "XLEN").integer();
}

std::vector<LogBacklog> GrantLog::backlog(std::string_view prefix, std::size_t campaigns_max) {
  std::vector<int64_t> ids = campaigns(prefix);
  std::sort(ids.begin(), ids.end(), std::greater<>());
  if (ids.size() > campaigns_max) ids.resize(campaigns_max);
  std::sort(ids.begin(), ids.end());
  redis::Reply t = conn_.command_checked(redis::Args{"TIME"}, "TIME");
  long long sec = 0, usec = 0;
  if (t.size() < 2 || !redis::reply_int(t.at(0), &sec) || !redis::reply_int(t.at(1), &usec)) {
    throw Error(ErrorCode::kUnavailable, "redis: TIME gave an unexpected reply");
  }
  const int64_t now_ms = static_cast<int64_t>(sec) * 1000 + static_cast<int64_t>(usec) / 1000;
  std::vector<LogBacklog> out;
  out.reserve(ids.size());
  // Round trips of kBacklogChunk campaigns (3 commands each): the reply buffer stays bounded.
  constexpr std::size_t kBacklogChunk = 1000;
  for (std::size_t from = 0; from < ids.size(); from += kBacklogChunk) {
    const std::size_t to = std::min(ids.size(), from + kBacklogChunk);
    for (std::size_t i = from; i < to; ++i) {
      redis::CampaignKeys k;
      redis::CampaignKeys::from_stream_id(prefix, ids[i], &k);
      conn_.append(redis::Args{"XLEN"}.add(k.grants));
      conn_.append(redis::Args{"XPENDING"}.add(k.grants).add(redis::kWriterGroup));
      conn_.append(redis::Args{"XLEN"}.add(k.dead_letters));
    }
    // Every reply is read before anything is judged: the connection stays in step.
    for (std::size_t i = from; i < to; ++i) {
      redis::Reply len = conn_.read_reply();
      redis::Reply pend = conn_.read_reply();
      redis::Reply dl = conn_.read_reply();
      LogBacklog b;
      b.campaign_id = ids[i];  // a stream id: writer::add_unread_ages makes it the campaign's
      if (len.is_integer()) b.entries = len.integer();
      if (dl.is_integer()) b.dead_letters = dl.integer();
      long long pending = 0;
      // XPENDING summary: count, smallest id, greatest id, consumers (NOGROUP: an error reply).
      if (pend.is_array() && pend.size() >= 2 && redis::reply_int(pend.at(0), &pending) && pending > 0) {
        b.pending = pending;
        redis::StreamId oldest;
        if (redis::parse_stream_id(redis::reply_str(pend.at(1)), &oldest)) {
          b.oldest_pending_age_ms = std::max<int64_t>(0, now_ms - static_cast<int64_t>(oldest.first));
        }
      }
      out.push_back(b);
    }
  }
  return out;
}

void GrantLog::ack(const redis::CampaignKeys& keys, const std::vector<std::string>& ids, bool remove) {
  if (ids.empty()) return;
  redis::Args a;
  a.add(redis::kWriterGroup);
  for (const std::string& id : ids) a.add(id);
  redis::check_reply(redis::eval(conn_, ack_script_, {keys.grants, keys.reasons}, a), "ack");
  if (remove) {
    // The ack trims only what the group delivered; entries never delivered leave here.
    redis::Args del{"XDEL"};
    del.add(keys.grants);
    for (const std::string& id : ids) del.add(id);
    conn_.command_checked(del, "XDEL");
  }
}

void GrantLog::note_reason(const redis::CampaignKeys& keys, const std::string& entry_id, const std::string& reason) {
  conn_.command_checked(redis::Args{"HSET"}.add(keys.reasons).add(entry_id).add(clip(reason, kReasonBytesMax)),
                        "HSET reason");
}

int64_t GrantLog::dead_letter(const StreamBatch& sb, const LogEntry& e, const std::string& reason,
                              const std::vector<std::pair<std::size_t, std::string>>* refused) {
  redis::Args a;
  a.add(redis::kWriterGroup).add(e.id).add(e.deliveries);
  int64_t records = 0;
  if (refused == nullptr) {
    std::vector<std::pair<std::string, std::string>> fields;
    for (const auto& [k, v] : e.fields) {
      if (fields.size() == kDeadLetterFieldsMax) break;
      const bool per_line = k == "g" || k == "p" || k == "b";  // a line's part is not to be clipped off
      fields.emplace_back(clip(k, 64), clip(v, per_line ? kDeadLetterLinesBytesMax : kDeadLetterValueBytesMax));
    }
    a.add(int64_t{1}).add(clip(reason, kReasonBytesMax)).add(static_cast<int64_t>(fields.size()));
    for (const auto& [k, v] : fields) a.add(k).add(v);
    records = 1;
  } else {
    // A re-driven entry's "rd" (times re-driven, docs/dead-letters.md) goes on with its grants.
    std::string redrives;
    for (const auto& [k, v] : e.fields) {
      if (k == "rd") redrives = clip(v, 20);
    }
    a.add(static_cast<int64_t>(refused->size()));
    for (const auto& [gi, why] : *refused) {
      const Grant& g = sb.grants[gi];
      a.add(clip(why, kReasonBytesMax)).add(int64_t{6 + !redrives.empty() + !g.traceparent.empty()});
      a.add("c").add(g.campaign_id).add("s").add(int64_t{g.seq}).add("u").add(g.user_id);
      a.add("o").add(int64_t{g.user_ordinal}).add("r").add(g.request_id).add("t").add(g.issued_at_us);
      if (!redrives.empty()) a.add("rd").add(redrives);
      if (!g.traceparent.empty()) a.add("p").add(g.traceparent);  // its trace context, for a re-drive
    }
    records = static_cast<int64_t>(refused->size());
  }
  redis::Reply r = redis::eval(conn_, dead_letter_script_, {sb.keys.grants, sb.keys.dead_letters, sb.keys.reasons}, a);
  if (r.is_error()) redis::throw_reply_error(r.str(), "dead letter");
  if (r.integer() != 1) return 0;
  log(LogLevel::kWarning, "log", "grant-log entry " + e.id + " of campaign " + std::to_string(sb.keys.campaign_id) + ": " +
                                     std::to_string(records) + " record(s) moved to the dead-letter stream after " +
                                     std::to_string(e.deliveries) + " deliveries: " + clip(reason, kReasonBytesMax));
  return records;
}

std::size_t GrantLog::prepare(std::vector<StreamBatch>& batch, bool dead_letter_malformed) {
  std::size_t dead = 0;
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
        if (dead_letter_malformed && dead_letter(sb, e, why) > 0) ++dead;
        continue;
      }
      sb.grant_entry.resize(sb.grants.size(), keep.size());
      keep.push_back(std::move(e));
    }
    sb.entries = std::move(keep);
    ack(sb.keys, clear, false);
  }
  batch.erase(std::remove_if(batch.begin(), batch.end(), [](const StreamBatch& sb) { return sb.entries.empty(); }),
              batch.end());
  return dead;
}

CommitOutcome commit_entries(pg::Conn& pg, GrantLog& log, std::vector<StreamBatch>& batch, const CommitPolicy& policy) {
  CommitOutcome out;
  std::vector<Grant> grants;
  std::vector<std::pair<std::size_t, std::size_t>> where;  // grant index -> (stream, its index there)
  for (std::size_t s = 0; s < batch.size(); ++s) {
    CC_ASSERT(batch[s].grant_entry.size() == batch[s].grants.size(), "a stream batch was not prepared");
    out.entries += batch[s].entries.size();
    for (std::size_t i = 0; i < batch[s].grants.size(); ++i) {
      grants.push_back(batch[s].grants[i]);
      where.emplace_back(s, i);
    }
  }
  if (grants.empty()) return out;
  // 1. One transaction for the whole batch; a failure of the database throws, nothing settled.
  pgstore::WriteOutcome w = pgstore::write_grants(pg, grants, policy.events);
  out.inserted = w.inserted;
  out.already_present = w.already_present;
  out.refused = static_cast<int64_t>(w.failed.size());
  CC_ASSERT(w.inserted + w.already_present + static_cast<int64_t>(w.failed.size()) == static_cast<int64_t>(grants.size()),
            "the store accounted for " + std::to_string(w.inserted + w.already_present + w.failed.size()) + " of " +
                std::to_string(grants.size()) + " grants");
  // 2. Entries with a refused grant: dead letters on the policy's delivery, else pending.
  std::vector<std::vector<std::vector<std::pair<std::size_t, std::string>>>> refused(batch.size());
  for (std::size_t s = 0; s < batch.size(); ++s) refused[s].resize(batch[s].entries.size());
  for (const auto& [gi, reason] : w.failed) {
    CC_ASSERT(gi < where.size(), "the store refused a grant that was not in the batch");
    const auto [s, i] = where[gi];
    refused[s][batch[s].grant_entry[i]].emplace_back(i, reason);
  }
  for (std::size_t s = 0; s < batch.size(); ++s) {
    std::vector<std::string> done;
    for (std::size_t ei = 0; ei < batch[s].entries.size(); ++ei) {
      const auto& why = refused[s][ei];
      const LogEntry& e = batch[s].entries[ei];
      if (why.empty()) {
        done.push_back(e.id);
        continue;
      }
      const std::string reason =
          why.size() == 1 ? why[0].second : std::to_string(why.size()) + " grants refused; the first: " + why[0].second;
      if (policy.dead_letter_after_deliveries > 0 && e.deliveries >= policy.dead_letter_after_deliveries) {
        const int64_t records = log.dead_letter(batch[s], e, reason, &why);
        out.dead_letter_records += records;
        // 0 records: another writer settled it meanwhile; it is not ours to count as pending.
        (records > 0 ? out.dead_lettered : out.acked)++;
      } else {
        log.note_reason(batch[s].keys, e.id, reason);
        out.pending++;
      }
    }
    // 3. Acknowledge (and trim) the entries whose grants are all in the store now.
    log.ack(batch[s].keys, done, policy.remove_acked);
    out.acked += done.size();
  }
  CC_ASSERT(out.entries == out.acked + out.pending + out.dead_lettered,
            "entries in " + std::to_string(out.entries) + " != acked " + std::to_string(out.acked) + " + pending " +
                std::to_string(out.pending) + " + dead " + std::to_string(out.dead_lettered));
  return out;
}

}  // namespace couponcore::grantlog
