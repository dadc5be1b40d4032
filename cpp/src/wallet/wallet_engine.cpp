// The batched wallet engine: a bounded queue, committer threads (one per store connection;
// PostgreSQL may have several, SQLite has one), one transaction per batch.
//
//   submit()   checks the operation in the caller's thread, queues it (waits while the queue
//              holds queue_ops_max operations, then throws kUnavailable)
//   run()      a committer thread: takes up to batch_ops_max operations, process()es them,
//              answers each caller, runs the batch-end hook (on that committer's thread: with
//              several committers the hook may run concurrently)
//   process()  one batch, with retries:
//                - kUnavailable from the store (deadlock 40P01, serialization failure 40001,
//                  SQLITE_BUSY, lost connection) -> roll back, back off (1 ms doubling to
//                  250 ms, with jitter), run the whole batch again, for at most
//                  retry_budget_ms; then every caller gets kUnavailable.
//                - an idempotency key taken by a concurrent batch on other wallets -> retry
//                  at once (the retry sees the other batch's record: replay or kConflict).
//                - anything else (a bug, a constraint the checks should have caught) -> the
//                  batch is split and each operation runs alone, so it costs that one
//                  operation (kInternal), never the batch.
//              A commit whose outcome is unknown (the connection dropped during COMMIT) is
//              resolved by running the batch again: the operations that did commit are found
//              by their idempotency keys and answered from their records, as first answers.
//   run_once() the steps of one attempt, in the order wallet_store.hpp describes.
//
// Reads (balance, history, the expiry scan, audit) use a second store connection behind a
// mutex and never take row locks. expire() feeds internal "write off this wallet" operations
// through the same queue, a chunk of wallets at a time.
#include "wallet/wallet_engine.hpp"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <future>
#include <map>
#include <mutex>
#include <random>
#include <set>
#include <thread>
#include <type_traits>
#include <unordered_map>
#include <unordered_set>

#include "couponcore/engine.hpp"
#include "couponcore/error.hpp"
#include "couponcore/limits.hpp"
#include "util/bounded_queue.hpp"
#include "util/traceparent.hpp"
#include "wallet/batch_apply.hpp"
#include "wallet/wallet_ops.hpp"

