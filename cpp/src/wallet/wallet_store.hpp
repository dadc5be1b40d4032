// The wallet engine's view of a store: rows, and the steps of one batch transaction. Two
// implementations share the logical schema (wallets, wallet_lots, wallet_entries,
// wallet_draws, wallet_idempotency; times in bigint microseconds):
//
//   SqliteWalletStore    (sqlite_wallet_store.cpp)  BEGIN IMMEDIATE is the lock
//   PostgresWalletStore  (pg_wallet_store.cpp)      SELECT ... ORDER BY id FOR NO KEY UPDATE
//
// A batch runs, on the engine's thread, in this order:
//   begin_batch(keys)        1. wallets of earn / transfer destinations are created when
//                               missing (PostgreSQL: in their own autocommit statement, keys
//                               sorted, so creation never waits inside a batch's lock set)
//                            2. BEGIN, and the batch's wallets are locked in id order
//                            3. the idempotency records, read AFTER the locks: a concurrent
//                               batch with the same key and wallet has committed by then, and
//                               READ COMMITTED shows its record
//                            4. the lots with points left, and ids reserved for new rows
//                            (PostgreSQL: one round trip, in pipeline mode)
//   load_checkouts_of_orders only when the batch cancels a checkout by its order id: the
//                            checkout records of those orders (read after the locks)
//   load_cancel_targets(ids) only when the batch cancels: entries, their draws, their lots
//   reserve_ids(n, m)        only when begin_batch's reservation was too small
//   commit_changes(changes)  a few set-based statements and COMMIT (PostgreSQL: one round
//                            trip); false when an idempotency key was taken by a concurrent
//                            batch on other wallets: rolled back, the engine retries
// Any step may throw couponcore::Error; kUnavailable means "retry the batch" (deadlock,
// serialization failure, busy, lost connection), anything else is unexpected. After a throw
// the engine calls rollback().
//
//   lock_coupons(ids)        only when the batch checks out (or cancels a checkout) with
//                            coupons: their rows, locked after the wallets, in id order
//
// A checkout's coupon joins the batch transaction: read (locked) by lock_coupons, decided in
// memory with the coupon rules, written by commit_changes with the coupon store's own
// conditional UPDATEs before the wallet rows, on the same connection, in the same commit.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "coupons/rules.hpp"
#include "couponcore/wallet.hpp"

