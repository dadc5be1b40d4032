// The grant entry parser: see grant_entry.hpp for the format.
#include "log/grant_entry.hpp"

#include <hiredis/hiredis.h>

#include <charconv>
#include <string_view>
#include <utility>

#include "couponcore/limits.hpp"
#include "redis/redis.hpp"
#include "util/traceparent.hpp"

namespace couponcore::grantlog {

bool parse_i64(std::string_view s, int64_t* v) {
  if (s.empty()) return false;
  auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), *v);
  return ec == std::errc() && end == s.data() + s.size();
}

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

// One grant's fields, checked; "" or why they are malformed. traceparent: checked already ("": none).
std::string grant_from(int64_t campaign_id, std::string_view seq, std::string_view user, std::string_view ordinal,
                       std::string_view request_id, int64_t issued_at_us, Grant* g, std::string traceparent = {}) {
  int64_t n = 0;
  *g = Grant{};
  g->campaign_id = campaign_id;
  if (!parse_i64(seq, &n) || n < 1 || n > limits::kQuantityMax) return "malformed: s is not a seq in 1..quantity max";
  g->seq = static_cast<uint32_t>(n);
  if (!limits::is_valid_id(user, limits::kUserIdBytesMax)) return "malformed: u is not a valid user id";
  g->user_id = std::string(user);
  if (!parse_i64(ordinal, &n) || n < 1 || n > limits::kPerUserLimitMax) return "malformed: o is not a user ordinal";
  g->user_ordinal = static_cast<uint32_t>(n);
  if (!request_id.empty() && !limits::is_valid_id(request_id, limits::kRequestIdBytesMax)) {
    return "malformed: r is not a request id";
  }
  g->request_id = std::string(request_id);
  g->issued_at_us = issued_at_us;
  g->traceparent = std::move(traceparent);
  return "";
}

// The traceparent of line i of a batch entry: its 55 characters of p (version 2; spaces: none)
// or its 25 bytes of b (version 3; zeros: none), checked; "" when there is none or p / b is too short.
std::string line_traceparent(int64_t version, std::string_view p, std::string_view b, std::size_t i) {
  if (version == 2 && (i + 1) * trace::kTraceparentBytes <= p.size() && p[i * trace::kTraceparentBytes] != ' ') {
    return trace::normalize_traceparent(p.substr(i * trace::kTraceparentBytes, trace::kTraceparentBytes));
  }
  if (version >= 3 && (i + 1) * trace::kTraceparentBinaryBytes <= b.size()) {
    return trace::from_binary(b.substr(i * trace::kTraceparentBinaryBytes, trace::kTraceparentBinaryBytes));
  }
  return {};
}

}  // namespace

std::string parse_grants(const LogEntry& entry, int64_t campaign_id, std::vector<Grant>* out) {
  if (entry.deleted) return "malformed: the entry was deleted";
  std::string_view c, s, u, o, r, t, g, ver, p, bin;
  bool have_v = false, have_c = false, have_s = false, have_u = false, have_o = false, have_t = false, have_g = false;
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
    } else if (k == "v") {
      ver = v, have_v = true;
    } else if (k == "p") {
      p = v;
    } else if (k == "b") {
      bin = v;
    }
  }
  int64_t n = 0;
  if (have_v && (!parse_i64(ver, &n) || n < 1 || n > kEntryVersion)) {
    return "malformed: entry format version " + std::string(ver) + " is unknown to this reader (it knows 1.." +
           std::to_string(kEntryVersion) + "): upgrade the writer";
  }
  if (have_v && !have_g) return "malformed: a version " + std::string(ver) + " entry has no g";
  const int64_t version = have_v ? n : 0;
  if (!have_c || !parse_i64(c, &n) || n != campaign_id) return "malformed: c is not this stream's campaign id";
  int64_t issued_at = 0;
  if (!have_t || !parse_i64(t, &issued_at) || issued_at < 0) return "malformed: t is not a time in microseconds";
  if (!have_g) {  // one grant: c s u o r t, and p (a dead letter's record: grant_log.cpp)
    if (!(have_s && have_u && have_o)) return "malformed: a field of c s u o t is missing";
    Grant one;
    std::string why = grant_from(campaign_id, s, u, o, r, issued_at, &one, trace::normalize_traceparent(p));
    if (why.empty()) out->push_back(std::move(one));
    return why;
  }
  // A batch: c t g, g = lines "<seq> <user_ordinal> <user_id> <request_id>"; version 2 adds p,
  // version 3 b.
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
    std::string traceparent = line_traceparent(version, p, bin, grants.size());
    std::string why = grant_from(campaign_id, line.substr(0, a), line.substr(b + 1, d - b - 1), line.substr(a + 1, b - a - 1),
                                 line.substr(d + 1), issued_at, &one, std::move(traceparent));
    if (!why.empty()) return why;
    grants.push_back(std::move(one));
    pos = end + 1;
  }
  for (Grant& one : grants) out->push_back(std::move(one));
  return "";
}

}  // namespace couponcore::grantlog
