// Event types, names and the CloudEvent JSON: see event.hpp.
#include "events/event.hpp"

#include <algorithm>
#include <climits>
#include <cstdint>
#include <ctime>

#include "couponcore/engine.hpp"
#include "couponcore/error.hpp"

namespace couponcore::events {

bool known_type(std::string_view type) {
  return std::find(kTypes.begin(), kTypes.end(), type) != kTypes.end();
}

std::vector<std::string> check_types(const std::vector<std::string>& types) {
  std::vector<std::string> out;
  for (const std::string& t : types) {
    if (!known_type(t)) throw Error(ErrorCode::kInvalidArgument, "unknown event type: '" + t + "'");
  }
  for (std::string_view t : kTypes) {
    if (types.empty() || std::find(types.begin(), types.end(), t) != types.end()) out.emplace_back(t);
  }
  return out;
}

void check_name(std::string_view what, std::string_view name) {
  const bool ok = !name.empty() && name.size() <= 64 && std::all_of(name.begin(), name.end(), [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' || c == '.' ||
           c == ':' || c == '-';
  });
  if (!ok) throw Error(ErrorCode::kInvalidArgument, std::string(what) + " must be 1..64 characters of [A-Za-z0-9_.:-]");
}

void append_json_string(std::string& out, std::string_view s) {
  static const char* hex = "0123456789abcdef";
  out.push_back('"');
  for (char ch : s) {
    const auto c = static_cast<unsigned char>(ch);
    switch (c) {
      case '"': out.append("\\\""); break;
      case '\\': out.append("\\\\"); break;
      case '\n': out.append("\\n"); break;
      case '\r': out.append("\\r"); break;
      case '\t': out.append("\\t"); break;
      default:
        if (c < 0x20) {
          out.append("\\u00");
          out.push_back(hex[c >> 4]);
          out.push_back(hex[c & 15]);
        } else {
          out.push_back(ch);
        }
    }
  }
  out.push_back('"');
}

namespace {

// json_build_object's text format: {"k" : v, "k2" : v2}
class JsonObject {
 public:
  JsonObject& num(std::string_view k, int64_t v) { return key(k).append(std::to_string(v)); }
  JsonObject& num(std::string_view k, std::optional<int64_t> v) { return v ? num(k, *v) : key(k).append("null"); }
  JsonObject& str(std::string_view k, std::string_view v) {
    key(k);
    append_json_string(s_, v);
    return *this;
  }
  JsonObject& opt_str(std::string_view k, std::string_view v) { return v.empty() ? key(k).append("null") : str(k, v); }
  std::string done() { return s_.append("}"); }