namespace couponcore {

// The blocking faces of WalletEngine::submit.
// The error is copied out of its exception_ptr on the engine's thread and thrown anew in the
// caller's: no exception object is shared between the threads (ThreadSanitizer cannot see
// libstdc++'s reference counting of exception_ptr, and nothing needs the sharing).
WalletResult WalletEngine::apply(WalletOp op) {
  auto promise = std::make_shared<std::promise<Answer<WalletResult>>>();
  auto future = promise->get_future();
  submit(std::move(op), [promise](WalletResult&& r, std::exception_ptr error) {
    Answer<WalletResult> a;
    if (error) {
      a.error = error_from(error);
    } else {
      a.value = std::move(r);
    }
    promise->set_value(std::move(a));
  });
  return future.get().take();
}

WalletResult WalletEngine::earn(int64_t partner_id, const std::string& user_id, int64_t amount,
                                std::optional<int64_t> expires_at_us, const std::string& reason,
                                const std::string& key) {
  return apply(WalletOp::earn(partner_id, user_id, amount, expires_at_us, reason, key));
}

WalletResult WalletEngine::use(int64_t partner_id, const std::string& user_id, int64_t amount,
                               const std::string& order_id, const std::string& key) {
  return apply(WalletOp::use(partner_id, user_id, amount, order_id, key));
}

WalletResult WalletEngine::cancel(int64_t partner_id, const std::string& user_id, int64_t use_entry_id,
                                  const std::string& key) {
  return apply(WalletOp::cancel_entry(partner_id, user_id, use_entry_id, key));
}

WalletResult WalletEngine::cancel_by_key(int64_t partner_id, const std::string& user_id,
                                         const std::string& use_key, const std::string& key) {
  return apply(WalletOp::cancel_by_key(partner_id, user_id, use_key, key));
}

WalletResult WalletEngine::transfer(int64_t partner_id, const std::string& from_user_id,
                                    const std::string& to_user_id, int64_t amount,
                                    const std::string& key) {
  return apply(WalletOp::transfer(partner_id, from_user_id, to_user_id, amount, key));
}

WalletResult WalletEngine::checkout(int64_t partner_id, const std::string& user_id, const std::string& order_id,
                                    int64_t order_amount, int64_t coupon_id, int64_t points, const std::string& key) {
  return apply(WalletOp::checkout(partner_id, user_id, order_id, order_amount, coupon_id, points, key));
}

WalletResult WalletEngine::cancel_checkout(int64_t partner_id, const std::string& user_id,
                                           const std::string& checkout_key, const std::string& key) {
  return apply(WalletOp::cancel_checkout(partner_id, user_id, checkout_key, key));
}

WalletResult WalletEngine::cancel_checkout_of_order(int64_t partner_id, const std::string& user_id,
                                                    const std::string& order_id, const std::string& key) {
  return apply(WalletOp::cancel_checkout_of_order(partner_id, user_id, order_id, key));
}

void check_wallet_options(const WalletOptions& o) {
  if (o.batch_ops_max < 1 || o.batch_ops_max > limits::kWalletBatchOpsMax) {
    throw_invalid("batch_ops_max must be 1.." + std::to_string(limits::kWalletBatchOpsMax));
  }
  if (o.queue_ops_max < 1 || o.queue_ops_max > limits::kWalletQueueOpsMax) {
    throw_invalid("queue_ops_max must be 1.." + std::to_string(limits::kWalletQueueOpsMax));
  }
  if (o.queue_full_wait_ms < 0) throw_invalid("queue_full_wait_ms must not be negative");
  if (o.retry_budget_ms < 0) throw_invalid("retry_budget_ms must not be negative");
  if (o.committers < 1 || o.committers > limits::kWalletCommittersMax) {
    throw_invalid("committers must be 1.." + std::to_string(limits::kWalletCommittersMax));
  }
}

namespace wallet {

namespace {

constexpr int64_t kBackoffFirstUs = 1'000;
constexpr int64_t kBackoffMaxUs = 250'000;
// Wallets seen by a committer, key -> id (a wallet is deleted only while it has no entries,
// and check_known_wallets catches that): their batches skip the
// create step and find them by primary key. At the limit the map is cleared and relearned.
constexpr std::size_t kKnownWalletsMax = 100'000;

// Thrown inside an attempt when an idempotency key was taken by a concurrent batch.
struct KeyRace {};

template <typename T>
void sort_unique(std::vector<T>* v) {
  std::sort(v->begin(), v->end());
  v->erase(std::unique(v->begin(), v->end()), v->end());
}

void check_wallet_key(int64_t partner_id, const std::string& user_id) {
  if (partner_id < 0) throw_invalid("partner_id must not be negative");
  limits::check_user_id(user_id);
}

class BatchedWalletEngine final : public WalletEngine {
 public:
  BatchedWalletEngine(const char* kind, std::vector<std::unique_ptr<WalletStore>> writers,
                      std::unique_ptr<WalletStore> reader, const WalletOptions& options)
      : kind_(kind),
        options_(options),
        reader_(std::move(reader)),
        queue_("wallet", std::max<std::size_t>(1, options.queue_ops_max), options.queue_full_wait_ms, std::max<std::size_t>(1, writers.size())) {
    check_wallet_options(options_);
    if (writers.empty()) throw_invalid("a wallet engine needs a writer");
    if (!options_.clock_us) options_.clock_us = [] { return now_us(); };
    for (auto& w : writers) {
      auto c = std::make_unique<Committer>();
      c->lane = committers_.size();
      c->writer = std::move(w);
      committers_.push_back(std::move(c));
    }
    for (auto& c : committers_) {
      Committer* raw = c.get();
      c->thread = std::thread([this, raw] { run(*raw); });
    }
  }

  ~BatchedWalletEngine() override { close(); }

  const char* kind() const noexcept override { return kind_; }

  void submit(WalletOp op, WalletCallback cb) override {
    check_open();
    check_op(op, options_.clock_us());
    trace::normalize_traceparent_in_place(op.traceparent);  // malformed: ""
    const int64_t fp = fingerprint(op);
    enqueue(Pending{std::move(op), fp, std::nullopt, std::move(cb)});
  }

