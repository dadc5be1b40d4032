// Loyalty-point wallets: the batched wallet engine, one API over two stores.
//
//   open_wallets_embedded(options)  SQLite file (WAL); BEGIN IMMEDIATE is the batch's lock
//   open_wallets_postgres(options)  PostgreSQL; a batch locks its wallets FOR NO KEY UPDATE
//
// A wallet belongs to (partner_id, user_id). Points arrive as lots (amount, optional expiry);
// a use draws from lots first-expiring-first (lots without expiry last) and records every draw,
// so a cancel restores exactly the drawn lots. Every operation carries an idempotency key,
// unique per partner: a retry with the same key returns the first result (replayed = true), the
// same key with other content is kConflict. An operation that fails (kInsufficientFunds,
// kNotFound, kConflict, kInvalidArgument) changes nothing and records nothing, so a later
// retry with the same key is decided afresh.
//
// Callers submit operations (submit(), or the blocking faces earn/use/cancel/transfer). One
// native thread per engine takes the queue in batches and applies a batch in ONE transaction:
// lock the batch's wallets in id order, load their lots and the idempotency records, apply the
// operations in arrival order in memory, write all changes with a few set-based statements,
// commit, then answer each caller. Deadlocks, serialization failures, busy databases and lost
// connections are retried with backoff inside the engine and never reach a caller as a
// business error; after retry_budget_ms a caller gets kUnavailable (safe to retry with the same
// key). Several engines (threads, processes, machines) may share one database.
//
// Expiry: a lot stops being usable at expires_at_us. Lots past their date are written off
// (an `expire` ledger entry) by the batch job expire(now_us), and also whenever a batch touches
// the wallet, so a wallet's balance never counts points that can no longer be used once it
// has been touched. balance() excludes points past their date even before they are written off.
//
// Cancel of a use whose lots expired meanwhile: the drawn points are restored to their lots
// and written off at once. The ledger shows a `cancel` entry of the full drawn amount followed
// by an `expire` entry of the part that fell into expired lots (WalletResult::expired_amount).
// Why: a cancel must not extend the life of points (restoring into a fresh lot would), and it
// must not silently lose them either; the two entries tell the user exactly what happened.
//
// Checkout (WalletOpKind::kCheckout): a coupon use and a points use in ONE batch transaction,
// both or neither. The batch locks the wallets (id order), then the checkouts' coupon rows
// (id order; PostgreSQL FOR UPDATE, SQLite: the write lock), decides each coupon with the
// coupon lifecycle's own rules (coupons/rules.hpp: owner, state, validity, minimum order,
// discount) and writes it with the coupon store's own conditional UPDATE, on the wallet
// batch's connection, before the wallet rows and the COMMIT. Points pay for what is left after
// the discount: points <= order_amount - discount_amount, else kInvalidArgument. A coupon that
// fails (kNotFound, kConflict, kInvalidArgument, production's "grant not yet in the store"
// kUnavailable) fails the checkout alone and changes nothing. kCancelCheckout (by the
// checkout's idempotency key, or by its order id: the order's latest checkout) gives both
// back: the coupon to issued (or expired, past its validity), the points to exactly the drawn
// lots (the cancel rule above). The coupon and the
// wallets must live in the same database: the embedded engine's SQLite file, or production's
// PostgreSQL database. See docs/wallet.md ("Checkout with coupons").
#pragma once

#include <cstdint>
#include <exception>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace couponcore {

enum class WalletEntryKind : uint8_t {
  kEarn = 0,
  kUse = 1,
  kCancel = 2,
  kExpire = 3,
  kTransferIn = 4,
  kTransferOut = 5,
};
// "earn", "use", "cancel", "expire", "transfer_in", "transfer_out" (the stored spelling).
const char* wallet_entry_kind_name(WalletEntryKind kind) noexcept;

enum class WalletOpKind : uint8_t {
  kEarn = 0,
  kUse = 1,
  kCancel = 2,
  kTransfer = 3,
  kCheckout = 4,        // a coupon and points for one order, both or neither
  kCancelCheckout = 5,  // gives a checkout's coupon and points back
};

