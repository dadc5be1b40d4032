// Wallet uses per second with many concurrent callers: couponcore's batched wallet engine
// against one transaction per operation (SELECT ... FOR UPDATE, UPDATE, INSERT, COMMIT on its
// own connection per caller, the way an application would write it), on
//   uniform  10,000 wallets, each use on a random one
//   hot      every use on the same wallet
// Both sides commit every acknowledged operation (PostgreSQL's default synchronous_commit;
// SQLite synchronous=FULL).
//
//   COUPONCORE_BENCH_POSTGRES_URL  (default postgresql://postgres@127.0.0.1:5432/postgres)
//   build/cpp/couponcore_bench --benchmark_filter='Wallet|PerOpTx'
// BM_WalletUse_Postgres_*/N: the engine with N committer threads (connections).
// Each run uses a fresh schema (wallet_bench_<pid>), dropped at the end.
#include <benchmark/benchmark.h>
#include <unistd.h>

#include <atomic>
#include <condition_variable>
#include <cstdlib>
#include <filesystem>
#include <memory>
#include <mutex>
#include <random>
#include <string>

#include "couponcore/engine.hpp"
#include "couponcore/limits.hpp"
#include "couponcore/wallet.hpp"
#include "store/postgres/pg.hpp"

using namespace couponcore;

namespace {

constexpr int kWallets = 10'000;
constexpr int64_t kPartner = 1;

std::string base_url() {
  const char* v = std::getenv("COUPONCORE_BENCH_POSTGRES_URL");
  return v && *v ? v : "postgresql://postgres@127.0.0.1:5432/postgres";
}

std::string schema() { return "wallet_bench_" + std::to_string(::getpid()); }

std::string schema_url() {
  const std::string url = base_url();
  if (url.find("://") == std::string::npos) return url + " options='-csearch_path=" + schema() + "'";
  return url + (url.find('?') == std::string::npos ? "?" : "&") + "options=-csearch_path%3D" + schema();
}

std::string sqlite_path() {
  return (std::filesystem::temp_directory_path() / ("wallet_bench_" + std::to_string(::getpid()) + ".db")).string();
}

struct Shared {
  std::unique_ptr<WalletEngine> engine;
  std::atomic<uint64_t> seq{0};
};
Shared g;

void create_schema() {
  pg::Conn admin(base_url());
  admin.exec("DROP SCHEMA IF EXISTS " + schema() + " CASCADE");
  admin.exec("CREATE SCHEMA " + schema());
}

void drop_schema() {
  pg::Conn admin(base_url());
  admin.exec("DROP SCHEMA IF EXISTS " + schema() + " CASCADE");
}

// Funds the wallets through the engine itself, asynchronously (so it batches).
void fund(WalletEngine& e, bool hot) {
  std::mutex mu;
  std::condition_variable cv;
  int left = hot ? 1 : kWallets;
  for (int i = 0; i < (hot ? 1 : kWallets); ++i) {
    const std::string user = hot ? "hot" : "w" + std::to_string(i);
    e.submit(WalletOp::earn(kPartner, user, hot ? limits::kAmountMax : 1'000'000, std::nullopt, "", "fund-" + user),
             [&](WalletResult&&, std::exception_ptr) {
               std::lock_guard lock(mu);
               if (--left == 0) cv.notify_all();
             });
  }
  std::unique_lock lock(mu);
  cv.wait(lock, [&] { return left == 0; });
}

void setup_engine(bool postgres, bool hot, int committers) {
  WalletOptions o;
  o.batch_ops_max = 1024;
  o.committers = committers;
  if (postgres) {
    create_schema();
    PostgresWalletOptions p;
    p.url = schema_url();
    p.wallet = o;
    g.engine = open_wallets_postgres(p);
  } else {
    std::filesystem::remove(sqlite_path());
    EmbeddedWalletOptions s;
    s.path = sqlite_path();
    s.synchronous_full = true;
    s.wallet = o;
    g.engine = open_wallets_embedded(s);
  }
  fund(*g.engine, hot);
}

void teardown_engine(bool postgres) {
  g.engine.reset();
  if (postgres) {
    drop_schema();
  } else {
    for (const char* suffix : {"", "-wal", "-shm"}) std::filesystem::remove(sqlite_path() + suffix);
  }
}

void run_uses(benchmark::State& state, bool hot) {
  std::mt19937_64 rng(static_cast<uint64_t>(state.thread_index()) + 1);
  for (auto _ : state) {
    const std::string user = hot ? "hot" : "w" + std::to_string(rng() % kWallets);
    const std::string key = "u" + std::to_string(g.seq.fetch_add(1));
    g.engine->use(kPartner, user, 1, "", key);
  }
  state.SetItemsProcessed(state.iterations());
}

void BM_WalletUse_Postgres_Uniform(benchmark::State& state) { run_uses(state, false); }
void BM_WalletUse_Postgres_Hot(benchmark::State& state) { run_uses(state, true); }
void BM_WalletUse_Embedded_Uniform(benchmark::State& state) { run_uses(state, false); }
void BM_WalletUse_Embedded_Hot(benchmark::State& state) { run_uses(state, true); }

// ---- the baseline: one PostgreSQL transaction per use, one connection per caller ----------

void setup_baseline(bool hot) {
  create_schema();
  pg::Conn c(schema_url());
  c.exec("CREATE TABLE bench_wallets (id bigint PRIMARY KEY, balance bigint NOT NULL CHECK (balance >= 0));"
         "CREATE TABLE bench_ledger (id bigserial PRIMARY KEY, wallet_id bigint NOT NULL REFERENCES bench_wallets(id),"
         " amount bigint NOT NULL, idempotency_key text NOT NULL UNIQUE, created_at_us bigint NOT NULL)");
  c.exec("INSERT INTO bench_wallets SELECT g, $1 FROM generate_series(0, $2) g",
         pg::Params().add(limits::kAmountMax).add(int64_t{hot ? 0 : kWallets - 1}));
}

void run_baseline(benchmark::State& state, bool hot) {
  pg::Conn c(schema_url());
  std::mt19937_64 rng(static_cast<uint64_t>(state.thread_index()) + 1);
  for (auto _ : state) {
    const int64_t id = hot ? 0 : static_cast<int64_t>(rng() % kWallets);
    const std::string key = "b" + std::to_string(g.seq.fetch_add(1));
    for (;;) {
      try {
        pg::Tx tx(c);
        pg::Result r = c.exec_prepared("lock", "SELECT balance FROM bench_wallets WHERE id = $1 FOR UPDATE",
                                       pg::Params().add(id));
        if (r.i64(0, 0) < 1) break;
        c.exec_prepared("upd", "UPDATE bench_wallets SET balance = balance - 1 WHERE id = $1", pg::Params().add(id));
        c.exec_prepared("ins",
                        "INSERT INTO bench_ledger(wallet_id, amount, idempotency_key, created_at_us) VALUES ($1, -1, $2, $3)",
                        pg::Params().add(id).add(key).add(now_us()));
        tx.commit();
        break;
      } catch (const pg::PgError& e) {
        if (!e.retryable()) throw;
      }
    }
  }
  state.SetItemsProcessed(state.iterations());
}

void BM_PerOpTx_Postgres_Uniform(benchmark::State& state) { run_baseline(state, false); }
void BM_PerOpTx_Postgres_Hot(benchmark::State& state) { run_baseline(state, true); }

}  // namespace