  WalletBalance balance(int64_t partner_id, const std::string& user_id) override {
    check_open();
    check_wallet_key(partner_id, user_id);
    const int64_t now = options_.clock_us();
    std::vector<LotRow> lots = read([&](WalletStore& r) {
      std::optional<int64_t> id = r.find_wallet(WalletKey{partner_id, user_id});
      if (!id) throw_not_found("no wallet for user '" + user_id + "'");
      return r.active_lots(*id);
    });
    WalletBalance b;
    for (const LotRow& l : lots) {
      if (l.expires_at_us && *l.expires_at_us <= now) continue;  // due, not yet written off
      b.total += l.remaining;
      if (!l.expires_at_us) continue;
      if (!b.next_expiry_at_us || *l.expires_at_us < *b.next_expiry_at_us) {
        b.next_expiry_at_us = l.expires_at_us;
        b.next_expiry_amount = 0;
      }
      if (*l.expires_at_us == *b.next_expiry_at_us) b.next_expiry_amount += l.remaining;
    }
    return b;
  }

  WalletHistoryPage history(int64_t partner_id, const std::string& user_id, int64_t cursor,
                            int limit) override {
    check_open();
    check_wallet_key(partner_id, user_id);
    if (limit < 1 || limit > limits::kWalletHistoryLimitMax) {
      throw_invalid("limit must be 1.." + std::to_string(limits::kWalletHistoryLimitMax));
    }
    if (cursor < 0) throw_invalid("cursor must not be negative");
    std::vector<EntryRow> rows = read([&](WalletStore& r) {
      std::optional<int64_t> id = r.find_wallet(WalletKey{partner_id, user_id});
      if (!id) throw_not_found("no wallet for user '" + user_id + "'");
      return r.entries_before(*id, cursor, limit);
    });
    WalletHistoryPage page;
    for (EntryRow& r : rows) {
      page.entries.push_back(WalletEntry{r.id, r.kind, r.amount, r.balance_after,
                                         std::move(r.idempotency_key), r.ref_entry_id,
                                         std::move(r.order_id), std::move(r.reason), r.created_at_us});
    }
    if (static_cast<int>(page.entries.size()) == limit) page.next_cursor = page.entries.back().id;
    return page;
  }

  WalletExpireReport expire(int64_t now_us, int chunk_wallets) override {
    check_open();
    if (chunk_wallets < 1 || chunk_wallets > limits::kWalletExpireChunkMax) {
      throw_invalid("chunk_wallets must be 1.." + std::to_string(limits::kWalletExpireChunkMax));
    }
    WalletExpireReport report;
    int64_t after_wallet_id = 0;
    for (;;) {
      std::vector<ExpireCandidate> chunk = read([&](WalletStore& r) {
        return r.expire_candidates(now_us, after_wallet_id, chunk_wallets);
      });
      if (chunk.empty()) break;
      report.chunks++;
      expire_chunk(chunk, now_us, &report);
      after_wallet_id = chunk.back().wallet_id;
      if (static_cast<int>(chunk.size()) < chunk_wallets) break;
    }
    return report;
  }

  WalletAudit audit(int64_t partner_id) override {
    check_open();
    return read([&](WalletStore& r) { return r.audit(partner_id); });
  }

  WalletPurgeReport purge_idempotency(int64_t before_us, bool include_checkouts, int chunk_rows,
                                      int chunks_max) override {
    check_open();
    if (chunk_rows < 1 || chunk_rows > limits::kWalletPurgeChunkMax) {
      throw_invalid("chunk_rows must be 1.." + std::to_string(limits::kWalletPurgeChunkMax));
    }
    if (chunks_max < 1) throw_invalid("chunks_max must be positive");
    WalletPurgeReport report;
    while (report.chunks < chunks_max) {
      // Each chunk is one statement in its own transaction; a retried one deletes what is left.
      const int64_t n = read([&](WalletStore& r) { return r.purge_idempotency(before_us, include_checkouts, chunk_rows); });
      report.chunks++;
      report.deleted += n;
      if (n < chunk_rows) {
        report.done = true;
        break;
      }
    }
    return report;
  }

  WalletCounters counters() const override {
    WalletCounters k;
    {
      std::lock_guard lock(counters_mu_);
      k = counters_;
    }
    k.queued_ops = queue_.depth();
    k.queue_refused = queue_.refused();
    return k;
  }

  void close() override {
    if (stopping_.exchange(true)) return;
    queue_.close();
    for (auto& c : committers_) {
      if (c->thread.joinable()) c->thread.join();
    }
    closed_ = true;
  }

