// The production deployment's options (couponcore/engine.hpp ProductionOptions): checked once
// at open, and turned into the options of the parts (the Redis connections, the gate).
#pragma once

#include "couponcore/engine.hpp"
#include "gate/redis_gate.hpp"
#include "redis/redis.hpp"
#include "store/postgres/pg.hpp"

namespace couponcore::detail {

// Throws Error(kInvalidArgument) naming the first option out of range; changes nothing.
void check_options(const ProductionOptions& o);
// A Redis connection's options; role is appended to the client name (CLIENT LIST shows it).
redis::RedisConnOptions redis_options(const ProductionOptions& o, const char* role);
gate::RedisGateOptions gate_options(const ProductionOptions& o);
// The control connections' (and reconcile's) PostgreSQL options.
pg::ConnOptions control_conn_options();

}  // namespace couponcore::detail
