// The wallet engine's view of a store: rows, and the steps of one batch transaction. Two
// implementations share the logical schema (wallets, wallet_lots, wallet_entries,
// wallet_draws, wallet_idempotency; times in bigint microseconds):
//
//   SqliteWalletStore    (sqlite_wallet_store.cpp)  BEGIN IMMEDIATE is the lock
//   PostgresWalletStore  (pg_wallet_store.cpp)      SELECT ... ORDER BY id FOR NO KEY UPDATE
//
// A batch runs, on the engine's thread, in this order:
//   begin(create)            wallets of earn / transfer destinations are created when missing
//                            (PostgreSQL: in their own short autocommit statement, keys sorted,
//                            so that creation never waits inside a batch's lock set)
//   lock_wallets(keys)       locks the batch's wallets in id order, returns them
//   load_idempotency(keys)   AFTER the locks: a concurrent batch with the same key and wallet
//                            has committed by then, and READ COMMITTED shows its record
//   load_lots(wallet ids)    lots with points left
//   load_cancel_targets(ids) only when the batch cancels: entries, their draws, their lots
//   reserve_ids(n, m)        ids for the new entries and lots
//   write(changes)           a few set-based statements; false when an idempotency key was
//                            taken by a concurrent batch on other wallets (roll back, retry)
//   commit()
// Any step may throw couponcore::Error; kUnavailable means "retry the batch" (deadlock,
// serialization failure, busy, lost connection), anything else is unexpected.
//
// A coupon use (checkout) can later join the same transaction between lock_wallets and write.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

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
  bool expired = false;  // state 'expired' (else 'active')
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

struct WalletChanges {
  std::vector<EntryRow> entries;
  std::vector<LotRow> new_lots;
  std::vector<LotRow> changed_lots;  // remaining / expired changed
  std::vector<DrawRow> draws;
  std::vector<std::pair<int64_t, int64_t>> balances;  // (wallet id, new balance)
  std::vector<IdemRow> idempotency;
  bool empty() const { return entries.empty() && balances.empty() && changed_lots.empty(); }
};

struct ExpireCandidate {
  int64_t wallet_id = 0;
  WalletKey key;
};

class WalletStore {
 public:
  virtual ~WalletStore() = default;

  // The batch transaction (see the file comment for the order).
  virtual void begin(const std::vector<WalletKey>& create_sorted, int64_t now_us) = 0;
  virtual std::vector<WalletRow> lock_wallets(const std::vector<WalletKey>& keys_sorted) = 0;
  virtual std::vector<IdemRow> load_idempotency(const std::vector<IdemKey>& keys_sorted) = 0;
  virtual std::vector<LotRow> load_lots(const std::vector<int64_t>& wallet_ids) = 0;
  virtual CancelTargets load_cancel_targets(const std::vector<int64_t>& entry_ids) = 0;
  virtual void reserve_ids(std::size_t entries, std::size_t lots, std::vector<int64_t>* entry_ids,
                           std::vector<int64_t>* lot_ids) = 0;
  virtual bool write(const WalletChanges& changes) = 0;
  virtual void commit() = 0;
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
};

// Stored spellings of the enums.
const char* lot_state_name(bool expired) noexcept;
std::optional<WalletEntryKind> entry_kind_from_name(std::string_view name) noexcept;

}  // namespace couponcore::wallet