  bool closed() const noexcept override { return closed_; }

 private:
  struct Pending {
    WalletOp op;
    int64_t fingerprint = 0;
    std::optional<int64_t> expire_cutoff_us;  // set: an internal write-off operation
    WalletCallback cb;
  };

  // One committer thread with its own store connection and its own queue. An operation goes to
  // the committer of its wallet (a hash of partner and user; a transfer: of its source), so a
  // hot wallet's operations share big batches on one connection instead of fighting over the
  // row lock, and operations on one wallet keep their order. Batches of different committers
  // that share wallets (transfer destinations) wait on each other's row locks, taken in id
  // order, so they never deadlock.
  struct Committer {
    std::unique_ptr<WalletStore> writer;
    std::size_t lane = 0;  // its lane of queue_
    std::map<WalletKey, int64_t> known_wallets;  // key -> id, seen in batches (kKnownWalletsMax)
    std::mt19937_64 rng{std::random_device{}()};
    std::thread thread;
  };

  Committer& committer_of(const WalletOp& op) {
    if (committers_.size() == 1) return *committers_[0];
    const std::size_t h = std::hash<std::string>{}(op.user_id) ^ (std::hash<int64_t>{}(op.partner_id) * 31);
    return *committers_[h % committers_.size()];
  }

  // Reads on the reader connection, one caller at a time. A read that finds its connection
  // gone (an idle connection dropped, a server restart) or the file busy is tried once more:
  // reads change nothing, and the store reconnects on its next statement.
  template <typename Fn>
  std::invoke_result_t<Fn&, WalletStore&> read(Fn&& fn) {
    std::lock_guard lock(reader_mu_);
    try {
      return fn(*reader_);
    } catch (const Error& e) {
      if (e.code() != ErrorCode::kUnavailable) throw;
    }
    return fn(*reader_);
  }

  void check_open() const {
    if (stopping_) throw Error(ErrorCode::kClosed, "the wallet engine is closed");
  }

  void enqueue(Pending&& p) {
    const std::size_t lane = committer_of(p.op).lane;
    queue_.push(std::move(p), 1, lane);
  }

  void expire_chunk(const std::vector<ExpireCandidate>& chunk, int64_t cutoff_us, WalletExpireReport* report) {
    struct Wait {
      std::mutex mu;
      std::condition_variable cv;
      std::size_t left = 0;
      std::exception_ptr error;
    };
    auto wait = std::make_shared<Wait>();
    wait->left = chunk.size();
    std::size_t queued = 0;
    std::exception_ptr enqueue_error;
    for (const ExpireCandidate& c : chunk) {
      WalletOp op;
      op.partner_id = c.key.partner_id;
      op.user_id = c.key.user_id;
      try {
        enqueue(Pending{std::move(op), 0, cutoff_us, [wait, report](WalletResult&& r, std::exception_ptr e) {
                          std::lock_guard lock(wait->mu);
                          if (e && !wait->error) wait->error = e;
                          if (!e && r.amount < 0) {
                            report->wallets++;
                            report->points -= r.amount;
                          }
                          if (--wait->left == 0) wait->cv.notify_all();
                        }});
      } catch (...) {
        enqueue_error = std::current_exception();  // closed, or the queue stayed full
        break;
      }
      ++queued;
    }
    std::unique_lock lock(wait->mu);
    wait->left -= chunk.size() - queued;
    wait->cv.wait(lock, [&] { return wait->left == 0; });
    if (enqueue_error) std::rethrow_exception(enqueue_error);
    if (wait->error) std::rethrow_exception(wait->error);
  }

  void run(Committer& c) {
    std::vector<std::pair<Pending, std::size_t>> taken;
    std::vector<Pending> batch;
    while (queue_.pop(&taken, options_.batch_ops_max, c.lane)) {
      for (auto& [p, one] : taken) batch.push_back(std::move(p));
      taken.clear();
      process(c, batch);
      batch.clear();
      run_batch_end_hook();
    }
  }