// One operation on a wallet. Build it with the named constructors; submit() checks it.
struct WalletOp {
  WalletOpKind kind = WalletOpKind::kEarn;
  int64_t partner_id = 0;
  std::string user_id;          // the wallet (transfer: the source)
  std::string idempotency_key;  // required, unique per partner
  int64_t amount = 0;           // earn, use, transfer: 1..limits::kAmountMax; checkout: the
                                //   points, 0..order_amount
  std::optional<int64_t> expires_at_us;  // earn: none = never expires
  std::string reason;           // earn, optional free text (limits::kWalletReasonBytesMax)
  std::string order_id;         // use: optional; checkout: required; cancel_checkout: the
                                //   order whose latest checkout is cancelled (or cancel_key)
  int64_t cancel_entry_id = 0;  // cancel: the use's entry id, or
  std::string cancel_key;       //   the use's idempotency key (exactly one of the two);
                                // cancel_checkout: the checkout's idempotency key (or order_id)
  std::string to_user_id;       // transfer: the destination (created when missing)
  int64_t order_amount = 0;     // checkout: 1..limits::kAmountMax (minor units)
  int64_t coupon_id = 0;        // checkout: the coupon to use, 0 for none
  std::string traceparent;  // W3C trace context of the call ("" = none); see docs/tracing.md

  static WalletOp earn(int64_t partner_id, std::string user_id, int64_t amount,
                       std::optional<int64_t> expires_at_us, std::string reason, std::string key);
  static WalletOp use(int64_t partner_id, std::string user_id, int64_t amount, std::string order_id,
                      std::string key);
  static WalletOp cancel_entry(int64_t partner_id, std::string user_id, int64_t use_entry_id,
                               std::string key);
  static WalletOp cancel_by_key(int64_t partner_id, std::string user_id, std::string use_key,
                                std::string key);
  static WalletOp transfer(int64_t partner_id, std::string from_user_id, std::string to_user_id,
                           int64_t amount, std::string key);
  static WalletOp checkout(int64_t partner_id, std::string user_id, std::string order_id,
                           int64_t order_amount, int64_t coupon_id, int64_t points, std::string key);
  static WalletOp cancel_checkout(int64_t partner_id, std::string user_id, std::string checkout_key,
                                  std::string key);
  // Cancels the order's latest checkout (the newest checkout record with this order id).
  static WalletOp cancel_checkout_of_order(int64_t partner_id, std::string user_id, std::string order_id,
                                           std::string key);
};

// The answer to a successful operation (also when replayed from its idempotency record).
struct WalletResult {
  int64_t entry_id = 0;        // earn/use/cancel: the operation's entry; transfer: transfer_out
  int64_t amount = 0;          // that entry's signed amount (use: -amount, cancel: +restored)
  int64_t balance_after = 0;   // the wallet's balance after the operation (transfer: source)
  int64_t expired_amount = 0;  // cancel: restored points that fell into expired lots
  int64_t peer_entry_id = 0;   // transfer: the transfer_in entry of the destination
  int64_t created_at_us = 0;
  bool replayed = false;       // answered from an earlier call's idempotency record
  // checkout and cancel_checkout (the cancel repeats its checkout's order, coupon and amounts).
  // entry_id is the points' use (checkout) or cancel (cancel_checkout) entry, 0 without points.
  std::string order_id;
  int64_t order_amount = 0;
  int64_t coupon_id = 0;        // 0: no coupon
  int64_t discount_amount = 0;  // the coupon's discount
  int64_t points = 0;           // points paid (checkout) or given back (cancel_checkout)
  int64_t payable_amount = 0;   // order_amount - discount_amount - points
  int coupon_state = -1;        // cancel_checkout: the coupon's CouponState after it; else -1
};

struct WalletBalance {
  int64_t total = 0;                 // usable now: remaining points of lots not past their date
  int64_t next_expiry_amount = 0;    // points expiring at next_expiry_at_us (0 if none)
  std::optional<int64_t> next_expiry_at_us;
};

struct WalletEntry {
  int64_t id = 0;
  WalletEntryKind kind = WalletEntryKind::kEarn;
  int64_t amount = 0;  // signed: earn/cancel/transfer_in > 0, use/expire/transfer_out < 0
  int64_t balance_after = 0;
  std::string idempotency_key;  // empty for expire entries
  int64_t ref_entry_id = 0;     // cancel: the use; expire after cancel: the cancel;
                                // transfer_in/out: the other side; else 0
  std::string order_id;
  std::string reason;
  int64_t created_at_us = 0;
};

