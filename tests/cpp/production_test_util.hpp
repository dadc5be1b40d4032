// Helpers for the tests against real servers. The servers come from the environment that
// `make test` sets; when they are unreachable the tests fail (they never skip):
//   COUPONCORE_TEST_REDIS_URL           default redis://127.0.0.1:6379/9
//   COUPONCORE_TEST_POSTGRES_URL        a database to use as is; when unset, a throwaway database
//   COUPONCORE_TEST_POSTGRES_ADMIN_URL  is created through this URL (default
//                                       postgresql://postgres@127.0.0.1:5432/postgres), migrated,
//                                       and dropped when the test process exits
//   COUPONCORE_TEST_KEY_PREFIX          prefix of every Redis key (default cctest:); each test adds
//                                       its own unique part on top
#pragma once

#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <mutex>
#include <random>
#include <string>

#include "couponcore/engine.hpp"
#include "postgres/migrations.hpp"
#include "postgres/pg.hpp"
#include "test_util.hpp"

namespace testutil {

inline std::string redis_url() { return env_or("COUPONCORE_TEST_REDIS_URL", "redis://127.0.0.1:6379/9"); }

inline std::string admin_postgres_url() {
  return env_or("COUPONCORE_TEST_POSTGRES_ADMIN_URL", "postgresql://postgres@127.0.0.1:5432/postgres");
}

// Replaces the database name of a postgresql:// URL.
inline std::string with_database(const std::string& url, const std::string& db) {
  const std::size_t scheme = url.find("://");
  if (scheme == std::string::npos) return url + " dbname=" + db;  // key=value conninfo
  const std::size_t path = url.find('/', scheme + 3);
  const std::size_t query = url.find('?', scheme + 3);
  std::string head = url.substr(0, path == std::string::npos ? (query == std::string::npos ? url.size() : query) : path);
  std::string tail = query == std::string::npos ? "" : url.substr(query);
  return head + "/" + db + tail;
}

inline std::string& throwaway_db_name() {
  static std::string name;
  return name;
}

inline void drop_throwaway_db() {
  if (throwaway_db_name().empty()) return;
  try {
    couponcore::pg::Conn admin(admin_postgres_url());
    admin.exec("DROP DATABASE IF EXISTS " + throwaway_db_name() + " WITH (FORCE)");
  } catch (...) {
  }
}

// The database of this test process, migrated. Throws (the test fails) if PostgreSQL is down.
inline std::string postgres_url() {
  static std::mutex mu;
  static std::string url;
  std::lock_guard lock(mu);
  if (!url.empty()) return url;
  std::string given = env_or("COUPONCORE_TEST_POSTGRES_URL", "");
  if (!given.empty()) {
    couponcore::migrate(given);
    url = given;
    return url;
  }
  std::mt19937_64 rng(std::random_device{}());
  std::string db = "couponcore_test_" + std::to_string(::getpid()) + "_" + std::to_string(rng() % 1000000);
  couponcore::pg::Conn admin(admin_postgres_url());
  admin.exec("CREATE DATABASE " + db);
  throwaway_db_name() = db;
  std::atexit(drop_throwaway_db);
  url = with_database(admin_postgres_url(), db);
  couponcore::migrate(url);
  return url;
}

// A key prefix unique to this test run and this test.
inline std::string key_prefix(const std::string& test) {
  static std::mt19937_64 rng(std::random_device{}());
  const auto t = std::chrono::steady_clock::now().time_since_epoch().count();
  return env_or("COUPONCORE_TEST_KEY_PREFIX", "cctest:") + test + ":" + std::to_string(::getpid()) + ":" +
         std::to_string((t ^ rng()) % 100000000) + ":";
}

}  // namespace testutil