  void process(Committer& c, std::vector<Pending>& batch) {
    using Clock = std::chrono::steady_clock;
    const auto deadline = Clock::now() + std::chrono::milliseconds(options_.retry_budget_ms);
    int64_t backoff_us = kBackoffFirstUs;
    std::set<IdemKey> maybe_committed;
    for (;;) {
      std::vector<IdemKey> written;
      bool committing = false;
      std::exception_ptr unexpected;
      try {
        std::vector<OpOutcome> outcomes = run_once(c, batch, &written, &committing);
        for (std::size_t i = 0; i < batch.size(); ++i) {
          OpOutcome& o = outcomes[i];
          if (o.result.replayed &&
              maybe_committed.count(IdemKey{batch[i].op.partner_id, batch[i].op.idempotency_key})) {
            o.result.replayed = false;  // our own first answer, found after an unknown commit
          }
        }
        answer(batch, outcomes);
        return;
      } catch (const KeyRace&) {
        c.writer->rollback();
        count_retry();
        if (Clock::now() < deadline) continue;
        fail_all(batch, Error(ErrorCode::kUnavailable, "idempotency keys kept racing; try again"));
        return;
      } catch (const Error& e) {
        c.writer->rollback();
        if (committing) maybe_committed.insert(written.begin(), written.end());
        if (e.code() != ErrorCode::kUnavailable) {
          unexpected = std::current_exception();
        } else {
          count_retry();
          if (Clock::now() + std::chrono::microseconds(backoff_us) >= deadline) {
            fail_all(batch, Error(ErrorCode::kUnavailable,
                                  std::string("the wallet store stayed unavailable: ") + e.what()));
            return;
          }
          sleep_with_jitter(c, backoff_us);
          backoff_us = std::min(backoff_us * 2, kBackoffMaxUs);
          continue;
        }
      } catch (...) {
        c.writer->rollback();
        if (committing) maybe_committed.insert(written.begin(), written.end());
        unexpected = std::current_exception();
      }
      isolate_or_fail(c, batch, unexpected);
      return;
    }
  }

  // An unexpected failure: run each operation alone, so that only the one that fails fails.
  void isolate_or_fail(Committer& c, std::vector<Pending>& batch, std::exception_ptr error) {
    if (batch.size() == 1) {
      std::string what = "unexpected failure";
      try {
        std::rethrow_exception(error);
      } catch (const std::exception& e) {
        what = e.what();
      } catch (...) {
      }
      fail_all(batch, Error(ErrorCode::kInternal, "wallet batch failed: " + what));
      return;
    }
    {
      std::lock_guard lock(counters_mu_);
      counters_.isolated++;
    }
    for (Pending& p : batch) {
      std::vector<Pending> one;
      one.push_back(std::move(p));
      process(c, one);
    }
  }

  std::vector<OpOutcome> run_once(Committer& c, std::vector<Pending>& batch, std::vector<IdemKey>* written,
                                  bool* committing) {
    const int64_t now = options_.clock_us();
    BatchKeys keys;
    std::vector<int64_t> target_ids;
    collect_keys(c, batch, &keys, &target_ids);
    std::vector<std::pair<WalletKey, int64_t>> batch_known = split_known(c, &keys);

    BatchRead read = c.writer->begin_batch(keys, now);
    check_known_wallets(c, batch_known, read.wallets);
    std::vector<std::pair<WalletKey, int64_t>> seen;
    seen.reserve(read.wallets.size());
    for (const WalletRow& w : read.wallets) seen.emplace_back(WalletKey{w.partner_id, w.user_id}, w.id);
    std::vector<int64_t> created = created_ids(keys.create, seen);
    BatchLoad load{std::move(read.wallets), std::move(read.lots), std::move(read.idempotency), {}, {}};
    std::vector<int64_t> coupon_ids;
    load_order_checkouts(c, batch, &load.idempotency, &target_ids, &coupon_ids);
    add_keyed_targets(batch, load.idempotency, &target_ids);
    if (!target_ids.empty()) load.targets = c.writer->load_cancel_targets(target_ids);
    add_coupons(batch, load.idempotency, &coupon_ids);
    if (!coupon_ids.empty()) load.coupons = c.writer->lock_coupons(coupon_ids);

    BatchApplier applier(now, std::move(load));
    std::vector<BatchOp> ops;
    ops.reserve(batch.size());
    for (const Pending& p : batch) ops.push_back(BatchOp{&p.op, p.fingerprint, p.expire_cutoff_us});
    std::vector<OpOutcome> outcomes = applier.apply(ops);

    std::vector<int64_t>& entry_ids = read.entry_ids;
    std::vector<int64_t>& lot_ids = read.lot_ids;
    if (applier.entries_needed() > entry_ids.size() || applier.lots_needed() > lot_ids.size()) {
      const std::size_t more_entries = applier.entries_needed() - std::min(applier.entries_needed(), entry_ids.size());
      const std::size_t more_lots = applier.lots_needed() - std::min(applier.lots_needed(), lot_ids.size());
      c.writer->reserve_ids(more_entries, more_lots, &entry_ids, &lot_ids);
    }
    std::sort(entry_ids.begin(), entry_ids.end());
    std::sort(lot_ids.begin(), lot_ids.end());
    entry_ids.resize(applier.entries_needed());  // unused reservations are gaps in the ids
    lot_ids.resize(applier.lots_needed());
    WalletChanges changes = applier.finish(entry_ids, lot_ids, &outcomes);
    changes.drop_wallets = unused_wallets(created, changes.entries);
    if (!changes.drop_wallets.empty()) {
      std::erase_if(seen, [&](const std::pair<WalletKey, int64_t>& s) {
        return std::binary_search(changes.drop_wallets.begin(), changes.drop_wallets.end(), s.second);
      });
    }
    *written = applier.written_keys();
    *committing = true;
    if (!c.writer->commit_changes(changes)) throw KeyRace{};
    remember_wallets(c, seen);
    return outcomes;
  }