 private:
  JsonObject& key(std::string_view k) {
    s_.append(s_.size() > 1 ? ", " : "");
    append_json_string(s_, k);
    s_.append(" : ");
    return *this;
  }
  JsonObject& append(const std::string& v) {
    s_.append(v);
    return *this;
  }
  std::string s_ = "{";
};

}  // namespace

void append_issued_rows(const Grant& g, int64_t partner_id, int64_t quantity, std::optional<int64_t> valid_until_us,
                        std::vector<Row>& out) {
  const int64_t coupon = make_coupon_id(g.campaign_id, g.seq);
  const std::string cid = std::to_string(g.campaign_id);
  Row r;
  r.id = "coupon.issued:" + cid + ":" + std::to_string(g.seq);
  r.type = "coupon.issued";
  r.subject = "coupon/" + std::to_string(coupon);
  r.partner_id = partner_id;
  r.time_us = g.issued_at_us;
  r.traceparent = g.traceparent;
  r.data = JsonObject()
               .num("coupon_id", coupon)
               .num("campaign_id", g.campaign_id)
               .num("seq", int64_t{g.seq})
               .str("user_id", g.user_id)
               .num("user_ordinal", int64_t{g.user_ordinal})
               .opt_str("request_id", g.request_id)
               .num("issued_at_us", g.issued_at_us)
               .num("valid_until_us", valid_until_us)
               .done();
  out.push_back(std::move(r));
  if (static_cast<int64_t>(g.seq) != quantity) return;
  Row s;
  s.id = "campaign.sold_out:" + cid + ":" + std::to_string(quantity);
  s.type = "campaign.sold_out";
  s.subject = "campaign/" + cid;
  s.partner_id = partner_id;
  s.time_us = g.issued_at_us;
  s.traceparent = g.traceparent;
  s.data = JsonObject()
               .num("campaign_id", g.campaign_id)
               .num("quantity", quantity)
               .num("last_coupon_id", coupon)
               .str("last_user_id", g.user_id)
               .num("sold_out_at_us", g.issued_at_us)
               .done();
  out.push_back(std::move(s));
}

std::string rfc3339_us(int64_t time_us) {
  int64_t secs = time_us / 1'000'000, micros = time_us % 1'000'000;
  if (micros < 0) {
    micros += 1'000'000;
    secs -= 1;
  }
  const std::time_t t = static_cast<std::time_t>(secs);
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[40];
  std::snprintf(buf, sizeof buf, "%04d-%02d-%02dT%02d:%02d:%02d.%06lldZ", tm.tm_year + 1900, tm.tm_mon + 1,
                tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, static_cast<long long>(micros));
  return buf;
}

std::string cloudevent_json(const Row& row) {
  std::string out;
  out.reserve(320 + row.data.size());
  const std::string partner = std::to_string(row.partner_id);
  auto field = [&out](std::string_view name, std::string_view value) {
    out.push_back(',');
    append_json_string(out, name);
    out.push_back(':');
    append_json_string(out, value);
  };
  out.append("{\"specversion\":\"1.0\"");
  field("id", row.id);
  field("source", "couponcore/partner/" + partner);
  field("type", row.type);
  field("subject", row.subject);
  field("time", rfc3339_us(row.time_us));
  field("datacontenttype", "application/json");
  field("dataschema", "urn:couponcore:event:" + row.type + ":v" + std::to_string(kSchemaVersion));
  field("sequence", std::to_string(row.seq));
  field("partnerid", partner);
  if (!row.traceparent.empty()) field("traceparent", row.traceparent);
  out.append(",\"data\":");
  out.append(row.data.empty() ? std::string_view("{}") : std::string_view(row.data));
  out.push_back('}');
  return out;
}

std::vector<EventMessage> release_in_order(std::vector<EventMessage> fresh, const std::vector<int64_t>& full_last,
                                           std::vector<EventMessage>& held) {
  const int64_t cutoff = full_last.empty() ? INT64_MAX : *std::min_element(full_last.begin(), full_last.end());
  for (EventMessage& m : held) fresh.push_back(std::move(m));
  held.clear();
  std::stable_sort(fresh.begin(), fresh.end(),
                   [](const EventMessage& a, const EventMessage& b) { return a.sequence < b.sequence; });
  auto split = std::find_if(fresh.begin(), fresh.end(), [cutoff](const EventMessage& m) { return m.sequence > cutoff; });
  held.assign(std::make_move_iterator(split), std::make_move_iterator(fresh.end()));
  fresh.erase(split, fresh.end());
  return fresh;
}

std::string stream_key(std::string_view prefix, std::string_view type) {
  std::string k(prefix);
  k.append("events:{").append(type).append("}");
  return k;
}

std::string relayed_key(std::string_view prefix) { return std::string(prefix) + "events:relayed"; }

std::string dead_letter_key(std::string_view prefix, std::string_view group) {
  std::string k(prefix);
  k.append("events:dl:{").append(group).append("}");
  return k;
}

}  // namespace couponcore::events

namespace couponcore {

void check_event_options(const EventOptions& o) {
  auto range = [](const char* name, int64_t v, int64_t lo, int64_t hi) {
    if (v < lo || v > hi) {
      throw Error(ErrorCode::kInvalidArgument, std::string(name) + " must be " + std::to_string(lo) + ".." +
                                                   std::to_string(hi) + ", got " + std::to_string(v));
    }
  };
  range("events_relay_poll_ms", o.relay_poll_ms, 1, 1000);
  range("events_relay_batch_max", static_cast<int64_t>(o.relay_batch_max), 1, 10'000);
  range("events_stream_maxlen", o.stream_maxlen, 1000, 1'000'000'000);
  range("events_relay_stop_after_xadd_batches", o.relay_stop_after_xadd_batches, 0, 1'000'000);
}

}  // namespace couponcore
