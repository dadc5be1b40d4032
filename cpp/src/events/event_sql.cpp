// The events' SQL for both stores: see event_sql.hpp.
#include "events/event_sql.hpp"

#include "couponcore/error.hpp"

namespace couponcore::events {

namespace {

std::string table(Dialect d) { return d == Dialect::kPostgres ? "event_outbox" : "events"; }

// A JSON object of the given "'key', expr, ..." pairs, as text.
std::string json(Dialect d, std::string_view pairs) {
  if (d == Dialect::kPostgres) return "json_build_object(" + std::string(pairs) + ")::text";
  return "json_object(" + std::string(pairs) + ")";
}

std::string insert_head(Dialect d) {
  return "INSERT INTO " + table(d) + " (event_id, type, subject, partner_id, time_us, traceparent, data) ";
}

// SQLite's log keeps event ids unique (it is the log, read by id too): a statement that runs
// twice writes one event. PostgreSQL's outbox is transient and has no index on the id: only
// rows a statement really changed make events there.
std::string on_conflict(Dialect d) { return d == Dialect::kSqlite ? " ON CONFLICT (event_id) DO NOTHING" : ""; }

}  // namespace

std::string coupon_events_sql(Dialect d, std::initializer_list<std::string_view> types, std::string_view source) {
  std::string parts;
  int ordinal = 0;
  for (std::string_view type : types) {
    std::string id, data, where;
    if (type == "coupon.used") {
      id = "'coupon.used:' || r.id || ':' || r.used_order_id";
      data = json(d,
                  "'coupon_id', r.id, 'campaign_id', r.campaign_id, 'user_id', r.user_id, 'order_id', r.used_order_id,"
                  " 'order_amount', r.used_amount, 'discount_amount', r.discount_amount, 'used_at_us', r.used_at_us");
      where = "r.state = 1";
    } else if (type == "coupon.use_cancelled") {
      id = "'coupon.use_cancelled:' || r.id || ':' || r.cancelled_order_id";
      data = json(d,
                  "'coupon_id', r.id, 'campaign_id', r.campaign_id, 'user_id', r.user_id,"
                  " 'order_id', r.cancelled_order_id, 'state', CASE r.state WHEN 2 THEN 'expired' ELSE 'issued' END,"
                  " 'cancelled_at_us', r.state_changed_at_us");
      where = "r.state IN (0, 2)";
    } else if (type == "coupon.expired") {
      id = "'coupon.expired:' || r.id";
      data = json(d,
                  "'coupon_id', r.id, 'campaign_id', r.campaign_id, 'user_id', r.user_id,"
                  " 'valid_until_us', r.valid_until_us, 'expired_at_us', r.state_changed_at_us");
      where = "r.state = 2";
    } else {
      throw Error(ErrorCode::kInternal, "no coupon event " + std::string(type));
    }
    if (!parts.empty()) parts += " UNION ALL ";
    parts += "SELECT r.id AS c, " + std::to_string(ordinal++) + " AS o, " + id + " AS event_id, '" + std::string(type) +
             "' AS type, 'coupon/' || r.id AS subject, k.partner_id AS partner_id, r.state_changed_at_us AS time_us,"
             " r.tp AS tp, " + data + " AS data FROM " + std::string(source) +
             " JOIN campaigns k ON k.id = r.campaign_id WHERE " + where;
  }
  return insert_head(d) + "SELECT e.event_id, e.type, e.subject, e.partner_id, e.time_us, e.tp, e.data FROM (" + parts +
         ") e WHERE true ORDER BY e.c, e.o" + on_conflict(d);
}

std::string issued_events_sql(Dialect d, std::string_view source) {
  return insert_head(d) +
         "SELECT 'coupon.issued:' || r.campaign_id || ':' || r.seq, 'coupon.issued', 'coupon/' || r.id, k.partner_id,"
         " r.issued_at_us, r.tp, " +
         json(d,
              "'coupon_id', r.id, 'campaign_id', r.campaign_id, 'seq', r.seq, 'user_id', r.user_id,"
              " 'user_ordinal', r.user_ordinal, 'request_id', r.request_id, 'issued_at_us', r.issued_at_us,"
              " 'valid_until_us', r.valid_until_us") +
         " FROM " + std::string(source) +
         " JOIN campaigns k ON k.id = r.campaign_id WHERE true ORDER BY r.campaign_id, r.seq" + on_conflict(d);
}

std::string sold_out_events_sql(Dialect d, std::string_view source) {
  return insert_head(d) +
         "SELECT 'campaign.sold_out:' || k.id || ':' || k.quantity, 'campaign.sold_out', 'campaign/' || k.id,"
         " k.partner_id, r.issued_at_us, r.tp, " +
         json(d,
              "'campaign_id', k.id, 'quantity', k.quantity, 'last_coupon_id', r.id, 'last_user_id', r.user_id,"
              " 'sold_out_at_us', r.issued_at_us") +
         " FROM " + std::string(source) + " JOIN campaigns k ON k.id = r.campaign_id WHERE true ORDER BY k.id" +
         on_conflict(d);
}

std::string points_events_sql(Dialect d, std::string_view source) {
  // A transfer's destination: the transfer_in entry its transfer_out refers to.
  const std::string to_user =
      "(SELECT w2.user_id FROM wallet_entries e2 JOIN wallets w2 ON w2.id = e2.wallet_id WHERE e2.id = e.ref_entry_id)";
  const std::string type =
      "CASE e.kind WHEN 'earn' THEN 'points.earned' WHEN 'use' THEN 'points.used' WHEN 'cancel' THEN"
      " 'points.cancelled' WHEN 'expire' THEN 'points.expired' ELSE 'points.transferred' END";
  return insert_head(d) + "SELECT " + type + " || ':' || e.id, " + type +
         ", 'wallet/' || w.partner_id || '/' || w.user_id, w.partner_id, e.created_at_us, t.tp, " +
         json(d,
              "'entry_id', e.id, 'user_id', w.user_id, 'amount', abs(e.amount), 'balance_after', e.balance_after,"
              " 'idempotency_key', e.idempotency_key, 'order_id', e.order_id, 'reason', e.reason,"
              " 'ref_entry_id', e.ref_entry_id, 'to_user_id', CASE e.kind WHEN 'transfer_out' THEN " +
                  to_user + " END") +
         " FROM " + std::string(source) + " JOIN wallet_entries e ON e.id = t.id JOIN wallets w ON w.id = e.wallet_id" +
         " WHERE e.kind IN ('earn', 'use', 'cancel', 'expire', 'transfer_out') ORDER BY e.id" + on_conflict(d);
}

}  // namespace couponcore::events
