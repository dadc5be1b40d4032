// Helpers for the tests against real servers. The servers come from the environment that
// `make test` sets; when they are unreachable the tests fail (they never skip):
//   COUPONCORE_TEST_REDIS_URL           default redis://127.0.0.1:6379/9
//   COUPONCORE_TEST_POSTGRES_URL        a database to use as is (scripts/with-test-env.sh sets it);
//                                       when unset, a throwaway database is created through
//   COUPONCORE_TEST_POSTGRES_ADMIN_URL  (default postgresql://postgres@127.0.0.1:5432/postgres),
//                                       migrated, and dropped when the test process exits
//   COUPONCORE_TEST_KEY_PREFIX          prefix of every Redis key (default cctest:); each test adds
//                                       its own unique part on top
//   COUPONCORE_TEST_REDIS_CLUSTER       redis+cluster://... (scripts/cluster.sh); the cluster tests
//                                       skip when it is unset
#pragma once

#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <mutex>
#include <random>
#include <string>

#include <gtest/gtest.h>
#include <hiredis/hiredis.h>

#include <cctype>

#include "couponcore/engine.hpp"
#include "redis/cluster.hpp"
#include "redis/redis.hpp"
#include "store/postgres/migrations.hpp"
#include "store/postgres/pg.hpp"
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
  // couponcore_test_<epoch>_<pid>: the name scripts/with-test-env.sh uses, so its sweep drops
  // the database if this process dies before its atexit drop.
  const auto epoch_s = std::chrono::duration_cast<std::chrono::seconds>(
                           std::chrono::system_clock::now().time_since_epoch()).count();
  std::string db = "couponcore_test_" + std::to_string(epoch_s) + "_" + std::to_string(::getpid());
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

// Deletes every key under a prefix (SCAN MATCH + UNLINK); the prefixes carry no glob characters.
inline void delete_keys(const std::string& prefix) {
  couponcore::redis::RedisConn conn(couponcore::redis::RedisUrl::parse(redis_url()), {});
  std::string cursor = "0";
  do {
    couponcore::redis::Reply r = conn.command_checked(
        couponcore::redis::Args{"SCAN"}.add(cursor).add("MATCH").add(prefix + "*").add("COUNT").add("1000"), "SCAN");
    cursor = std::string(couponcore::redis::reply_str(r.at(0)));
    const redisReply* keys = r.at(1);
    if (keys && keys->elements > 0) {
      couponcore::redis::Args del{"UNLINK"};
      for (std::size_t i = 0; i < keys->elements; ++i) del.add(couponcore::redis::reply_str(keys->element[i]));
      conn.command_checked(del, "UNLINK");
    }
  } while (cursor != "0");
}

inline std::string cluster_url() { return env_or("COUPONCORE_TEST_REDIS_CLUSTER", ""); }

// Every key under prefix on every master of the test cluster (one UNLINK per key: the keys of
// one call must share a slot).
inline void delete_cluster_keys(const std::string& prefix) {
  couponcore::redis::RedisConn c(couponcore::redis::RedisUrl::parse(cluster_url()), {});
  c.ensure_connected();
  for (const std::string& addr : c.cluster()->master_addrs()) {
    couponcore::redis::RedisConn m(couponcore::redis::RedisUrl::parse("redis://" + addr), {});
    std::string cursor = "0";
    do {
      couponcore::redis::Reply r = m.command_checked(
          couponcore::redis::Args{"SCAN"}.add(cursor).add("MATCH").add(prefix + "*").add("COUNT").add("1000"), "SCAN");
      cursor = std::string(couponcore::redis::reply_str(r.at(0)));
      const redisReply* keys = r.at(1);
      for (std::size_t i = 0; keys && i < keys->elements; ++i) {
        m.append(couponcore::redis::Args{"UNLINK"}.add(couponcore::redis::reply_str(keys->element[i])));
      }
      for (std::size_t i = 0; keys && i < keys->elements; ++i) m.read_reply();
    } while (cursor != "0");
  }
}

// Options for a production engine on the test servers, with a fresh key prefix and writer
// timings short enough for tests.
inline couponcore::ProductionOptions production_options(const std::string& test) {
  couponcore::ProductionOptions o;
  o.redis_url = redis_url();
  o.postgres_url = postgres_url();
  o.key_prefix = key_prefix(test);
  o.writer_threads = 1;
  o.migrate_on_open = false;  // postgres_url() migrated it
  o.client_name = "cctest-" + std::to_string(::getpid()) + "-" + test;
  o.writer.block_ms = 50;
  o.writer.claim_idle_ms = 500;
  o.writer.claim_interval_ms = 100;
  o.writer.backoff_initial_ms = 20;
  o.writer.backoff_max_ms = 500;
  o.writer.campaigns_refresh_ms = 50;
  return o;
}

inline std::string current_test_name() {
  const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
  std::string n = info ? info->name() : "test";
  for (char& c : n) {
    if (!std::isalnum(static_cast<unsigned char>(c))) c = '_';
  }
  return n.substr(0, 24);
}

}  // namespace testutil
