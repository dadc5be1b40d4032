// Helpers for the wallet tests: per-test storage on either backend, a clock the test moves,
// and direct SQL for looking at rows the public API does not show (draws, lots).
//
//   embedded  a fresh SQLite file in the temporary directory, removed afterwards
//   postgres  a fresh schema in the test database (testutil::postgres_url(): the database of
//             COUPONCORE_TEST_POSTGRES_URL, or a throwaway one created through
//             COUPONCORE_TEST_POSTGRES_ADMIN_URL); the engine's URL sets search_path to it.
//             An unreachable server fails the test; it never skips.
#pragma once

#include <gtest/gtest.h>

#include <atomic>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "couponcore/engine.hpp"
#include "couponcore/error.hpp"
#include "couponcore/wallet.hpp"
#include "store/postgres/pg.hpp"
#include "production_test_util.hpp"
#include "store/sqlite/sqlite.hpp"
#include "wallet/wallet_engine.hpp"
#include "test_util.hpp"

namespace testutil {

// Adds `options=-csearch_path=<schema>` to a libpq URL or key=value conninfo.
inline std::string with_search_path(const std::string& url, const std::string& schema) {
  if (url.find("://") == std::string::npos) return url + " options='-csearch_path=" + schema + "'";
  return url + (url.find('?') == std::string::npos ? "?" : "&") + "options=-csearch_path%3D" + schema;
}

class WalletStorage {
 public:
  explicit WalletStorage(std::string backend) : backend_(std::move(backend)) {
    if (backend_ == "embedded") {
      path_ = temp_path("wallet") + ".db";
      return;
    }
    static std::atomic<int> counter{0};
    std::mt19937_64 rng(std::random_device{}());
    schema_ = "wt_" + std::to_string(::getpid()) + "_" + std::to_string(counter++) + "_" +
              std::to_string(rng() % 1000000);
    admin_ = std::make_unique<couponcore::pg::Conn>(postgres_url());
    admin_->exec("CREATE SCHEMA " + schema_);
    url_ = with_search_path(postgres_url(), schema_);
    query_conn_ = std::make_unique<couponcore::pg::Conn>(url_);
  }

  ~WalletStorage() {
    if (backend_ == "embedded") {
      sqlite_.reset();
      remove_db(path_);
      return;
    }
    try {
      query_conn_.reset();
      admin_->exec("DROP SCHEMA IF EXISTS " + schema_ + " CASCADE");
    } catch (...) {
    }
  }

  const std::string& backend() const { return backend_; }
  const std::string& path() const { return path_; }  // embedded
  const std::string& url() const { return url_; }    // postgres

  // The two stores of an engine, for tests that wrap them (wallet/wallet_engine.hpp).
  std::unique_ptr<couponcore::wallet::WalletStore> open_store(bool writer) {
    if (backend_ == "embedded") return couponcore::wallet::open_sqlite_wallet_store(path_, false);
    return couponcore::wallet::open_postgres_wallet_store(url_, "couponcore-wallet-test", writer);
  }

  std::unique_ptr<couponcore::WalletEngine> open(const couponcore::WalletOptions& options) {
    if (backend_ == "embedded") {
      couponcore::EmbeddedWalletOptions o;
      o.path = path_;
      o.synchronous_full = false;  // tests do not need power-loss durability; fsyncs are slow
      o.wallet = options;
      return couponcore::open_wallets_embedded(o);
    }
    couponcore::PostgresWalletOptions o;
    o.url = url_;
    o.wallet = options;
    return couponcore::open_wallets_postgres(o);
  }

  // Rows of a query whose `cols` columns are all integers (NULL reads as 0). Use after open().
  std::vector<std::vector<int64_t>> rows(const std::string& sql, int cols) {
    std::vector<std::vector<int64_t>> out;
    if (backend_ == "embedded") {
      if (!sqlite_) sqlite_ = std::make_unique<couponcore::sqlite::Db>(path_, false);
      couponcore::sqlite::Stmt s(*sqlite_, sql);
      while (s.step()) {
        std::vector<int64_t> row;
        for (int c = 0; c < cols; ++c) row.push_back(s.i64(c));
        out.push_back(std::move(row));
      }
      return out;
    }
    couponcore::pg::Result r = query_conn_->exec(sql);
    for (int i = 0; i < r.rows(); ++i) {
      std::vector<int64_t> row;
      for (int c = 0; c < r.cols(); ++c) row.push_back(r.is_null(i, c) ? 0 : r.i64(i, c));
      out.push_back(std::move(row));
    }
    return out;
  }

  int64_t scalar(const std::string& sql) {
    auto r = rows(sql, 1);
    return r.empty() || r[0].empty() ? 0 : r[0][0];
  }

 private:
  std::string backend_;
  std::string path_;
  std::string schema_;
  std::string url_;
  std::unique_ptr<couponcore::pg::Conn> admin_;
  std::unique_ptr<couponcore::pg::Conn> query_conn_;
  std::unique_ptr<couponcore::sqlite::Db> sqlite_;
};

// A clock the test moves: real time plus an offset.
class TestClock {
 public:
  int64_t now() const { return couponcore::now_us() + offset_us_.load(); }
  void advance_us(int64_t us) { offset_us_ += us; }
  std::function<int64_t()> fn() {
    return [this] { return now(); };
  }

 private:
  std::atomic<int64_t> offset_us_{0};
};

inline constexpr int64_t kHourUs = 3'600'000'000LL;
inline constexpr int64_t kDayUs = 24 * kHourUs;

template <typename Fn>
void expect_error(couponcore::ErrorCode code, Fn&& fn, const char* what = "") {
  try {
    fn();
    ADD_FAILURE() << "no error; expected " << couponcore::error_code_name(code) << " " << what;
  } catch (const couponcore::Error& e) {
    EXPECT_EQ(e.code(), code) << e.what() << " " << what;
  }
}

inline void expect_audit_ok(couponcore::WalletEngine& e, int64_t partner_id = -1) {
  couponcore::WalletAudit a = e.audit(partner_id);
  EXPECT_TRUE(a.ok()) << "balance_not_lot_sum=" << a.balance_not_lot_sum << " negative=" << a.negative
                      << " balance_not_entry_sum=" << a.balance_not_entry_sum
                      << " running_balance_broken=" << a.running_balance_broken
                      << " draws_not_entry_amount=" << a.draws_not_entry_amount
                      << " lots_not_entry_amount=" << a.lots_not_entry_amount
                      << " lot_drawn_mismatch=" << a.lot_drawn_mismatch << " orphans=" << a.orphans;
}

}  // namespace testutil