struct WalletHistoryPage {
  std::vector<WalletEntry> entries;  // newest first
  int64_t next_cursor = 0;           // pass to history() for the next page; 0: no more
};

struct WalletExpireReport {
  int64_t wallets = 0;  // wallets that had something written off
  int64_t points = 0;   // points written off
  int64_t chunks = 0;   // candidate chunks examined (one scan each)
};

struct WalletPurgeReport {
  int64_t deleted = 0;  // idempotency records deleted
  int64_t chunks = 0;   // delete statements run (one short transaction each)
  bool done = false;    // false: chunks_max was reached with records left; run it again
};

// What audit() found. Every count is of violations; ok() when all are zero.
struct WalletAudit {
  int64_t wallets = 0;                   // wallets examined
  int64_t balance_not_lot_sum = 0;       // balance != sum of remaining lot amounts
  int64_t negative = 0;                  // negative balances or lot remainders, remainder > amount
  int64_t balance_not_entry_sum = 0;     // balance != sum of ledger entry amounts
  int64_t running_balance_broken = 0;    // an entry's balance_after != running sum
  int64_t draws_not_entry_amount = 0;    // use/expire/transfer_out entries whose draws != amount
  int64_t lots_not_entry_amount = 0;     // earn/transfer_in entries whose lots != amount
  int64_t lot_drawn_mismatch = 0;        // lot amount - remaining != draws not cancelled
  int64_t orphans = 0;                   // entries, lots, draws, records pointing at nothing
  bool ok() const {
    return balance_not_lot_sum == 0 && negative == 0 && balance_not_entry_sum == 0 &&
           running_balance_broken == 0 && draws_not_entry_amount == 0 &&
           lots_not_entry_amount == 0 && lot_drawn_mismatch == 0 && orphans == 0;
  }
};

// Monotonic counters since open.
struct WalletCounters {
  uint64_t ops = 0;            // operations answered
  uint64_t ops_failed = 0;     // of which answered with an error
  uint64_t replays = 0;        // answered from an idempotency record
  uint64_t batches = 0;        // batches committed
  uint64_t retries = 0;        // batch attempts retried (deadlock, busy, lost connection, race)
  uint64_t isolated = 0;       // batches split into single operations after an unexpected error
  uint64_t max_batch_ops = 0;  // the largest batch so far
  uint64_t queued_ops = 0;     // operations waiting in the engine's queue now (a gauge)
  uint64_t queue_refused = 0;  // submissions refused because the queue stayed full
};

struct WalletOptions {
  std::size_t batch_ops_max = 1024;     // operations per transaction (1..limits::kWalletBatchOpsMax)
  std::size_t queue_ops_max = 100'000;  // queued operations; beyond this submit() waits
  int64_t queue_full_wait_ms = 10'000;  // then throws kUnavailable
  int64_t retry_budget_ms = 30'000;     // a batch retries this long, then answers kUnavailable
  // PostgreSQL: committer threads, each with its own connection and queue, running batches in
  // parallel (1..limits::kWalletCommittersMax). An operation goes to its wallet's committer (a
  // transfer: its source's), so operations on one wallet keep their order and a hot wallet's
  // operations share batches. The embedded store always has one (SQLite has one writer).
  int committers = 2;
  // Write a domain event per entry (points.*) in the batch's transaction (docs/events.md).
  bool events = true;
  // The engine's clock (microseconds since the epoch); tests inject one. Default: now_us().
  std::function<int64_t()> clock_us;
};

// InvalidArgument when an option is out of its range (the engines check this when they open).
void check_wallet_options(const WalletOptions& options);

struct EmbeddedWalletOptions {
  // May be the coupon engine's file. Not ":memory:": the engine opens two connections.
  std::string path = "couponcore.db";
  bool synchronous_full = true;
  WalletOptions wallet;
};

struct PostgresWalletOptions {
  std::string url;  // libpq connection string or postgresql:// URL
  bool migrate = true;  // apply the wallet migrations on open
  std::string application_name = "couponcore-wallet";  // shown in pg_stat_activity
  // The production engine's Redis key prefix: the outbox rows of the wallets' events carry it,
  // so that prefix's relay publishes them (docs/events.md). Empty: rows without a prefix.
  std::string key_prefix;
  WalletOptions wallet;
};

// Runs on the engine's thread, exactly once per submitted operation. On error, result is
// default and error holds a couponcore::Error.
using WalletCallback = std::function<void(WalletResult&& result, std::exception_ptr error)>;