  // The ids of the wallets begin_batch was asked to create (when missing). Each must be there:
  // a concurrent batch may have deleted one it had created (WalletChanges::drop_wallets) after
  // our create step found it; then the batch runs again (and creates it).
  static std::vector<int64_t> created_ids(const std::vector<WalletKey>& create,
                                          const std::vector<std::pair<WalletKey, int64_t>>& seen) {
    std::vector<int64_t> ids;
    if (create.empty()) return ids;
    std::map<WalletKey, int64_t> by_key(seen.begin(), seen.end());
    for (const WalletKey& k : create) {
      auto it = by_key.find(k);
      if (it == by_key.end()) {
        throw Error(ErrorCode::kUnavailable, "a new wallet was removed by a concurrent batch; retrying");
      }
      ids.push_back(it->second);
    }
    sort_unique(&ids);
    return ids;
  }

  // Of the wallets the batch created, those that got no entry: every operation that named them
  // was refused. The store deletes them (if they hold no entries at all), so a refused
  // operation leaves no wallet row behind.
  static std::vector<int64_t> unused_wallets(const std::vector<int64_t>& created, const std::vector<EntryRow>& entries) {
    if (created.empty()) return {};
    std::unordered_set<int64_t> used;
    for (const EntryRow& e : entries) used.insert(e.wallet_id);
    std::vector<int64_t> out;
    for (int64_t id : created) {
      if (!used.count(id)) out.push_back(id);
    }
    return out;
  }

  void collect_keys(Committer& c, const std::vector<Pending>& batch, BatchKeys* keys,
                    std::vector<int64_t>* target_ids) {
    std::size_t new_lots_guess = 0;
    for (const Pending& p : batch) {
      const WalletOp& op = p.op;
      keys->wallets.push_back(WalletKey{op.partner_id, op.user_id});
      if (p.expire_cutoff_us) continue;
      keys->idempotency.push_back(IdemKey{op.partner_id, op.idempotency_key});
      switch (op.kind) {
        case WalletOpKind::kEarn:
          keys->create.push_back(keys->wallets.back());
          new_lots_guess += 1;
          break;
        case WalletOpKind::kTransfer:
          keys->wallets.push_back(WalletKey{op.partner_id, op.to_user_id});
          keys->create.push_back(keys->wallets.back());
          new_lots_guess += 2;
          break;
        case WalletOpKind::kCancel:
          if (op.cancel_entry_id > 0) {
            target_ids->push_back(op.cancel_entry_id);
          } else {
            keys->idempotency.push_back(IdemKey{op.partner_id, op.cancel_key});
          }
          break;
        case WalletOpKind::kCancelCheckout:  // by order id: load_order_checkouts
          if (!op.cancel_key.empty()) keys->idempotency.push_back(IdemKey{op.partner_id, op.cancel_key});
          break;
        case WalletOpKind::kUse: case WalletOpKind::kCheckout: break;
      }
    }
    sort_unique(&keys->wallets);
    sort_unique(&keys->idempotency);
    std::erase_if(keys->create, [&](const WalletKey& k) { return c.known_wallets.count(k) > 0; });
    sort_unique(&keys->create);
    // At most two entries per operation (cancel + expire, transfer out + in) and one write-off
    // per wallet; a transfer may need more lots than guessed (reserve_ids tops up).
    keys->reserve_entries = 2 * batch.size() + keys->wallets.size();
    keys->reserve_lots = new_lots_guess;
  }

