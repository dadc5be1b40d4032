// Domain events (docs/events.md): the ten types, one outbox / log row, and the CloudEvents 1.0
// JSON built from it. The stores write rows (store/postgres/pg_events.cpp: the outbox
// `event_outbox`; store/sqlite/sqlite_events.cpp: the log `events`) in the transaction of the
// change; the relay (events/relay.hpp) and the embedded reader turn a row into its JSON here,
// so both deployments publish the same attributes. (`data` is the store's JSON text: the same
// keys and values; PostgreSQL's json_build_object spaces it, SQLite's json_object does not.)
#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "couponcore/events.hpp"
#include "couponcore/types.hpp"

namespace couponcore::events {

inline constexpr std::array<std::string_view, 10> kTypes = {
    "coupon.issued",  "coupon.used",  "coupon.use_cancelled", "coupon.expired",   "campaign.sold_out",
    "points.earned",  "points.used",  "points.cancelled",     "points.expired",   "points.transferred"};
inline constexpr int kSchemaVersion = 1;  // of every type, for now

bool known_type(std::string_view type);
// The types of a consumer: all ten when `types` is empty; InvalidArgument for an unknown name;
// duplicates removed, catalogue order.
std::vector<std::string> check_types(const std::vector<std::string>& types);
// A consumer group or consumer name: 1..64 bytes of [A-Za-z0-9_.:-]; InvalidArgument otherwise.
void check_name(std::string_view what, std::string_view name);

// One event as the stores keep it (the parts of the CloudEvent).
struct Row {
  int64_t seq = 0;           // increasing: the outbox's / log's number
  std::string id;            // stable, from the business key: "<type>:<key>"
  std::string type;
  std::string subject;
  int64_t partner_id = 0;
  int64_t time_us = 0;
  std::string traceparent;   // "" = none
  std::string data;          // a JSON object
};

// The rows of coupon.issued and campaign.sold_out for one grant, built here for the stores' bulk
// paths (PostgreSQL's COPY, SQLite's group commit). The data objects are formatted exactly as
// PostgreSQL's json_build_object(...)::text formats those of events/event_sql.hpp (the
// writer's set-based fallback), so a grant's event has the same bytes whichever path wrote it.
// seq is 0 (the store assigns it). Appends one row, or two when g.seq == quantity (SQLite: one
// committer, so the grant of seq == quantity is the campaign's last written; quantity 0: never,
// PostgreSQL's writer writes campaign.sold_out from its count of written grants).
void append_issued_rows(const Grant& g, int64_t partner_id, int64_t quantity, std::optional<int64_t> valid_until_us,
                        std::vector<Row>& out);

// The CloudEvents 1.0 JSON of a row (attributes, extensions sequence / partnerid / traceparent,
// data embedded as is).
std::string cloudevent_json(const Row& row);
// RFC 3339, UTC, microseconds: 2026-12-06T07:43:07.123456Z
std::string rfc3339_us(int64_t time_us);
void append_json_string(std::string& out, std::string_view s);

// A reader reads each type's stream up to `batch` events. For one subject's events of several
// types to come out in sequence order across reads, what a read returns is cut at the lowest
// last sequence of the types whose read was full (they may hold lower sequences not read yet);
// the events above it wait in `held` (already delivered to this consumer) for the next read.
// `fresh`: this read's events; `full_last`: the last sequence of each full read.
std::vector<EventMessage> release_in_order(std::vector<EventMessage> fresh, const std::vector<int64_t>& full_last,
                                           std::vector<EventMessage>& held);

// Redis keys (one hash tag per type, so each stream lives on one cluster slot).
std::string stream_key(std::string_view prefix, std::string_view type);        // <prefix>events:{<type>}
std::string dead_letter_key(std::string_view prefix, std::string_view group);  // <prefix>events:dl:{<group>}
// The relay's watermark: every event with a lower or equal sequence is in its stream (each batch's
// XADDs were acknowledged before it was raised). <prefix>events:relayed, a decimal string.
std::string relayed_key(std::string_view prefix);

}  // namespace couponcore::events
