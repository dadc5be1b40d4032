// The SQL that writes domain events, one definition for both stores (PostgreSQL's outbox
// `event_outbox`, SQLite's log `events`; same columns). Each function returns an
// INSERT ... SELECT over a caller's FROM item, so the event is written by the statement (or in
// the transaction) of the change it reports, after the change:
//
//   coupon_events_sql   over `r`: coupon rows (the coupons table's columns, e.g. an UPDATE's
//                       RETURNING *) plus a column `tp` (traceparent or NULL)
//   issued_events_sql   over `r`: inserted coupon rows plus `tp`: coupon.issued per row
//   sold_out_events_sql over `r(campaign_id, id, user_id, issued_at_us, tp)`: one row per campaign
//                       whose quantity was just completed (its last coupon): campaign.sold_out
//   points_events_sql   over `t(id, tp)`: wallet entry ids; one event per earn / use / cancel /
//                       expire / transfer_out entry (a transfer's transfer_in half has none)
//
// Rows are inserted in the order of the source (ORDER BY). Every source is rows the statement
// (or transaction) really changed, so each change makes one event; SQLite also skips an event
// id already in its log (ON CONFLICT DO NOTHING).
#pragma once

#include <initializer_list>
#include <string>
#include <string_view>

namespace couponcore::events {

enum class Dialect { kPostgres, kSqlite };

// Of "coupon.used", "coupon.use_cancelled", "coupon.expired": each written for the rows in the
// state it reports (a use cancelled after the coupon's validity passed leaves it expired: both
// coupon.use_cancelled and coupon.expired), by coupon, in the order given.
std::string coupon_events_sql(Dialect d, std::initializer_list<std::string_view> types, std::string_view source);
std::string issued_events_sql(Dialect d, std::string_view source);
std::string sold_out_events_sql(Dialect d, std::string_view source);
std::string points_events_sql(Dialect d, std::string_view source);

}  // namespace couponcore::events