  // Cancels of an order's checkout: the order's latest committed checkout record (read in the
  // batch transaction, after the wallet locks) joins `records`, and its points' entry and its
  // coupon join the batch's cancel targets and coupons, so they are loaded and locked with the
  // others. The applier decides by order id (BatchApplier::latest_checkout_of): a checkout made
  // earlier in this very batch comes after the committed ones.
  void load_order_checkouts(Committer& c, const std::vector<Pending>& batch, std::vector<IdemRow>* records,
                            std::vector<int64_t>* target_ids, std::vector<int64_t>* coupon_ids) {
    std::vector<std::pair<int64_t, std::string>> orders;
    for (const Pending& p : batch) {
      if (!p.expire_cutoff_us && p.op.kind == WalletOpKind::kCancelCheckout && !p.op.order_id.empty()) {
        orders.emplace_back(p.op.partner_id, p.op.order_id);
      }
    }
    if (orders.empty()) return;
    sort_unique(&orders);
    std::vector<IdemRow> found = c.writer->load_checkouts_of_orders(orders);
    std::map<std::pair<int64_t, std::string>, const IdemRow*> latest;
    for (const IdemRow& r : found) {
      const IdemRow*& best = latest[{r.partner_id, r.result.order_id}];
      if (!best || later_checkout(r, *best)) best = &r;
    }
    for (const auto& [order, r] : latest) {
      const bool known = std::any_of(records->begin(), records->end(), [&](const IdemRow& x) {
        return x.partner_id == r->partner_id && x.key == r->key;
      });
      if (!known) records->push_back(*r);
      if (r->result.entry_id > 0) target_ids->push_back(r->result.entry_id);
      if (r->result.coupon_id != 0) coupon_ids->push_back(r->result.coupon_id);
    }
  }

  // The coupons the batch's checkouts name, and those of the checkouts it cancels by key (in
  // their records), added to `ids`, which ends sorted: the order lock_coupons locks them in.
  static void add_coupons(const std::vector<Pending>& batch, const std::vector<IdemRow>& records,
                          std::vector<int64_t>* ids) {
    for (const Pending& p : batch) {
      if (p.expire_cutoff_us) continue;
      if (p.op.kind == WalletOpKind::kCheckout && p.op.coupon_id != 0) ids->push_back(p.op.coupon_id);
      if (p.op.kind != WalletOpKind::kCancelCheckout) continue;
      for (const IdemRow& r : records) {
        if (r.partner_id == p.op.partner_id && r.key == p.op.cancel_key && r.kind == WalletOpKind::kCheckout &&
            r.result.coupon_id != 0) {
          ids->push_back(r.result.coupon_id);
        }
      }
    }
    sort_unique(ids);
  }

  // Cancels by idempotency key: the use's entry id is in its record (a checkout's: its points).
  static void add_keyed_targets(const std::vector<Pending>& batch, const std::vector<IdemRow>& records,
                                std::vector<int64_t>* target_ids) {
    for (const Pending& p : batch) {
      if (p.expire_cutoff_us || p.op.cancel_key.empty()) continue;
      const bool cancel = p.op.kind == WalletOpKind::kCancel;
      const bool cancel_checkout = p.op.kind == WalletOpKind::kCancelCheckout;
      if (!cancel && !cancel_checkout) continue;
      for (const IdemRow& r : records) {
        if (r.partner_id != p.op.partner_id || r.key != p.op.cancel_key || r.result.entry_id <= 0) continue;
        if ((cancel && r.kind == WalletOpKind::kUse) || (cancel_checkout && r.kind == WalletOpKind::kCheckout)) {
          target_ids->push_back(r.result.entry_id);
        }
      }
    }
    sort_unique(target_ids);
  }

