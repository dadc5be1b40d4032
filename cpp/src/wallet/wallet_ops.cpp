// Checks, fingerprints and names of wallet operations (see wallet_ops.hpp), and the named
// constructors of WalletOp.
#include "wallet/wallet_ops.hpp"

#include <string>

#include "couponcore/error.hpp"
#include "couponcore/limits.hpp"
#include "coupons/coupon_service.hpp"
#include "wallet/wallet_store.hpp"

namespace couponcore {

namespace {

// What every operation has: its kind, its wallet and its idempotency key.
WalletOp base_op(WalletOpKind kind, int64_t partner_id, std::string user_id, std::string key) {
  WalletOp op;
  op.kind = kind;
  op.partner_id = partner_id;
  op.user_id = std::move(user_id);
  op.idempotency_key = std::move(key);
  return op;
}

}  // namespace

WalletOp WalletOp::earn(int64_t partner_id, std::string user_id, int64_t amount,
                        std::optional<int64_t> expires_at_us, std::string reason, std::string key) {
  WalletOp op = base_op(WalletOpKind::kEarn, partner_id, std::move(user_id), std::move(key));
  op.amount = amount;
  op.expires_at_us = expires_at_us;
  op.reason = std::move(reason);
  return op;
}

WalletOp WalletOp::use(int64_t partner_id, std::string user_id, int64_t amount, std::string order_id,
                       std::string key) {
  WalletOp op = base_op(WalletOpKind::kUse, partner_id, std::move(user_id), std::move(key));
  op.amount = amount;
  op.order_id = std::move(order_id);
  return op;
}

WalletOp WalletOp::cancel_entry(int64_t partner_id, std::string user_id, int64_t use_entry_id,
                                std::string key) {
  WalletOp op = base_op(WalletOpKind::kCancel, partner_id, std::move(user_id), std::move(key));
  op.cancel_entry_id = use_entry_id;
  return op;
}

WalletOp WalletOp::cancel_by_key(int64_t partner_id, std::string user_id, std::string use_key,
                                 std::string key) {
  WalletOp op = base_op(WalletOpKind::kCancel, partner_id, std::move(user_id), std::move(key));
  op.cancel_key = std::move(use_key);
  return op;
}

WalletOp WalletOp::transfer(int64_t partner_id, std::string from_user_id, std::string to_user_id,
                            int64_t amount, std::string key) {
  WalletOp op = base_op(WalletOpKind::kTransfer, partner_id, std::move(from_user_id), std::move(key));
  op.to_user_id = std::move(to_user_id);
  op.amount = amount;
  return op;
}

WalletOp WalletOp::checkout(int64_t partner_id, std::string user_id, std::string order_id,
                            int64_t order_amount, int64_t coupon_id, int64_t points, std::string key) {
  WalletOp op = base_op(WalletOpKind::kCheckout, partner_id, std::move(user_id), std::move(key));
  op.order_id = std::move(order_id);
  op.order_amount = order_amount;
  op.coupon_id = coupon_id;
  op.amount = points;
  return op;
}

WalletOp WalletOp::cancel_checkout(int64_t partner_id, std::string user_id, std::string checkout_key,
                                   std::string key) {
  WalletOp op = base_op(WalletOpKind::kCancelCheckout, partner_id, std::move(user_id), std::move(key));
  op.cancel_key = std::move(checkout_key);
  return op;
}

WalletOp WalletOp::cancel_checkout_of_order(int64_t partner_id, std::string user_id, std::string order_id,
                                            std::string key) {
  WalletOp op = base_op(WalletOpKind::kCancelCheckout, partner_id, std::move(user_id), std::move(key));
  op.order_id = std::move(order_id);
  return op;
}

const char* wallet_entry_kind_name(WalletEntryKind kind) noexcept {
  switch (kind) {
    case WalletEntryKind::kEarn: return "earn";
    case WalletEntryKind::kUse: return "use";
    case WalletEntryKind::kCancel: return "cancel";
    case WalletEntryKind::kExpire: return "expire";
    case WalletEntryKind::kTransferIn: return "transfer_in";
    case WalletEntryKind::kTransferOut: return "transfer_out";
  }
  return "unknown";
}

namespace wallet {

namespace {

void check_id_field(std::string_view value, std::size_t bytes_max, const char* field) {
  if (limits::is_valid_id(value, bytes_max)) return;
  if (value.empty()) throw_invalid(std::string(field) + " must not be empty");
  if (value.size() > bytes_max) {
    throw_invalid(std::string(field) + " is " + std::to_string(value.size()) +
                  " bytes; the limit is " + std::to_string(bytes_max));
  }
  throw_invalid(std::string(field) + " may contain only letters, digits and - _ . : @ + = /");
}

void check_amount(int64_t amount) {
  if (amount <= 0) throw_invalid("amount must be positive, got " + std::to_string(amount));
  if (amount > limits::kAmountMax) {
    throw_invalid("amount " + std::to_string(amount) + " is over the limit of " +
                  std::to_string(limits::kAmountMax));
  }
}

// Fields an operation does not use must be left empty, so that the fingerprint of a request
// is the fingerprint of what it means.
void check_unused(const WalletOp& op) {
  const char* kind = op_kind_name(op.kind);
  auto refuse = [&](const char* field) {
    throw_invalid(std::string(field) + " is not used by " + kind + "; leave it empty");
  };
  const bool earn = op.kind == WalletOpKind::kEarn;
  const bool use = op.kind == WalletOpKind::kUse;
  const bool cancel = op.kind == WalletOpKind::kCancel;
  const bool transfer = op.kind == WalletOpKind::kTransfer;
  const bool checkout = op.kind == WalletOpKind::kCheckout;
  const bool cancel_checkout = op.kind == WalletOpKind::kCancelCheckout;
  if (!earn && op.expires_at_us) refuse("expires_at_us");
  if (!earn && !op.reason.empty()) refuse("reason");
  if (!use && !checkout && !cancel_checkout && !op.order_id.empty()) refuse("order_id");
  if (!cancel && op.cancel_entry_id != 0) refuse("the cancelled entry");
  if (!cancel && !cancel_checkout && !op.cancel_key.empty()) refuse("the cancelled entry");
  if (!transfer && !op.to_user_id.empty()) refuse("to_user_id");
  if ((cancel || cancel_checkout) && op.amount != 0) refuse("amount");
  if (!checkout && (op.order_amount != 0 || op.coupon_id != 0)) refuse("order_amount and coupon_id");
}

void check_earn(const WalletOp& op, int64_t now_us) {
  check_amount(op.amount);
  if (op.expires_at_us && *op.expires_at_us <= now_us) {
    throw_invalid("expires_at_us " + std::to_string(*op.expires_at_us) + " is not in the future");
  }
  if (op.reason.size() > limits::kWalletReasonBytesMax) {
    throw_invalid("reason is " + std::to_string(op.reason.size()) + " bytes; the limit is " +
                  std::to_string(limits::kWalletReasonBytesMax));
  }
  limits::check_text(op.reason, "reason");
}

void check_cancel(const WalletOp& op) {
  const bool by_id = op.cancel_entry_id != 0;
  const bool by_key = !op.cancel_key.empty();
  if (by_id == by_key) throw_invalid("cancel names the use by entry id or by its idempotency key (one of them)");
  if (by_id && op.cancel_entry_id < 0) throw_invalid("cancel_entry_id must be positive");
  if (by_key) check_id_field(op.cancel_key, limits::kRequestIdBytesMax, "cancel_key");
}

// The coupon's own request checks (coupon id, order id, order amount) are the coupon
// service's: check_use_request.
void check_checkout(const WalletOp& op) {
  if (op.amount < 0) throw_invalid("points must not be negative, got " + std::to_string(op.amount));
  if (op.amount > limits::kAmountMax) {
    throw_invalid("points " + std::to_string(op.amount) + " is over the limit of " + std::to_string(limits::kAmountMax));
  }
  if (op.coupon_id < 0) throw_invalid("coupon_id must not be negative (0: no coupon)");
  if (op.coupon_id != 0) {
    check_use_request(UseRequest{op.coupon_id, op.user_id, op.order_id, op.order_amount, {}});
  } else {
    limits::check_order_id(op.order_id);
    if (op.order_amount <= 0 || op.order_amount > limits::kAmountMax) {
      throw_invalid("order_amount must be 1.." + std::to_string(limits::kAmountMax) + " (minor units), got " +
                    std::to_string(op.order_amount));
    }
  }
  if (op.amount > op.order_amount) {
    throw_invalid("points " + std::to_string(op.amount) + " exceed the order amount " + std::to_string(op.order_amount));
  }
}

void mix(uint64_t* h, const void* data, std::size_t n) noexcept {
  const auto* p = static_cast<const unsigned char*>(data);
  for (std::size_t i = 0; i < n; ++i) {
    *h ^= p[i];
    *h *= 1099511628211ULL;
  }
}

void mix_i64(uint64_t* h, int64_t v) noexcept { mix(h, &v, sizeof v); }

void mix_str(uint64_t* h, std::string_view s) noexcept {
  mix_i64(h, static_cast<int64_t>(s.size()));
  mix(h, s.data(), s.size());
}

}  // namespace

void check_op(const WalletOp& op, int64_t now_us) {
  switch (op.kind) {
    case WalletOpKind::kEarn: case WalletOpKind::kUse: case WalletOpKind::kCancel:
    case WalletOpKind::kTransfer: case WalletOpKind::kCheckout: case WalletOpKind::kCancelCheckout: break;
    default: throw_invalid("unknown wallet operation kind");
  }
  if (op.partner_id < 0) throw_invalid("partner_id must not be negative");
  check_id_field(op.user_id, limits::kUserIdBytesMax, "user_id");
  check_id_field(op.idempotency_key, limits::kRequestIdBytesMax, "idempotency_key");
  check_unused(op);
  switch (op.kind) {
    case WalletOpKind::kEarn: check_earn(op, now_us); break;
    case WalletOpKind::kUse:
      check_amount(op.amount);
      if (!op.order_id.empty()) check_id_field(op.order_id, limits::kRequestIdBytesMax, "order_id");
      break;
    case WalletOpKind::kCancel: check_cancel(op); break;
    case WalletOpKind::kTransfer:
      check_amount(op.amount);
      check_id_field(op.to_user_id, limits::kUserIdBytesMax, "to_user_id");
      if (op.to_user_id == op.user_id) throw_invalid("a transfer needs two different wallets");
      break;
    case WalletOpKind::kCheckout: check_checkout(op); break;
    case WalletOpKind::kCancelCheckout:
      if (op.cancel_key.empty() == op.order_id.empty()) {
        throw_invalid("cancel_checkout names the checkout by its idempotency key or by its order id (one of them)");
      }
      if (op.order_id.empty()) {
        check_id_field(op.cancel_key, limits::kRequestIdBytesMax, "checkout_key");
      } else {
        limits::check_order_id(op.order_id);
      }
      break;
  }
}

int64_t fingerprint(const WalletOp& op) noexcept {
  uint64_t h = 14695981039346656037ULL;
  mix_i64(&h, static_cast<int64_t>(op.kind));
  mix_i64(&h, op.partner_id);
  mix_str(&h, op.user_id);
  mix_str(&h, op.to_user_id);
  mix_i64(&h, op.amount);
  mix_i64(&h, op.expires_at_us ? 1 : 0);
  mix_i64(&h, op.expires_at_us.value_or(0));
  mix_str(&h, op.reason);
  mix_str(&h, op.order_id);
  mix_i64(&h, op.cancel_entry_id);
  mix_str(&h, op.cancel_key);
  // Fields added later are mixed only when set, so stored fingerprints of older operations
  // still match their retries.
  if (op.order_amount != 0 || op.coupon_id != 0) {
    mix_i64(&h, op.order_amount);
    mix_i64(&h, op.coupon_id);
  }
  return static_cast<int64_t>(h);
}

const char* op_kind_name(WalletOpKind kind) noexcept {
  switch (kind) {
    case WalletOpKind::kEarn: return "earn";
    case WalletOpKind::kUse: return "use";
    case WalletOpKind::kCancel: return "cancel";
    case WalletOpKind::kTransfer: return "transfer";
    case WalletOpKind::kCheckout: return "checkout";
    case WalletOpKind::kCancelCheckout: return "cancel_checkout";
  }
  return "unknown";
}

std::optional<WalletOpKind> op_kind_from_name(std::string_view name) noexcept {
  for (WalletOpKind k : {WalletOpKind::kEarn, WalletOpKind::kUse, WalletOpKind::kCancel,
                         WalletOpKind::kTransfer, WalletOpKind::kCheckout, WalletOpKind::kCancelCheckout}) {
    if (name == op_kind_name(k)) return k;
  }
  return std::nullopt;
}

const char* lot_state_name(const LotRow& lot) noexcept {
  if (lot.expired) return "expired";
  return lot.remaining > 0 ? "active" : "spent";
}

std::optional<WalletEntryKind> entry_kind_from_name(std::string_view name) noexcept {
  for (int i = 0; i <= static_cast<int>(WalletEntryKind::kTransferOut); ++i) {
    auto k = static_cast<WalletEntryKind>(i);
    if (name == wallet_entry_kind_name(k)) return k;
  }
  return std::nullopt;
}

}  // namespace wallet
}  // namespace couponcore
