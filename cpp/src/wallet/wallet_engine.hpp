// The batched wallet engine over any WalletStore (wallet_engine.cpp). The two factories
// (open_wallets_embedded, open_wallets_postgres) build their stores and call this.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "couponcore/wallet.hpp"
#include "wallet/wallet_store.hpp"

namespace couponcore::wallet {

// One committer thread per writer runs batches; reader serves balance/history/expire scans and
// audits from callers' threads (one at a time).
std::unique_ptr<WalletEngine> make_batched_engine(const char* kind,
                                                  std::vector<std::unique_ptr<WalletStore>> writers,
                                                  std::unique_ptr<WalletStore> reader,
                                                  const WalletOptions& options);

// The stores, for the factories and for tests that wrap a store to inject faults.
std::unique_ptr<WalletStore> open_sqlite_wallet_store(const std::string& path, bool synchronous_full,
                                                      bool events = true);
// Applies the wallet migrations first when migrate is set.
std::unique_ptr<WalletStore> open_postgres_wallet_store(const std::string& url,
                                                        const std::string& application_name, bool migrate,
                                                        bool events = true);

}  // namespace couponcore::wallet