  // Splits keys->wallets into the ids the committer knows and the keys it does not; returns
  // the known (key, id) pairs for check_known_wallets.
  static std::vector<std::pair<WalletKey, int64_t>> split_known(const Committer& c, BatchKeys* keys) {
    std::vector<std::pair<WalletKey, int64_t>> known;
    for (const WalletKey& k : keys->wallets) {
      auto it = c.known_wallets.find(k);
      if (it == c.known_wallets.end()) {
        keys->unknown.push_back(k);
      } else {
        known.emplace_back(k, it->second);
        keys->known_ids.push_back(it->second);
      }
    }
    sort_unique(&keys->known_ids);
    return known;
  }

  // Every wallet looked up by a known id must have come back as that key's wallet. A database
  // reset under a running engine breaks this, and so does a wallet without entries deleted by
  // another engine's batch (WalletChanges::drop_wallets): forget what the committer knows and
  // run the batch again, by keys.
  static void check_known_wallets(Committer& c, const std::vector<std::pair<WalletKey, int64_t>>& known,
                                  const std::vector<WalletRow>& rows) {
    if (known.empty()) return;
    std::unordered_map<int64_t, const WalletRow*> by_id;
    for (const WalletRow& w : rows) by_id.emplace(w.id, &w);
    for (const auto& [key, id] : known) {
      auto it = by_id.find(id);
      if (it == by_id.end() || it->second->partner_id != key.partner_id || it->second->user_id != key.user_id) {
        c.known_wallets.clear();
        throw Error(ErrorCode::kUnavailable, "a wallet id known to the engine no longer names its wallet; retrying");
      }
    }
  }

  static void remember_wallets(Committer& c, const std::vector<std::pair<WalletKey, int64_t>>& seen) {
    if (c.known_wallets.size() + seen.size() > kKnownWalletsMax) c.known_wallets.clear();
    c.known_wallets.insert(seen.begin(), seen.end());
  }

  void answer(std::vector<Pending>& batch, std::vector<OpOutcome>& outcomes) {
    {
      std::lock_guard lock(counters_mu_);
      counters_.batches++;
      counters_.max_batch_ops = std::max<uint64_t>(counters_.max_batch_ops, batch.size());
      for (const OpOutcome& o : outcomes) {
        counters_.ops++;
        if (o.error) counters_.ops_failed++;
        if (o.result.replayed) counters_.replays++;
      }
    }
    // The error is moved into the callback: once the caller holds it, the engine keeps no
    // reference (the last one is released on the caller's side).
    for (std::size_t i = 0; i < batch.size(); ++i) {
      call(batch[i], std::move(outcomes[i].result), std::move(outcomes[i].error));
    }
  }

  void fail_all(std::vector<Pending>& batch, const Error& error) {
    {
      std::lock_guard lock(counters_mu_);
      counters_.ops += batch.size();
      counters_.ops_failed += batch.size();
    }
    for (Pending& p : batch) call(p, WalletResult{}, std::make_exception_ptr(error));
  }

  // Callbacks must not throw; if one does, the engine's thread survives it.
  static void call(Pending& p, WalletResult&& r, std::exception_ptr e) {
    try {
      p.cb(std::move(r), std::move(e));
    } catch (...) {
    }
  }

  void count_retry() {
    std::lock_guard lock(counters_mu_);
    counters_.retries++;
  }

  static void sleep_with_jitter(Committer& c, int64_t backoff_us) {
    std::uniform_int_distribution<int64_t> jitter(backoff_us / 2, backoff_us);
    std::this_thread::sleep_for(std::chrono::microseconds(jitter(c.rng)));
  }

  const char* kind_;
  WalletOptions options_;
  std::mutex reader_mu_;
  std::unique_ptr<WalletStore> reader_;

  BoundedQueue<Pending> queue_;  // one lane per committer; queue_ops_max over all of them
  std::atomic<bool> stopping_{false};
  std::atomic<bool> closed_{false};
  std::vector<std::unique_ptr<Committer>> committers_;

  mutable std::mutex counters_mu_;
  WalletCounters counters_;
};

}  // namespace

std::unique_ptr<WalletEngine> make_batched_engine(const char* kind,
                                                  std::vector<std::unique_ptr<WalletStore>> writers,
                                                  std::unique_ptr<WalletStore> reader,
                                                  const WalletOptions& options) {
  return std::make_unique<BatchedWalletEngine>(kind, std::move(writers), std::move(reader), options);
}

}  // namespace wallet
}  // namespace couponcore
