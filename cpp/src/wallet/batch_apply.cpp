// Applying a batch of wallet operations in memory (see batch_apply.hpp).
//
// Two kinds of failure, kept apart on purpose:
//   couponcore::Error   thrown by an operation's checks, BEFORE it changes anything: the
//                       operation fails alone and the batch goes on.
//   std::logic_error    a broken invariant found while changing state (our bug): it escapes
//                       apply(), the engine rolls the batch back and retries its operations one
//                       by one, so the bug costs one operation, never a partial write.
#include "wallet/batch_apply.hpp"

#include "util/assert.hpp"

#include <algorithm>
#include <stdexcept>
#include <string>
#include <tuple>

#include "couponcore/error.hpp"
#include "couponcore/limits.hpp"
#include "wallet/wallet_ops.hpp"

namespace couponcore::wallet {

namespace {

[[noreturn]] void broken(const std::string& what) { throw std::logic_error("wallet invariant: " + what); }
[[noreturn]] void internal(const std::string& what) { throw Error(ErrorCode::kInternal, what); }
[[noreturn]] void insufficient(const std::string& what) {
  throw Error(ErrorCode::kInsufficientFunds, what);
}

std::string str(int64_t v) { return std::to_string(v); }

// The reason of a checkout's use entry: such a use is cancelled only with its checkout.
const std::string kCheckoutReason = "checkout";

}  // namespace

BatchApplier::BatchApplier(int64_t now_us, BatchLoad&& load) : now_us_(now_us) {
  for (WalletRow& row : load.wallets) {
    WalletKey key{row.partner_id, row.user_id};
    Wallet w;
    w.loaded_balance = row.balance;
    w.row = std::move(row);
    auto [it, inserted] = wallets_.emplace(std::move(key), std::move(w));
    if (!inserted) broken("wallet loaded twice");
    wallets_by_id_[it->second.row.id] = &it->second;
  }
  load_lots(std::move(load.lots));
  for (IdemRow& r : load.idempotency) {
    IdemKey k{r.partner_id, r.key};
    idem_.emplace(std::move(k), std::move(r));
  }
  load_targets(std::move(load.targets));
  for (CouponRow& row : load.coupons.rows) {
    const int64_t id = row.coupon.id;
    coupons_.emplace(id, std::move(row));
  }
  for (auto [id, partner] : load.coupons.pending) pending_coupons_.emplace(id, partner);
  for (auto& [key, w] : wallets_) expire_due(w, now_us_, &w.load_write_off);
}

void BatchApplier::load_lots(std::vector<LotRow>&& lots) {
  std::unordered_map<int64_t, int64_t> sums;
  for (LotRow& l : lots) {
    auto w = wallets_by_id_.find(l.wallet_id);
    if (w == wallets_by_id_.end()) broken("lot " + str(l.id) + " of a wallet that is not locked");
    if (l.remaining <= 0 || l.expired) continue;  // nothing to draw
    sums[l.wallet_id] += l.remaining;
    w->second->lot_ids.push_back(l.id);
    const int64_t id = l.id;
    lots_.emplace(id, Lot{std::move(l), false, false});
  }
  // The stored invariant, checked on every load: a wallet that fails it is not touched.
  for (auto& [id, w] : wallets_by_id_) {
    if (sums[id] != w->row.balance) {
      broken("wallet " + str(id) + " holds balance " + str(w->row.balance) + " but its lots hold " +
             str(sums[id]));
    }
  }
}

void BatchApplier::load_targets(CancelTargets&& t) {
  for (EntryRow& e : t.entries) {
    const int64_t id = e.id;
    targets_.emplace(id, std::move(e));
  }
  for (DrawRow& d : t.draws) draws_of_[d.entry_id].push_back(d);
  for (auto [use_id, cancel_id] : t.cancels) cancelled_by_[use_id] = cancel_id;
  for (LotRow& l : t.lots) {
    const int64_t id = l.id;
    lots_.try_emplace(id, Lot{std::move(l), false, false});  // keeps a lot loaded as active
  }
}

std::vector<OpOutcome> BatchApplier::apply(const std::vector<BatchOp>& ops) {
  std::vector<OpOutcome> out;
  out.reserve(ops.size());
  for (const BatchOp& op : ops) out.push_back(apply_one(op));
  return out;
}

OpOutcome BatchApplier::apply_one(const BatchOp& bop) {
  OpOutcome outcome;
  const WalletOp& op = *bop.op;
  try {
    if (bop.expire_cutoff_us) {
      Wallet& w = wallet_or_not_found(op.partner_id, op.user_id);
      expire_due(w, *bop.expire_cutoff_us, &outcome.result);
      if (outcome.result.amount == 0 && w.load_write_off.amount < 0) {
        outcome.result = w.load_write_off;  // written off at load, by this very operation's batch
        w.load_write_off = WalletResult{};
      }
      return outcome;
    }
    IdemKey key{op.partner_id, op.idempotency_key};
    if (auto it = idem_.find(key); it != idem_.end()) {
      if (it->second.fingerprint != bop.fingerprint) {
        throw_conflict("idempotency key '" + op.idempotency_key +
                       "' was used before for a different request (a " +
                       op_kind_name(it->second.kind) + ")");
      }
      outcome.result = it->second.result;
      outcome.result.replayed = true;
      return outcome;
    }
    outcome.result = apply_fresh(op);
    IdemRow row{op.partner_id, op.idempotency_key, bop.fingerprint, op.kind, outcome.result};
    idem_.emplace(key, std::move(row));
    new_idem_.push_back(std::move(key));
  } catch (const Error&) {
    outcome.result = WalletResult{};
    outcome.error = std::current_exception();
  }
  return outcome;
}

WalletResult BatchApplier::apply_fresh(const WalletOp& op) {
  switch (op.kind) {
    case WalletOpKind::kEarn: {
      Wallet* w = find_wallet(op.partner_id, op.user_id);
      if (!w) internal("the wallet of an earn was not created");
      return earn(*w, op);
    }
    case WalletOpKind::kUse: return use(wallet_or_not_found(op.partner_id, op.user_id), op);
    case WalletOpKind::kCancel: return cancel(wallet_or_not_found(op.partner_id, op.user_id), op);
    case WalletOpKind::kTransfer: {
      Wallet& from = wallet_or_not_found(op.partner_id, op.user_id);
      Wallet* to = find_wallet(op.partner_id, op.to_user_id);
      if (!to) internal("the destination wallet of a transfer was not created");
      return transfer(from, *to, op);
    }
    case WalletOpKind::kCheckout: return checkout(op);
    case WalletOpKind::kCancelCheckout: return cancel_checkout(op);
  }
  internal("unknown wallet operation");
}

BatchApplier::Wallet* BatchApplier::find_wallet(int64_t partner_id, const std::string& user_id) {
  auto it = wallets_.find(WalletKey{partner_id, user_id});
  return it == wallets_.end() ? nullptr : &it->second;
}

BatchApplier::Wallet& BatchApplier::wallet_or_not_found(int64_t partner_id, const std::string& user_id) {
  Wallet* w = find_wallet(partner_id, user_id);
  if (!w) throw_not_found("no wallet for user '" + user_id + "'");
  return *w;
}

WalletResult BatchApplier::earn(Wallet& w, const WalletOp& op) {
  if (op.expires_at_us && *op.expires_at_us <= now_us_) {
    throw_invalid("expires_at_us " + str(*op.expires_at_us) + " is not in the future");
  }
  if (w.row.balance > limits::kWalletBalanceMax - op.amount) {
    throw_invalid("the balance would exceed " + str(limits::kWalletBalanceMax));
  }
  if (active_lots(w) >= limits::kWalletActiveLotsMax) {
    throw_conflict("the wallet holds " + str(static_cast<int64_t>(active_lots(w))) +
                   " lots with points, the limit; use or expire some first");
  }
  const int64_t e = add_entry(w, WalletEntryKind::kEarn, op.amount, &op, 0);
  add_lot(w, e, op.amount, op.expires_at_us);
  return result_of(e);
}

WalletResult BatchApplier::use(Wallet& w, const WalletOp& op) {
  if (w.row.balance < op.amount) {
    insufficient("the wallet holds " + str(w.row.balance) + " points; a use of " + str(op.amount) +
                 " is refused");
  }
  std::vector<Draw> plan = plan_draw(w, op.amount);
  const int64_t e = add_entry(w, WalletEntryKind::kUse, -op.amount, &op, 0);
  take(plan, e);
  return result_of(e);
}

WalletResult BatchApplier::cancel(Wallet& w, const WalletOp& op) {
  int64_t target = op.cancel_entry_id;
  if (target == 0) {
    auto it = idem_.find(IdemKey{op.partner_id, op.cancel_key});
    if (it == idem_.end()) throw_not_found("no operation with idempotency key '" + op.cancel_key + "'");
    if (it->second.kind != WalletOpKind::kUse) {
      throw_invalid("idempotency key '" + op.cancel_key + "' names a " + op_kind_name(it->second.kind) +
                    "; only a use can be cancelled");
    }
    target = it->second.result.entry_id;
  }
  return do_cancel(w, op, check_cancel(w, target, false));
}

// Checks a cancel of use entry `target` of wallet w and changes nothing. A checkout's use is
// cancelled only with its checkout (of_checkout): the coupon goes back with the points.
BatchApplier::CancelPlan BatchApplier::check_cancel(Wallet& w, int64_t target, bool of_checkout) {
  const EntryRow* t = nullptr;
  if (target < 0 && static_cast<std::size_t>(-target) <= entries_.size()) {
    t = &entries_[static_cast<std::size_t>(-target - 1)];
  } else if (auto it = targets_.find(target); it != targets_.end()) {
    t = &it->second;
  }
  if (!t || t->wallet_id != w.row.id) throw_not_found("entry " + str(target) + " is not in this wallet");
  if (t->kind != WalletEntryKind::kUse) {
    throw_invalid(std::string("entry ") + str(target) + " is a " + wallet_entry_kind_name(t->kind) +
                  "; only a use can be cancelled");
  }
  if (!of_checkout && t->reason == kCheckoutReason) {
    throw_invalid("entry " + str(target) + " is the points of a checkout; cancel the checkout (cancel_checkout)");
  }
  if (auto c = cancelled_by_.find(target); c != cancelled_by_.end()) {
    throw_conflict("the use was cancelled already (by entry " + str(c->second) + ")");
  }
  CancelPlan plan;
  plan.target = target;
  for (const DrawRow& d : draws_of_[target]) {
    auto lot = lots_.find(d.lot_id);
    if (lot == lots_.end() || lot->second.row.wallet_id != w.row.id) {
      internal("lot " + str(d.lot_id) + " of use " + str(target) + " was not loaded");
    }
    const LotRow& l = lot->second.row;
    if (l.expired || due(l, now_us_)) {
      plan.expired += d.amount;
    } else {
      if (l.remaining + d.amount > l.amount) internal("lot " + str(l.id) + " would hold more than it got");
      plan.usable += d.amount;
    }
  }
  if (plan.usable + plan.expired != -t->amount) internal("the draws of use " + str(target) + " do not add up");
  if (w.row.balance > limits::kWalletBalanceMax - plan.usable) {
    throw_invalid("the balance would exceed " + str(limits::kWalletBalanceMax));
  }
  return plan;
}

WalletResult BatchApplier::do_cancel(Wallet& w, const WalletOp& op, const CancelPlan& plan) {
  const int64_t target = plan.target;
  const std::vector<DrawRow>& draws = draws_of_[target];
  const int64_t c = add_entry(w, WalletEntryKind::kCancel, plan.usable + plan.expired, &op, target);
  cancelled_by_[target] = c;
  std::vector<Draw> written_off;
  for (const DrawRow& d : draws) {
    Lot& lot = lots_.at(d.lot_id);
    lot.dirty = true;
    if (lot.row.expired || due(lot.row, now_us_)) {
      lot.row.expired = true;  // restored, then written off at once: remaining stays
      written_off.emplace_back(d.lot_id, d.amount);
      continue;
    }
    if (lot.row.remaining == 0) {
      w.lot_ids.push_back(d.lot_id);
      w.sorted = false;
    }
    lot.row.remaining += d.amount;
  }
  WalletResult r = result_of(c);
  if (plan.expired > 0) {
    const int64_t x = add_entry(w, WalletEntryKind::kExpire, -plan.expired, nullptr, c);
    for (auto [lot_id, points] : written_off) draws_.push_back(DrawRow{x, lot_id, points});
    r.balance_after = w.row.balance;
    r.expired_amount = plan.expired;
  }
  return r;
}

// The coupon of a checkout, as locked for this batch (and changed by earlier operations of it).
// Not the caller's (partner or holder) or unknown: kNotFound, one message; production, a grant
// not yet in the store: kUnavailable (retry), like use_coupon.
CouponRow& BatchApplier::coupon_of(int64_t partner_id, const std::string& user_id, int64_t coupon_id) {
  auto it = coupons_.find(coupon_id);
  if (it == coupons_.end()) {
    auto p = pending_coupons_.find(coupon_id);
    if (p != pending_coupons_.end() && p->second == partner_id) throw_coupon_pending(coupon_id);
    throw_coupon_not_found(coupon_id);
  }
  if (it->second.terms.partner_id != partner_id || it->second.coupon.user_id != user_id) {
    throw_coupon_not_found(coupon_id);
  }
  return it->second;
}

// Everything is checked (coupon, points, wallet) before anything changes: a failed checkout
// leaves no trace, neither on the coupon nor on the wallet.
WalletResult BatchApplier::checkout(const WalletOp& op) {
  const UseRequest request{op.coupon_id, op.user_id, op.order_id, op.order_amount};
  CouponRow* coupon = nullptr;
  int64_t discount = 0;
  if (op.coupon_id != 0) {
    coupon = &coupon_of(op.partner_id, op.user_id, op.coupon_id);
    UseDecision d = decide_use(*coupon, op.partner_id, request, now_us_);
    if (d.decision == Decision::kReplay) {
      // The same order used it already (an earlier checkout with another idempotency key, or
      // use_coupon): charging the points again would pay twice.
      throw_conflict("coupon " + str(op.coupon_id) + " is already used by order " + op.order_id +
                     "; repeat the checkout with its first idempotency key");
    }
    discount = d.discount_amount;
  }
  const int64_t payable = op.order_amount - discount;
  if (op.amount > payable) {
    throw_invalid("points " + str(op.amount) + " exceed the amount payable after the coupon's discount (" +
                  str(payable) + ")");
  }
  Wallet* w = nullptr;
  std::vector<Draw> plan;
  if (op.amount > 0) {
    w = &wallet_or_not_found(op.partner_id, op.user_id);
    if (w->row.balance < op.amount) {
      insufficient("the wallet holds " + str(w->row.balance) + " points; a checkout with " + str(op.amount) +
                   " points is refused");
    }
    plan = plan_draw(*w, op.amount);
  }
  // Apply.
  WalletResult r;
  if (w) {
    const int64_t e = add_entry(*w, WalletEntryKind::kUse, -op.amount, &op, 0);
    entries_[static_cast<std::size_t>(-e - 1)].reason = kCheckoutReason;
    take(plan, e);
    r = result_of(e);
  } else {
    r.created_at_us = now_us_;
  }
  if (coupon) {
    Coupon& c = coupon->coupon;
    c.state = CouponState::kUsed;
    c.used_order_id = op.order_id;
    c.used_at_us = now_us_;
    c.order_amount = op.order_amount;
    c.discount_amount = discount;
    coupon_writes_.push_back(CouponWrite{true, request, discount, now_us_});
  }
  r.order_id = op.order_id;
  r.order_amount = op.order_amount;
  r.coupon_id = op.coupon_id;
  r.discount_amount = discount;
  r.points = op.amount;
  r.payable_amount = payable - op.amount;
  return r;
}

bool later_checkout(const IdemRow& a, const IdemRow& b) noexcept {
  return std::tie(a.result.created_at_us, a.result.entry_id, a.key) >
         std::tie(b.result.created_at_us, b.result.entry_id, b.key);
}

// The order's latest checkout among the records this batch knows: those the engine loaded for
// the order, and checkouts made earlier in this batch (which come later than any committed one).
const IdemRow* BatchApplier::latest_checkout_of(int64_t partner_id, const std::string& order_id) const {
  const IdemRow* best = nullptr;
  for (const auto& [key, r] : idem_) {
    if (key.partner_id != partner_id || r.kind != WalletOpKind::kCheckout || r.result.order_id != order_id) continue;
    if (!best || later_checkout(r, *best)) best = &r;
  }
  return best;
}

WalletResult BatchApplier::cancel_checkout(const WalletOp& op) {
  auto it = idem_.end();
  if (!op.order_id.empty()) {  // by order id
    const IdemRow* latest = latest_checkout_of(op.partner_id, op.order_id);
    if (!latest) throw_not_found("no checkout for order '" + op.order_id + "'");
    it = idem_.find(IdemKey{op.partner_id, latest->key});
  } else {
    it = idem_.find(IdemKey{op.partner_id, op.cancel_key});
    if (it == idem_.end()) throw_not_found("no checkout with idempotency key '" + op.cancel_key + "'");
  }
  if (it->second.kind != WalletOpKind::kCheckout) {
    throw_invalid("idempotency key '" + op.cancel_key + "' names a " + op_kind_name(it->second.kind) +
                  ", not a checkout");
  }
  const WalletResult checkout = it->second.result;  // a copy: idem_ grows below
  // Check both halves first.
  CouponRow* coupon = nullptr;
  CancelDecision cd;
  if (checkout.coupon_id != 0) {
    coupon = &coupon_of(op.partner_id, op.user_id, checkout.coupon_id);
    cd = decide_cancel(*coupon, op.partner_id, checkout.order_id, now_us_);
  }
  Wallet* w = nullptr;
  CancelPlan plan;
  if (checkout.entry_id != 0) {
    w = &wallet_or_not_found(op.partner_id, op.user_id);
    plan = check_cancel(*w, checkout.entry_id, true);
  } else if (coupon && cd.decision == Decision::kReplay) {
    throw_conflict("the checkout was cancelled already");
  }
  // Apply.
  WalletResult r;
  if (w) {
    r = do_cancel(*w, op, plan);
  } else {
    r.created_at_us = now_us_;
  }
  if (coupon) {
    Coupon& c = coupon->coupon;
    if (cd.decision == Decision::kProceed) {
      coupon->cancelled_order_id = c.used_order_id;
      c.state = cd.new_state;
      c.used_order_id.reset();
      c.used_at_us.reset();
      c.order_amount.reset();
      c.discount_amount.reset();
      UseRequest request{checkout.coupon_id, op.user_id, checkout.order_id, checkout.order_amount};
      coupon_writes_.push_back(CouponWrite{false, request, 0, now_us_});
    }
    r.coupon_state = static_cast<int>(effective_state(c.state, c.valid_until_us, now_us_));
  }
  r.order_id = checkout.order_id;
  r.order_amount = checkout.order_amount;
  r.coupon_id = checkout.coupon_id;
  r.discount_amount = checkout.discount_amount;
  r.points = checkout.points;
  r.payable_amount = checkout.payable_amount;
  return r;
}

WalletResult BatchApplier::transfer(Wallet& from, Wallet& to, const WalletOp& op) {
  if (from.row.balance < op.amount) {
    insufficient("the wallet holds " + str(from.row.balance) + " points; a transfer of " +
                 str(op.amount) + " is refused");
  }
  if (to.row.balance > limits::kWalletBalanceMax - op.amount) {
    throw_invalid("the destination's balance would exceed " + str(limits::kWalletBalanceMax));
  }
  std::vector<Draw> plan = plan_draw(from, op.amount);
  // The destination gets one lot per expiry date drawn: transferred points keep their dates.
  std::vector<std::pair<std::optional<int64_t>, int64_t>> groups;
  for (auto [lot_id, points] : plan) {
    const std::optional<int64_t>& exp = lots_.at(lot_id).row.expires_at_us;
    if (groups.empty() || groups.back().first != exp) {
      groups.emplace_back(exp, points);
    } else {
      groups.back().second += points;
    }
  }
  if (active_lots(to) + groups.size() > limits::kWalletActiveLotsMax) {
    throw_conflict("the destination holds too many lots with points (limit " +
                   str(static_cast<int64_t>(limits::kWalletActiveLotsMax)) + ")");
  }
  const int64_t out = add_entry(from, WalletEntryKind::kTransferOut, -op.amount, &op, 0);
  const int64_t in = add_entry(to, WalletEntryKind::kTransferIn, op.amount, &op, out);
  entries_[static_cast<std::size_t>(-out - 1)].ref_entry_id = in;
  take(plan, out);
  for (auto& [exp, points] : groups) add_lot(to, in, points, exp);
  WalletResult r = result_of(out);
  r.peer_entry_id = in;
  return r;
}

void BatchApplier::expire_due(Wallet& w, int64_t cutoff_us, WalletResult* result) {
  std::vector<Draw> due_lots;
  int64_t total = 0;
  for (int64_t id : w.lot_ids) {
    const LotRow& l = lots_.at(id).row;
    if (!l.expired && l.remaining > 0 && due(l, cutoff_us)) {
      due_lots.emplace_back(id, l.remaining);
      total += l.remaining;
    }
  }
  if (total == 0) return;
  const int64_t x = add_entry(w, WalletEntryKind::kExpire, -total, nullptr, 0);
  for (auto [id, points] : due_lots) {
    Lot& lot = lots_.at(id);
    lot.row.remaining = 0;
    lot.row.expired = true;
    lot.dirty = true;
    draws_.push_back(DrawRow{x, id, points});
  }
  std::erase_if(w.lot_ids, [&](int64_t id) { return lots_.at(id).row.remaining == 0; });
  if (result) *result = result_of(x);
}

// First-expiring-first; lots without expiry last; ties by age (stored lots before new ones).
std::vector<BatchApplier::Draw> BatchApplier::plan_draw(Wallet& w, int64_t amount) {
  if (!w.sorted) {
    auto rank = [&](int64_t id) {
      const Lot& l = lots_.at(id);
      return std::tuple(!l.row.expires_at_us.has_value(), l.row.expires_at_us.value_or(0), l.is_new,
                        id < 0 ? -id : id);
    };
    std::sort(w.lot_ids.begin(), w.lot_ids.end(), [&](int64_t a, int64_t b) { return rank(a) < rank(b); });
    w.sorted = true;
  }
  std::vector<Draw> plan;
  int64_t left = amount;
  for (int64_t id : w.lot_ids) {
    if (left == 0) break;
    const LotRow& l = lots_.at(id).row;
    if (l.expired || l.remaining == 0) continue;
    const int64_t points = std::min(left, l.remaining);
    plan.emplace_back(id, points);
    left -= points;
  }
  if (left != 0) internal("wallet " + str(w.row.id) + ": the lots hold less than the balance");
  return plan;
}

void BatchApplier::take(const std::vector<Draw>& plan, int64_t entry_id) {
  Wallet* w = nullptr;
  for (auto [lot_id, points] : plan) {
    Lot& lot = lots_.at(lot_id);
    if (lot.row.remaining < points) broken("a draw larger than the lot");
    lot.row.remaining -= points;
    lot.dirty = true;
    DrawRow d{entry_id, lot_id, points};
    draws_.push_back(d);
    draws_of_[entry_id].push_back(d);
    w = wallets_by_id_.at(lot.row.wallet_id);
  }
  if (w) std::erase_if(w->lot_ids, [&](int64_t id) { return lots_.at(id).row.remaining == 0; });
}

int64_t BatchApplier::add_entry(Wallet& w, WalletEntryKind kind, int64_t amount, const WalletOp* op,
                                int64_t ref_entry_id) {
  w.row.balance += amount;
  if (w.row.balance < 0) broken("wallet " + str(w.row.id) + " would go negative");
  EntryRow e;
  e.id = -static_cast<int64_t>(entries_.size() + 1);
  e.wallet_id = w.row.id;
  e.kind = kind;
  e.amount = amount;
  e.balance_after = w.row.balance;
  e.ref_entry_id = ref_entry_id;
  e.created_at_us = now_us_;
  if (op) {
    e.idempotency_key = op->idempotency_key;
    e.traceparent = op->traceparent;
    if (kind == WalletEntryKind::kUse) e.order_id = op->order_id;
    if (kind == WalletEntryKind::kEarn) e.reason = op->reason;
  }
  entries_.push_back(std::move(e));
  return entries_.back().id;
}

int64_t BatchApplier::add_lot(Wallet& w, int64_t entry_id, int64_t amount,
                              std::optional<int64_t> expires_at_us) {
  const int64_t id = -static_cast<int64_t>(++new_lot_count_);
  LotRow row{id, w.row.id, entry_id, amount, amount, expires_at_us, false, now_us_};
  lots_.emplace(id, Lot{std::move(row), true, true});
  w.lot_ids.push_back(id);
  w.sorted = false;
  return id;
}

std::size_t BatchApplier::active_lots(Wallet& w) { return w.lot_ids.size(); }

WalletResult BatchApplier::result_of(int64_t entry_id) const {
  const EntryRow& e = entries_.at(static_cast<std::size_t>(-entry_id - 1));
  WalletResult r;
  r.entry_id = entry_id;
  r.amount = e.amount;
  r.balance_after = e.balance_after;
  r.created_at_us = e.created_at_us;
  return r;
}

std::vector<IdemKey> BatchApplier::written_keys() const { return new_idem_; }

// The batch's side of the wallet invariant, after every operation applied: each wallet's
// balance is the sum of its lots' remaining points (expired lots hold none) and never negative.
void BatchApplier::check_balances() const {
  if constexpr (kAssertions) {
    std::unordered_map<int64_t, int64_t> sums;
    for (const auto& [id, lot] : lots_) {
      if (!lot.row.expired && lot.row.remaining > 0) sums[lot.row.wallet_id] += lot.row.remaining;
    }
    for (const auto& [key, w] : wallets_) {
      CC_ASSERT(w.row.balance >= 0, "wallet " + str(w.row.id) + " has a negative balance");
      CC_ASSERT(sums[w.row.id] == w.row.balance, "wallet " + str(w.row.id) + " holds balance " + str(w.row.balance) +
                                                      " but its lots hold " + str(sums[w.row.id]));
    }
  }
}

WalletChanges BatchApplier::finish(const std::vector<int64_t>& entry_ids,
                                   const std::vector<int64_t>& lot_ids,
                                   std::vector<OpOutcome>* outcomes) {
  if (entry_ids.size() != entries_.size() || lot_ids.size() != new_lot_count_) {
    broken("reserved ids do not match the batch");
  }
  check_balances();
  auto map_entry = [&](int64_t& id) {
    if (id < 0) id = entry_ids.at(static_cast<std::size_t>(-id - 1));
  };
  auto map_lot = [&](int64_t& id) {
    if (id < 0) id = lot_ids.at(static_cast<std::size_t>(-id - 1));
  };
  WalletChanges ch;
  ch.entries = entries_;
  for (EntryRow& e : ch.entries) {
    map_entry(e.id);
    map_entry(e.ref_entry_id);
  }
  for (const auto& [id, lot] : lots_) {
    if (!lot.dirty) continue;
    LotRow row = lot.row;
    map_lot(row.id);
    map_entry(row.entry_id);
    (lot.is_new ? ch.new_lots : ch.changed_lots).push_back(std::move(row));
  }
  auto by_id = [](const LotRow& a, const LotRow& b) { return a.id < b.id; };
  std::sort(ch.new_lots.begin(), ch.new_lots.end(), by_id);
  std::sort(ch.changed_lots.begin(), ch.changed_lots.end(), by_id);
  ch.coupons = coupon_writes_;
  ch.draws = draws_;
  for (DrawRow& d : ch.draws) {
    map_entry(d.entry_id);
    map_lot(d.lot_id);
  }
  for (const auto& [key, w] : wallets_) {
    if (w.row.balance != w.loaded_balance) ch.balances.emplace_back(w.row.id, w.row.balance);
  }
  std::sort(ch.balances.begin(), ch.balances.end());
  for (const IdemKey& k : new_idem_) {
    IdemRow row = idem_.at(k);
    map_entry(row.result.entry_id);
    map_entry(row.result.peer_entry_id);
    ch.idempotency.push_back(std::move(row));
  }
  for (OpOutcome& o : *outcomes) {
    if (o.error) continue;
    map_entry(o.result.entry_id);
    map_entry(o.result.peer_entry_id);
  }
  return ch;
}

}  // namespace couponcore::wallet
