// reconcile() of the production deployment: re-drives what a campaign's grant log holds that
// PostgreSQL lacks (through grantlog::commit_entries, the writers' own commit path), then
// compares the gate's view (the Redis mirror, every shard's) with the store's rows. It opens its
// OWN Redis and PostgreSQL connections per call: a reconcile of a million log entries holds no
// lock that issuance, drain or a rule change waits on.
#pragma once

#include <string>

#include "couponcore/engine.hpp"
#include "gate/mirror.hpp"
#include "redis/redis.hpp"
#include "redis/replica_wait.hpp"

namespace couponcore::detail {

// With replicas_acked > 0, what is re-driven (and each stock move settled) is first
// acknowledged by replicas, counted in replica_waits (docs/production.md).
ReconcileReport reconcile_production(const ProductionOptions& o, const redis::RedisUrl& redis_url, gate::GateCampaign& entry,
                                     redis::ReplicaWaitCounts& replica_waits);

}  // namespace couponcore::detail
