// The invariant checks behind WalletEngine::audit(), one query per WalletAudit field. The same
// text runs on PostgreSQL and SQLite: $1 is the partner filter (negative: all partners); SQLite
// binds "$1" as parameter 1. Each query counts violations, so a healthy store answers 0s.
#pragma once

#include <cstdint>

#include "couponcore/wallet.hpp"

namespace couponcore::wallet {

#define CC_WALLET_FILTER "(CAST($1 AS bigint) < 0 OR w.partner_id = CAST($1 AS bigint))"

struct AuditQuery {
  const char* field;
  const char* sql;
};

inline constexpr AuditQuery kAuditQueries[] = {
    {"wallets", "SELECT count(*) FROM wallets w WHERE " CC_WALLET_FILTER},
    {"balance_not_lot_sum",
     "SELECT count(*) FROM wallets w"
     " LEFT JOIN (SELECT wallet_id, sum(remaining) AS s FROM wallet_lots GROUP BY wallet_id) l"
     " ON l.wallet_id = w.id WHERE " CC_WALLET_FILTER " AND w.balance <> coalesce(l.s, 0)"},
    {"negative",
     "SELECT (SELECT count(*) FROM wallets w WHERE " CC_WALLET_FILTER " AND w.balance < 0)"
     " + (SELECT count(*) FROM wallet_lots l JOIN wallets w ON w.id = l.wallet_id WHERE " CC_WALLET_FILTER
     " AND (l.remaining < 0 OR l.remaining > l.amount OR (l.state = 'expired' AND l.remaining <> 0)"
     " OR ((l.state = 'active') <> (l.remaining > 0))))"},
    {"balance_not_entry_sum",
     "SELECT count(*) FROM wallets w"
     " LEFT JOIN (SELECT wallet_id, sum(amount) AS s FROM wallet_entries GROUP BY wallet_id) e"
     " ON e.wallet_id = w.id WHERE " CC_WALLET_FILTER " AND w.balance <> coalesce(e.s, 0)"},
    {"running_balance_broken",
     "SELECT count(*) FROM (SELECT e.balance_after,"
     " sum(e.amount) OVER (PARTITION BY e.wallet_id ORDER BY e.id) AS running"
     " FROM wallet_entries e JOIN wallets w ON w.id = e.wallet_id WHERE " CC_WALLET_FILTER ") t"
     " WHERE t.balance_after <> t.running"},
    {"draws_not_entry_amount",
     "SELECT count(*) FROM wallet_entries e JOIN wallets w ON w.id = e.wallet_id"
     " LEFT JOIN (SELECT entry_id, sum(amount) AS s FROM wallet_draws GROUP BY entry_id) d"
     " ON d.entry_id = e.id WHERE " CC_WALLET_FILTER
     " AND e.kind IN ('use', 'expire', 'transfer_out') AND -e.amount <> coalesce(d.s, 0)"},
    {"lots_not_entry_amount",
     "SELECT count(*) FROM wallet_entries e JOIN wallets w ON w.id = e.wallet_id"
     " LEFT JOIN (SELECT entry_id, sum(amount) AS s FROM wallet_lots GROUP BY entry_id) l"
     " ON l.entry_id = e.id WHERE " CC_WALLET_FILTER
     " AND e.kind IN ('earn', 'transfer_in') AND e.amount <> coalesce(l.s, 0)"},
    // A lot has given away exactly what was drawn from it by entries not cancelled (a cancel
    // gives a use's draws back; points restored into an expired lot are drawn again by the
    // cancel's expire entry).
    {"lot_drawn_mismatch",
     "SELECT count(*) FROM wallet_lots l JOIN wallets w ON w.id = l.wallet_id"
     " LEFT JOIN (SELECT d.lot_id, sum(d.amount) AS s FROM wallet_draws d WHERE NOT EXISTS"
     " (SELECT 1 FROM wallet_entries c WHERE c.kind = 'cancel' AND c.ref_entry_id = d.entry_id)"
     " GROUP BY d.lot_id) x ON x.lot_id = l.id"
     " WHERE " CC_WALLET_FILTER " AND l.amount - l.remaining <> coalesce(x.s, 0)"},
    // Rows that point at nothing (PostgreSQL declares no foreign keys, see pg_wallet_store.cpp).
    {"orphans",
     "SELECT (SELECT count(*) FROM wallet_entries e WHERE NOT EXISTS (SELECT 1 FROM wallets w WHERE w.id = e.wallet_id))"
     " + (SELECT count(*) FROM wallet_lots l WHERE NOT EXISTS (SELECT 1 FROM wallets w WHERE w.id = l.wallet_id)"
     "    OR NOT EXISTS (SELECT 1 FROM wallet_entries e WHERE e.id = l.entry_id))"
     " + (SELECT count(*) FROM wallet_draws d WHERE NOT EXISTS (SELECT 1 FROM wallet_entries e WHERE e.id = d.entry_id)"
     "    OR NOT EXISTS (SELECT 1 FROM wallet_lots l WHERE l.id = d.lot_id))"
     // A checkout without points has no entry (entry_id 0).
     " + (SELECT count(*) FROM wallet_idempotency i WHERE i.entry_id <> 0 AND NOT EXISTS"
     "    (SELECT 1 FROM wallet_entries e WHERE e.id = i.entry_id))"
     " + 0 * CAST($1 AS bigint)"},
};

#undef CC_WALLET_FILTER

// Stores the count of query i into its WalletAudit field.
inline void set_audit_field(WalletAudit* a, int i, int64_t v) {
  int64_t* fields[] = {&a->wallets, &a->balance_not_lot_sum, &a->negative, &a->balance_not_entry_sum,
                       &a->running_balance_broken, &a->draws_not_entry_amount, &a->lots_not_entry_amount,
                       &a->lot_drawn_mismatch, &a->orphans};
  *fields[i] = v;
}

}  // namespace couponcore::wallet