namespace couponcore::wallet {

struct WalletKey {
  int64_t partner_id = 0;
  std::string user_id;
  auto operator<=>(const WalletKey&) const = default;
};

struct IdemKey {
  int64_t partner_id = 0;
  std::string key;
  auto operator<=>(const IdemKey&) const = default;
};

struct WalletRow {
  int64_t id = 0;
  int64_t partner_id = 0;
  std::string user_id;
  int64_t balance = 0;
};

struct LotRow {
  int64_t id = 0;
  int64_t wallet_id = 0;
  int64_t entry_id = 0;  // the earn or transfer_in entry that created it
  int64_t amount = 0;
  int64_t remaining = 0;
  std::optional<int64_t> expires_at_us;
  bool expired = false;  // state 'expired' (else 'active' or 'spent', by remaining)
  int64_t created_at_us = 0;
};

struct EntryRow {
  int64_t id = 0;
  int64_t wallet_id = 0;
  WalletEntryKind kind = WalletEntryKind::kEarn;
  int64_t amount = 0;
  int64_t balance_after = 0;
  std::string idempotency_key;  // empty: NULL
  int64_t ref_entry_id = 0;     // 0: NULL
  std::string order_id;         // empty: NULL
  std::string reason;           // empty: NULL
  int64_t created_at_us = 0;
  std::string traceparent;      // the operation's, for its event (not stored with the entry)
};

struct DrawRow {
  int64_t entry_id = 0;
  int64_t lot_id = 0;
  int64_t amount = 0;
};

struct IdemRow {
  int64_t partner_id = 0;
  std::string key;
  int64_t fingerprint = 0;
  WalletOpKind kind = WalletOpKind::kEarn;
  WalletResult result;  // replayed is not stored
};

// What a batch that cancels needs to know about the cancelled entries.
struct CancelTargets {
  std::vector<EntryRow> entries;                    // the targets that exist
  std::vector<DrawRow> draws;                       // their draws
  std::vector<std::pair<int64_t, int64_t>> cancels; // (target id, cancel entry id) already made
  std::vector<LotRow> lots;                         // the lots of those draws
};

// The coupons of a batch's checkouts.
struct CouponLoad {
  std::vector<CouponRow> rows;  // found, locked until the batch ends
  // Coupons without a row whose grant may still be on its way to the store (production: the
  // campaign exists and 1 <= seq <= quantity): (coupon id, the campaign's partner).
  std::vector<std::pair<int64_t, int64_t>> pending;
};

// One coupon change of a batch, applied in order by commit_changes with the coupon store's
// conditional UPDATE (which must match: the row is locked).
struct CouponWrite {
  bool use = true;              // true: issued -> used (request, discount_amount);
                                // false: used by request.order_id -> issued / expired
  UseRequest request;
  int64_t discount_amount = 0;
  int64_t at_us = 0;
};

struct WalletChanges {
  std::vector<EntryRow> entries;
  std::vector<LotRow> new_lots;
  std::vector<LotRow> changed_lots;  // remaining / expired changed
  std::vector<DrawRow> draws;
  std::vector<std::pair<int64_t, int64_t>> balances;  // (wallet id, new balance)
  std::vector<IdemRow> idempotency;
  std::vector<CouponWrite> coupons;
  // Wallets begin_batch created for this batch's earns and transfer destinations that got no
  // entry (every operation naming them was refused): deleted again, when they hold no entries
  // at all, so that a refused operation leaves no wallet row behind. Sorted; usually empty.
  std::vector<int64_t> drop_wallets;
  bool empty() const { return entries.empty() && balances.empty() && changed_lots.empty(); }
};

struct ExpireCandidate {
  int64_t wallet_id = 0;
  WalletKey key;
};

// What begin_batch needs: every list sorted and without duplicates.
struct BatchKeys {
  std::vector<WalletKey> create;     // wallets to create when missing
  std::vector<WalletKey> wallets;    // every wallet of the batch (create included)
  // The same wallets split by what the engine knows: the ids of those it has seen (a wallet is
  // deleted only while it has no entries, see WalletChanges::drop_wallets, and the engine checks
  // the rows it gets back), and the keys of the others. A store
  // may find the first by primary key instead of by (partner, user); the engine checks the rows
  // it gets back against their keys.
  std::vector<int64_t> known_ids;
  std::vector<WalletKey> unknown;
  std::vector<IdemKey> idempotency;  // the operations' keys and the cancelled uses' keys
  std::size_t reserve_entries = 0;   // ids to reserve (a guess; more via reserve_ids)
  std::size_t reserve_lots = 0;
};

struct BatchRead {
  std::vector<WalletRow> wallets;  // locked, in id order; missing wallets are absent
  std::vector<IdemRow> idempotency;
  std::vector<LotRow> lots;        // of those wallets, with points left
  std::vector<int64_t> entry_ids;  // reserved, ascending
  std::vector<int64_t> lot_ids;
};

class WalletStore {
 public:
  virtual ~WalletStore() = default;

  // The batch transaction (see the file comment for the order).
  virtual BatchRead begin_batch(const BatchKeys& keys, int64_t now_us) = 0;
  virtual CancelTargets load_cancel_targets(const std::vector<int64_t>& entry_ids) = 0;
  // Only when the batch cancels a checkout by its order id: the checkout records of these
  // (partner, order id) pairs, every one of them (sorted, without duplicates).
  virtual std::vector<IdemRow> load_checkouts_of_orders(
      const std::vector<std::pair<int64_t, std::string>>& orders) = 0;
  // coupon_ids sorted, without duplicates.
  virtual CouponLoad lock_coupons(const std::vector<int64_t>& coupon_ids) = 0;
  // Appends more reserved ids (ascending, above every id reserved before in this batch).
  virtual void reserve_ids(std::size_t entries, std::size_t lots, std::vector<int64_t>* entry_ids,
                           std::vector<int64_t>* lot_ids) = 0;
  virtual bool commit_changes(const WalletChanges& changes) = 0;
  virtual void rollback() noexcept = 0;

  // Reads outside batches (the engine keeps a second store for them).
  virtual std::optional<int64_t> find_wallet(const WalletKey& key) = 0;
  // Lots with points left that are not written off.
  virtual std::vector<LotRow> active_lots(int64_t wallet_id) = 0;
  virtual std::vector<EntryRow> entries_before(int64_t wallet_id, int64_t cursor, int limit) = 0;
  // Wallets with id > after_wallet_id holding lots due at now_us, ascending, at most limit.
  virtual std::vector<ExpireCandidate> expire_candidates(int64_t now_us, int64_t after_wallet_id,
                                                         int limit) = 0;
  virtual WalletAudit audit(int64_t partner_id) = 0;
  // Deletes at most limit idempotency records created before before_us (checkout records only
  // with include_checkouts), in one statement; returns how many.
  virtual int64_t purge_idempotency(int64_t before_us, bool include_checkouts, int limit) = 0;
};

// Stored spellings of the enums.
// 'active' (points left), 'spent' (none left; a cancel may restore some) or 'expired'.
const char* lot_state_name(const LotRow& lot) noexcept;
std::optional<WalletEntryKind> entry_kind_from_name(std::string_view name) noexcept;

}  // namespace couponcore::wallet
