// The PostgreSQL schema of the coupon component, as versioned migrations (component "coupons").
// The logical schema is the SQLite one (cpp/src/store/sqlite_store.cpp): same tables, same
// columns, same unique keys; ids are bigint, user ids text, times bigint microseconds since the
// Unix epoch (*_us), so rows map alike in both stores.
//
// Entry points: coupon_migrations() (the list), couponcore::migrate(url) (engine.hpp), which
// applies "coupons" and every list registered with pg::MigrationRegistrar.
#pragma once

#include <vector>

#include "store/postgres/pg.hpp"

namespace couponcore::pg {

const std::vector<Migration>& coupon_migrations();
// Component "auth": partners and API key hashes.
const std::vector<Migration>& auth_migrations();

// Registers the coupon list (idempotent) and applies everything registered.
int migrate_all(Conn& conn);

}  // namespace couponcore::pg
