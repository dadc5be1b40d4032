// Dead letters as records: see dead_letters.hpp.
#include "log/dead_letters.hpp"

#include <hiredis/hiredis.h>

#include "couponcore/error.hpp"
#include "gate/lua_scripts.hpp"
#include "log/lua_scripts.hpp"
#include "util/traceparent.hpp"

namespace couponcore::grantlog {

DeadLetter dead_letter_from(int64_t campaign_id, const LogEntry& record) {
  DeadLetter d;
  d.campaign_id = campaign_id;
  d.id = record.id;
  redis::StreamId sid;
  if (redis::parse_stream_id(record.id, &sid)) d.dead_lettered_at_us = static_cast<int64_t>(sid.first) * 1000;
  LogEntry entry;  // the grant-log entry's own fields
  entry.id = record.id;
  for (const auto& [k, v] : record.fields) {
    int64_t n = 0;
    if (k == "id") {
      d.entry_id = v;
    } else if (k == "reason") {
      d.reason = v;
    } else if (k == "deliveries") {
      if (parse_i64(v, &n)) d.deliveries = n;
    } else {
      if (k == "rd" && parse_i64(v, &n) && n >= 0) d.redrives = n;
      if (k != "rd") d.fields.emplace_back(k, v);
      entry.fields.emplace_back(k, v);
    }
  }
  std::vector<Grant> grants;
  if (parse_grants(entry, campaign_id, &grants).empty() && grants.size() == 1) {
    const Grant& g = grants[0];
    d.seq = g.seq;
    d.user_ordinal = g.user_ordinal;
    d.user_id = g.user_id;
    if (!g.request_id.empty()) d.request_id = g.request_id;
  }
  return d;
}

std::vector<DeadLetter> read_dead_letters(redis::RedisConn& conn, const redis::CampaignKeys& keys,
                                          const std::string& after, std::size_t count) {
  redis::Reply r = conn.command_checked(redis::Args{"XRANGE"}
                                            .add(keys.dead_letters)
                                            .add(after.empty() ? std::string("-") : "(" + after)
                                            .add("+")
                                            .add("COUNT")
                                            .add(static_cast<int64_t>(count)),
                                        "XRANGE");
  std::vector<DeadLetter> out;
  for (const LogEntry& e : parse_entries(r.raw())) out.push_back(dead_letter_from(keys.campaign_id, e));
  return out;
}

std::optional<DeadLetter> find_dead_letter(redis::RedisConn& conn, const redis::CampaignKeys& keys,
                                           const std::string& id) {
  redis::Reply r =
      conn.command_checked(redis::Args{"XRANGE"}.add(keys.dead_letters).add(id).add(id), "XRANGE");
  std::vector<LogEntry> e = parse_entries(r.raw());
  if (e.empty() || e[0].id != id) return std::nullopt;
  return dead_letter_from(keys.campaign_id, e[0]);
}

std::vector<std::pair<std::string, std::string>> redrive_entry_fields(const DeadLetter& d) {
  std::vector<std::pair<std::string, std::string>> f;
  std::string issued_at, traceparent;
  for (const auto& [k, v] : d.fields) {
    if (k == "t") issued_at = v;
    if (k == "p") traceparent = trace::normalize_traceparent(v);
  }
  if (d.seq && d.user_id && d.user_ordinal) {
    // Version 2 when the grant had trace context (p: its traceparent, as text), else version 1.
    f.emplace_back("v", traceparent.empty() ? "1" : "2");
    f.emplace_back("c", std::to_string(d.campaign_id));
    f.emplace_back("t", issued_at);
    f.emplace_back("g", std::to_string(*d.seq) + " " + std::to_string(*d.user_ordinal) + " " + *d.user_id + " " +
                            d.request_id.value_or(""));
    if (!traceparent.empty()) f.emplace_back("p", traceparent);
  } else {
    f = d.fields;  // a newer writer may read what this one could not
  }
  f.emplace_back("rd", std::to_string(d.redrives + 1));
  return f;
}

MoveOutcome redrive(redis::RedisConn& conn, const redis::CampaignKeys& keys, const DeadLetter& d,
                    std::string* entry_id) {
  static thread_local redis::Script script(lua::kRedrive);
  redis::Args a;
  a.add(d.id);
  for (const auto& [k, v] : redrive_entry_fields(d)) a.add(k).add(v);
  redis::Reply r = redis::eval(conn, script, {keys.grants, keys.dead_letters, keys.meta}, a);
  if (r.is_error() && r.str().substr(0, 10) == "NOCAMPAIGN") return MoveOutcome::kNoMirror;
  redis::check_reply(r, "redrive");
  if (r.is_integer()) return MoveOutcome::kGone;
  *entry_id = std::string(r.str());
  return MoveOutcome::kDone;
}

MoveOutcome drop(redis::RedisConn& conn, const redis::CampaignKeys& keys, const DeadLetter& d, DropCorrection* c,
                 bool shard) {
  static thread_local redis::Script script(gate::lua::kDrop);
  redis::Args a;
  a.add(d.id);
  a.add(c->free_seq && d.seq ? std::to_string(*d.seq) : std::string());
  a.add(c->lower_holder && d.user_id ? *d.user_id : std::string());
  a.add(d.user_ordinal.value_or(0));
  if (shard) a.add("shard");  // the seq goes back to the shard's free intervals (meta f)
  redis::Reply r =
      redis::eval(conn, script, {keys.dead_letters, keys.meta, keys.holders, shard ? keys.meta : keys.free_seqs}, a);
  if (r.is_error() && r.str().substr(0, 10) == "NOCAMPAIGN") return MoveOutcome::kNoMirror;
  redis::check_reply(r, "drop dead letter");
  long long dropped = 0, freed = 0, lowered = 0;
  if (r.size() != 3 || !redis::reply_int(r.at(0), &dropped) || !redis::reply_int(r.at(1), &freed) ||
      !redis::reply_int(r.at(2), &lowered)) {
    throw Error(ErrorCode::kUnavailable, "redis: unexpected reply to the dead-letter drop");
  }
  if (dropped == 0) return MoveOutcome::kGone;
  c->seq_freed = freed == 1;
  c->holder_lowered = lowered == 1;
  return MoveOutcome::kDone;
}

}  // namespace couponcore::grantlog
