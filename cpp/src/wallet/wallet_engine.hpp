// The batched wallet engine over any WalletStore (wallet_engine.cpp). The two factories
// (open_wallets_embedded, open_wallets_postgres) build their stores and call this.
#pragma once

#include <memory>

#include "couponcore/wallet.hpp"
#include "wallet/wallet_store.hpp"

namespace couponcore::wallet {

// writer runs the batches on the engine's thread; reader serves balance/history/expire scans
// and audits from callers' threads (one at a time).
std::unique_ptr<WalletEngine> make_batched_engine(const char* kind, std::unique_ptr<WalletStore> writer,
                                                  std::unique_ptr<WalletStore> reader,
                                                  const WalletOptions& options);

}  // namespace couponcore::wallet
