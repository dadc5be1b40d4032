// The libpq layer against a real PostgreSQL: parameters and arrays, error mapping (SQLSTATE
// and codes), transactions, reconnect, COPY, and versioned migrations.
#include <gtest/gtest.h>

#include "store/postgres/migrations.hpp"
#include "store/postgres/pg.hpp"
#include "production_test_util.hpp"

using namespace couponcore;

namespace {

TEST(PgLayer, ParamsArraysAndNulls) {
  pg::Conn conn(testutil::postgres_url());
  pg::Result r = conn.exec("SELECT $1::bigint, $2::text, $3::bigint IS NULL",
                           pg::Params().add(int64_t{1} << 40).add("it's \"q\" \\").add_null());
  ASSERT_EQ(r.rows(), 1);
  EXPECT_EQ(r.i64(0, 0), int64_t{1} << 40);
  EXPECT_EQ(r.text(0, 1), "it's \"q\" \\");
  EXPECT_TRUE(r.boolean(0, 2));
  std::vector<std::string> texts = {"a", "b,c", "{d}", "\"e\"", "f\\g", ""};
  r = conn.exec("SELECT t, n FROM unnest($1::text[], $2::bigint[]) AS u(t, n)",
                pg::Params().add_array(texts).add_array(std::vector<int64_t>{1, -2, 3, 4, 5, 6}));
  ASSERT_EQ(r.rows(), 6);
  for (int i = 0; i < 6; ++i) EXPECT_EQ(r.text(i, 0), texts[i]);
  EXPECT_EQ(r.i64(1, 1), -2);
  r = conn.exec("SELECT x IS NULL FROM unnest($1::text[]) x",
                pg::Params().add_array_empty_as_null({"a", ""}));
  EXPECT_FALSE(r.boolean(0, 0));
  EXPECT_TRUE(r.boolean(1, 0));
}

TEST(PgLayer, ErrorsCarrySqlstateAndCode) {
  pg::Conn conn(testutil::postgres_url());
  conn.exec("CREATE TEMP TABLE t (k int PRIMARY KEY)");
  conn.exec("INSERT INTO t VALUES (1)");
  try {
    conn.exec("INSERT INTO t VALUES ($1)", pg::Params().add(int64_t{1}));
    FAIL() << "no error";
  } catch (const pg::PgError& e) {
    EXPECT_EQ(e.code(), ErrorCode::kConflict);
    EXPECT_EQ(e.sqlstate(), "23505");
    EXPECT_FALSE(e.retryable());
  }
  try {
    conn.exec("SELECT 1/0");
    FAIL() << "no error";
  } catch (const pg::PgError& e) {
    EXPECT_EQ(e.sqlstate(), "22012");
    EXPECT_EQ(e.code(), ErrorCode::kInvalidArgument);
  }
  EXPECT_TRUE(pg::is_retryable_sqlstate("40P01"));
  EXPECT_TRUE(pg::is_retryable_sqlstate("40001"));
  EXPECT_EQ(pg::error_code_for_sqlstate("40001"), ErrorCode::kUnavailable);
  // The connection is still usable after statement errors.
  EXPECT_EQ(conn.exec("SELECT 2").i64(0, 0), 2);
}

TEST(PgLayer, CannotConnectIsUnavailable) {
  try {
    pg::Conn conn("postgresql://nobody@127.0.0.1:1/none?connect_timeout=2");
    FAIL() << "connected";
  } catch (const pg::PgError& e) {
    EXPECT_EQ(e.code(), ErrorCode::kUnavailable);
    EXPECT_TRUE(e.retryable());
  }
}

TEST(PgLayer, TransactionsRollBackUnlessCommitted) {
  pg::Conn conn(testutil::postgres_url());
  conn.exec("CREATE TEMP TABLE t (k int)");
  {
    pg::Tx tx(conn);
    conn.exec("INSERT INTO t VALUES (1)");
  }
  {
    pg::Tx tx(conn);
    conn.exec("INSERT INTO t VALUES (2)");
    tx.commit();
  }
  EXPECT_EQ(conn.exec("SELECT sum(k) FROM t").i64(0, 0), 2);
}

TEST(PgLayer, ReconnectsAfterTheServerDropsIt) {
  pg::Conn conn(testutil::postgres_url());
  pg::Conn admin(testutil::postgres_url());
  const int64_t pid = conn.exec("SELECT pg_backend_pid()").i64(0, 0);
  const uint64_t gen = conn.generation();
  admin.exec("SELECT pg_terminate_backend($1)", pg::Params().add(pid));
  try {
    pg::Tx tx(conn);  // BEGIN on a dead connection, or the first statement, fails
    conn.exec("SELECT 1");
    tx.commit();
  } catch (const pg::PgError& e) {
    EXPECT_EQ(e.code(), ErrorCode::kUnavailable);
    EXPECT_TRUE(e.connection_lost());
  }
  EXPECT_EQ(conn.exec("SELECT 3").i64(0, 0), 3);  // reconnected
  EXPECT_GT(conn.generation(), gen);
}

TEST(PgLayer, PreparedStatementsSurviveReconnect) {
  pg::Conn conn(testutil::postgres_url());
  pg::Conn admin(testutil::postgres_url());
  EXPECT_EQ(conn.exec_prepared("p1", "SELECT $1::int + 1", pg::Params().add(int64_t{1})).i64(0, 0), 2);
  admin.exec("SELECT pg_terminate_backend($1)", pg::Params().add(conn.exec("SELECT pg_backend_pid()").i64(0, 0)));
  EXPECT_THROW(conn.exec("SELECT 1"), pg::PgError);
  EXPECT_EQ(conn.exec_prepared("p1", "SELECT $1::int + 1", pg::Params().add(int64_t{2})).i64(0, 0), 3);
}

TEST(PgLayer, CopyIn) {
  pg::Conn conn(testutil::postgres_url());
  conn.exec("CREATE TEMP TABLE t (k int, v text)");
  EXPECT_EQ(conn.copy_in("COPY t FROM STDIN", "1\ta\n2\tb\n"), 2);
  EXPECT_EQ(conn.exec("SELECT count(*) FROM t").i64(0, 0), 2);
}

TEST(PgLayer, MigrationsAreVersionedPerComponentAndIdempotent) {
  pg::Conn conn(testutil::postgres_url());
  static const std::vector<pg::Migration> extra = {
      {"pgtest", 1, "CREATE TABLE pgtest_a (x int)"},
      {"pgtest", 2, "ALTER TABLE pgtest_a ADD COLUMN y int"},
  };
  EXPECT_EQ(pg::migrate(conn, extra), 2);
  EXPECT_EQ(pg::migrate(conn, extra), 0);
  EXPECT_EQ(conn.exec("SELECT count(*) FROM schema_migrations WHERE component = 'pgtest'").i64(0, 0), 2);
  EXPECT_EQ(pg::migrate_all(conn), 0);  // the coupons schema is in place already
  EXPECT_EQ(conn.exec("SELECT max(version) FROM schema_migrations WHERE component = 'coupons'").i64(0, 0),
            pg::coupon_migrations().back().version);
}

}  // namespace
