// The heart of the batched wallet engine, without any database: given the locked wallets of a
// batch, their lots and the idempotency records, apply the batch's operations in arrival order
// in memory and produce the rows to write.
//
//   BatchApplier applier(now_us, std::move(loaded));
//   std::vector<OpOutcome> out = applier.apply(ops);     // each op succeeds or fails alone
//   store.reserve_ids(applier.entries_needed(), applier.lots_needed(), &e, &l);
//   WalletChanges changes = applier.finish(e, l, &out);  // real ids everywhere
//
// Every operation checks everything first and only then changes the in-memory state, so a
// failed operation leaves no trace. New entries and lots carry provisional negative ids until
// finish() maps them onto the ids the store reserved (in creation order, ascending, so that a
// wallet's entries are in id order).
//
// Before the first operation, every wallet's lots that are past their date are written off
// (one expire entry per wallet): a use never draws an expired lot, and the balance counts only
// usable points.
#pragma once

#include <cstdint>
#include <exception>
#include <map>
#include <optional>
#include <unordered_map>
#include <vector>

#include "wallet/wallet_store.hpp"

namespace couponcore::wallet {

// An operation as the batch sees it. expire_cutoff_us set: the expiry job's "write off this
// wallet's lots due at the cutoff" (no idempotency key); op then names only the wallet.
struct BatchOp {
  const WalletOp* op = nullptr;
  int64_t fingerprint = 0;
  std::optional<int64_t> expire_cutoff_us;
};

struct OpOutcome {
  WalletResult result;
  std::exception_ptr error;  // a couponcore::Error; result is unset then
};

struct BatchLoad {
  std::vector<WalletRow> wallets;  // locked
  std::vector<LotRow> lots;        // their lots with points left
  std::vector<IdemRow> idempotency;
  CancelTargets targets;
  CouponLoad coupons;  // of the batch's checkouts (and cancelled checkouts)
};

class BatchApplier {
 public:
  BatchApplier(int64_t now_us, BatchLoad&& load);

  std::vector<OpOutcome> apply(const std::vector<BatchOp>& ops);

  std::size_t entries_needed() const { return entries_.size(); }
  std::size_t lots_needed() const { return new_lot_count_; }
  // Maps provisional ids onto entry_ids / lot_ids (sizes as needed above) in the rows and in
  // outcomes, and returns what to write.
  WalletChanges finish(const std::vector<int64_t>& entry_ids, const std::vector<int64_t>& lot_ids,
                       std::vector<OpOutcome>* outcomes);

  // Idempotency keys whose records this batch writes (to resolve an unknown commit outcome).
  std::vector<IdemKey> written_keys() const;

 private:
  struct Lot {
    LotRow row;
    bool is_new = false;
    bool dirty = false;
  };
  struct Wallet {
    WalletRow row;
    int64_t loaded_balance = 0;
    std::vector<int64_t> lot_ids;  // lots that may hold points (compacted after draws)
    bool sorted = false;
    // The write-off done when the batch loaded the wallet (lots already past their date); an
    // expiry-job operation on this wallet reports it, so the job counts what it caused.
    WalletResult load_write_off;
  };
  using Draw = std::pair<int64_t, int64_t>;  // (lot id, points)
  // A use's cancel, checked and ready to apply (check_cancel, then do_cancel).
  struct CancelPlan {
    int64_t target = 0;
    int64_t usable = 0;   // points going back into lots still usable
    int64_t expired = 0;  // points going back into lots past their date (written off again)
  };

  void load_lots(std::vector<LotRow>&& lots);
  void load_targets(CancelTargets&& targets);
  void expire_due(Wallet& w, int64_t cutoff_us, WalletResult* result);
  OpOutcome apply_one(const BatchOp& bop);
  WalletResult apply_fresh(const WalletOp& op);
  WalletResult earn(Wallet& w, const WalletOp& op);
  WalletResult use(Wallet& w, const WalletOp& op);
  WalletResult cancel(Wallet& w, const WalletOp& op);
  WalletResult transfer(Wallet& from, Wallet& to, const WalletOp& op);
  WalletResult checkout(const WalletOp& op);
  WalletResult cancel_checkout(const WalletOp& op);
  const IdemRow* latest_checkout_of(int64_t partner_id, const std::string& order_id) const;
  CancelPlan check_cancel(Wallet& w, int64_t target, bool of_checkout);
  WalletResult do_cancel(Wallet& w, const WalletOp& op, const CancelPlan& plan);
  CouponRow& coupon_of(int64_t partner_id, const std::string& user_id, int64_t coupon_id);

  Wallet* find_wallet(int64_t partner_id, const std::string& user_id);
  Wallet& wallet_or_not_found(int64_t partner_id, const std::string& user_id);
  std::vector<Draw> plan_draw(Wallet& w, int64_t amount);
  void take(const std::vector<Draw>& plan, int64_t entry_id);
  int64_t add_entry(Wallet& w, WalletEntryKind kind, int64_t amount, const WalletOp* op,
                    int64_t ref_entry_id);
  int64_t add_lot(Wallet& w, int64_t entry_id, int64_t amount, std::optional<int64_t> expires_at_us);
  std::size_t active_lots(Wallet& w);
  bool due(const LotRow& lot, int64_t cutoff_us) const {
    return lot.expires_at_us && *lot.expires_at_us <= cutoff_us;
  }
  WalletResult result_of(int64_t entry_id) const;
  void check_balances() const;  // CC_ASSERT: balance == sum of remaining lots, per wallet

  const int64_t now_us_;
  std::map<WalletKey, Wallet> wallets_;
  std::unordered_map<int64_t, Wallet*> wallets_by_id_;
  std::unordered_map<int64_t, Lot> lots_;
  std::map<IdemKey, IdemRow> idem_;
  std::vector<IdemKey> new_idem_;
  // Entries this batch may cancel (loaded targets) and everything it created.
  std::unordered_map<int64_t, EntryRow> targets_;
  std::unordered_map<int64_t, std::vector<DrawRow>> draws_of_;
  std::unordered_map<int64_t, int64_t> cancelled_by_;  // use entry id -> cancel entry id
  std::vector<EntryRow> entries_;  // new, entry id -(i + 1)
  std::vector<DrawRow> draws_;     // new
  std::map<int64_t, CouponRow> coupons_;           // locked; changed in memory as ops apply
  std::map<int64_t, int64_t> pending_coupons_;     // coupon id -> its campaign's partner
  std::vector<CouponWrite> coupon_writes_;
  std::size_t new_lot_count_ = 0;  // new lot j has id -(j + 1)
};

// Of two checkout records of one order, whether `a` is the later: newest created_at_us, then
// entry id, then key. Cancels by order id take the latest (the engine to load it, the applier
// to decide).
bool later_checkout(const IdemRow& a, const IdemRow& b) noexcept;

}  // namespace couponcore::wallet