class WalletEngine {
 public:
  virtual ~WalletEngine() = default;
  WalletEngine() = default;
  WalletEngine(const WalletEngine&) = delete;
  WalletEngine& operator=(const WalletEngine&) = delete;

  virtual const char* kind() const noexcept = 0;  // "embedded" or "postgres"

  // Checks op in the caller's thread (throws kInvalidArgument, kClosed, kUnavailable when the
  // queue stays full) and queues it; cb runs later on the engine's thread.
  virtual void submit(WalletOp op, WalletCallback cb) = 0;
  // The blocking faces: throw the operation's Error.
  WalletResult apply(WalletOp op);
  WalletResult earn(int64_t partner_id, const std::string& user_id, int64_t amount,
                    std::optional<int64_t> expires_at_us, const std::string& reason,
                    const std::string& key);
  WalletResult use(int64_t partner_id, const std::string& user_id, int64_t amount,
                   const std::string& order_id, const std::string& key);
  WalletResult cancel(int64_t partner_id, const std::string& user_id, int64_t use_entry_id,
                      const std::string& key);
  WalletResult cancel_by_key(int64_t partner_id, const std::string& user_id,
                             const std::string& use_key, const std::string& key);
  WalletResult transfer(int64_t partner_id, const std::string& from_user_id,
                        const std::string& to_user_id, int64_t amount, const std::string& key);
  // coupon_id 0: no coupon; points 0: no points (the wallet need not exist).
  WalletResult checkout(int64_t partner_id, const std::string& user_id, const std::string& order_id,
                        int64_t order_amount, int64_t coupon_id, int64_t points, const std::string& key);
  WalletResult cancel_checkout(int64_t partner_id, const std::string& user_id,
                               const std::string& checkout_key, const std::string& key);
  WalletResult cancel_checkout_of_order(int64_t partner_id, const std::string& user_id,
                                        const std::string& order_id, const std::string& key);

  // Reads, on their own connection (no queue, no locks; tried once more if the connection was
  // dropped). kNotFound for a wallet never created.
  virtual WalletBalance balance(int64_t partner_id, const std::string& user_id) = 0;
  // Entries newest first, at most limit (1..limits::kWalletHistoryLimitMax), older than cursor
  // (0: from the newest).
  virtual WalletHistoryPage history(int64_t partner_id, const std::string& user_id, int64_t cursor,
                                    int limit) = 0;

  // The expiry job: writes off every lot with expires_at_us <= now_us, scanning chunk_wallets
  // wallets at a time; each wallet is written off inside an ordinary short batch, so no lock
  // is held for long and a crash loses nothing (run it again: it finds what is left).
  virtual WalletExpireReport expire(int64_t now_us, int chunk_wallets = 1000) = 0;

  // Checks the invariants over all wallets of partner_id (or all partners if partner_id < 0).
  virtual WalletAudit audit(int64_t partner_id = -1) = 0;

  // Retention of idempotency records: deletes those created before before_us, chunk_rows per
  // short transaction, at most chunks_max chunks (run it again to go on). Checkout records are
  // kept unless include_checkouts: cancel_checkout finds its checkout by them. After the purge
  // a retry with a purged key is a new operation, and cancel_by_key of a purged use is
  // kNotFound (cancel by entry id still works): keep records longer than any client retries.
  virtual WalletPurgeReport purge_idempotency(int64_t before_us, bool include_checkouts, int chunk_rows = 1000,
                                              int chunks_max = 1000) = 0;

  virtual WalletCounters counters() const = 0;

  // Finishes what was queued, then stops; later calls throw kClosed.
  virtual void close() = 0;
  virtual bool closed() const noexcept = 0;

  // Called on the engine's thread after each batch's callbacks (asyncio wakes its loop once
  // per batch). Set it before the first submit.
  void set_batch_end_hook(std::function<void()> hook) { batch_end_hook_ = std::move(hook); }

 protected:
  void run_batch_end_hook() {
    if (batch_end_hook_) batch_end_hook_();
  }

 private:
  std::function<void()> batch_end_hook_;
};

std::unique_ptr<WalletEngine> open_wallets_embedded(const EmbeddedWalletOptions& options);
std::unique_ptr<WalletEngine> open_wallets_postgres(const PostgresWalletOptions& options);

}  // namespace couponcore
