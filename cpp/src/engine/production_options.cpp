// See production_options.hpp.
#include "engine/production_options.hpp"

#include <string>

#include "auth/partner_service.hpp"
#include "couponcore/error.hpp"
#include "redis/keys.hpp"
#include "store/postgres/conn_pool.hpp"
#include "writer/grant_writer.hpp"

namespace couponcore::detail {

void check_options(const ProductionOptions& o) {
  redis::check_key_prefix(o.key_prefix);
  if (o.postgres_url.empty()) throw_invalid("postgres_url is required");
  if (o.windows_stream_maxlen < 1000 || o.windows_stream_maxlen > 100'000'000) {
    throw_invalid("windows_stream_maxlen must be 1000..100000000");
  }
  check_event_options(o.events);
  if (o.writer_threads < 0 || o.writer_threads > 64) throw_invalid("writer_threads must be 0..64");
  if (o.answer_ttl_s < 1 || o.answer_ttl_s > 30 * 24 * 3600) throw_invalid("answer_ttl_s must be 1 s..30 days");
  if (o.gate_batch_requests_max < 1 || o.gate_batch_requests_max > 20'000) {
    throw_invalid("gate_batch_requests_max must be 1..20000");
  }
  if (o.gate_pipeline_calls_max < 1 || o.gate_pipeline_calls_max > 10'000) {
    throw_invalid("gate_pipeline_calls_max must be 1..10000");
  }
  if (o.gate_cycle_requests_max < 1) throw_invalid("gate_cycle_requests_max must be positive");
  if (o.queued_requests_max < 1) throw_invalid("queued_requests_max must be positive");
  if (o.queue_full_wait_ms < 0) throw_invalid("queue_full_wait_ms must not be negative");
  if (o.redis_connect_timeout_ms < 1 || o.redis_command_timeout_ms < 1) throw_invalid("redis timeouts must be positive");
  if (o.gate_retries_max < 0 || o.gate_retries_max > 10) throw_invalid("gate_retries_max must be 0..10");
  if (o.replicas_acked < 0 || o.replicas_acked > 16) throw_invalid("replicas_acked must be 0..16");
  if (o.replica_wait_ms < 1 || o.replica_wait_ms > 60'000) throw_invalid("replica_wait_ms must be 1..60000");
  if (o.replicas_acked > 0 && o.replica_wait_ms >= o.redis_command_timeout_ms) {
    throw_invalid("replica_wait_ms must be below redis_command_timeout_ms (" + std::to_string(o.redis_command_timeout_ms) +
                  " ms): the WAIT reply is read within it");
  }
  if (o.close_drain_timeout_ms < 0) throw_invalid("close_drain_timeout_ms must not be negative");
  if (o.lifecycle_conns_max < 1 || o.lifecycle_conns_max > pg::ConnPool::kConnsMax) {
    throw_invalid("lifecycle_conns_max must be 1.." + std::to_string(pg::ConnPool::kConnsMax));
  }
  auth::check_auth_options(o.auth);
  writer::check_writer_options(o.writer);
}

redis::RedisConnOptions redis_options(const ProductionOptions& o, const char* role) {
  redis::RedisConnOptions ro;
  ro.connect_timeout_ms = o.redis_connect_timeout_ms;
  ro.command_timeout_ms = o.redis_command_timeout_ms;
  ro.backoff_max_ms = o.redis_backoff_max_ms;
  ro.client_name = o.client_name + role;
  return ro;
}

gate::RedisGateOptions gate_options(const ProductionOptions& o) {
  gate::RedisGateOptions g;
  g.key_prefix = o.key_prefix;
  g.postgres_url = o.postgres_url;
  g.answer_ttl_s = o.answer_ttl_s;
  g.batch_requests_max = o.gate_batch_requests_max;
  g.pipeline_calls_max = o.gate_pipeline_calls_max;
  g.cycle_requests_max = o.gate_cycle_requests_max;
  g.queued_requests_max = o.queued_requests_max;
  g.queue_full_wait_ms = o.queue_full_wait_ms;
  g.retries_max = o.gate_retries_max;
  g.replicas_acked = o.replicas_acked;
  g.replica_wait_ms = o.replica_wait_ms;
  return g;
}

pg::ConnOptions control_conn_options() {
  pg::ConnOptions c;
  c.application_name = "couponcore-control";
  return c;
}

}  // namespace couponcore::detail
