// Wallet operations before they reach a batch: the checks every operation passes in the
// caller's thread (so bad input changes nothing and never enters the queue), the request
// fingerprint that tells a retry from a different request under the same idempotency key,
// and the stored spellings of the enums.
#pragma once

#include <cstdint>
#include <optional>
#include <string_view>

#include "couponcore/wallet.hpp"

namespace couponcore::wallet {

// Throws kInvalidArgument naming the field and the rule. now_us: the engine's clock (an earn
// whose lot would already be expired is refused).
void check_op(const WalletOp& op, int64_t now_us);

// FNV-1a 64 over every field of op, each length-prefixed; stored with the idempotency record.
int64_t fingerprint(const WalletOp& op) noexcept;

const char* op_kind_name(WalletOpKind kind) noexcept;  // "earn", "use", "cancel", "transfer"
std::optional<WalletOpKind> op_kind_from_name(std::string_view name) noexcept;

}  // namespace couponcore::wallet