#define CC_WALLET_BENCH(fn, setup, teardown)                                                  \
  BENCHMARK(fn)->Setup(setup)->Teardown(teardown)->UseRealTime()->MinTime(3.0)->Threads(64)

// Argument: committer threads (connections) of the engine.
CC_WALLET_BENCH(BM_WalletUse_Postgres_Uniform, [](const benchmark::State& s) { setup_engine(true, false, static_cast<int>(s.range(0))); },
                [](const benchmark::State&) { teardown_engine(true); })->Arg(1)->Arg(2)->Arg(4);
CC_WALLET_BENCH(BM_WalletUse_Postgres_Hot, [](const benchmark::State& s) { setup_engine(true, true, static_cast<int>(s.range(0))); },
                [](const benchmark::State&) { teardown_engine(true); })->Arg(1)->Arg(2)->Arg(4);
CC_WALLET_BENCH(BM_PerOpTx_Postgres_Uniform, [](const benchmark::State&) { setup_baseline(false); },
                [](const benchmark::State&) { drop_schema(); });
CC_WALLET_BENCH(BM_PerOpTx_Postgres_Hot, [](const benchmark::State&) { setup_baseline(true); },
                [](const benchmark::State&) { drop_schema(); });
CC_WALLET_BENCH(BM_WalletUse_Embedded_Uniform, [](const benchmark::State&) { setup_engine(false, false, 1); },
                [](const benchmark::State&) { teardown_engine(false); });
CC_WALLET_BENCH(BM_WalletUse_Embedded_Hot, [](const benchmark::State&) { setup_engine(false, true, 1); },
                [](const benchmark::State&) { teardown_engine(false); });
