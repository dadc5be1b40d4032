// Replica acknowledgement outside the gate's batch pipeline: see replica_wait.hpp.
#include "redis/replica_wait.hpp"

#include <string>

#include "couponcore/error.hpp"
#include "redis/cluster.hpp"

namespace couponcore::redis {

void ReplicaWait::require(RedisConn& conn, std::string_view key, std::string_view what) const {
  if (!on()) return;
  const Args w = Args{"WAIT"}.add(static_cast<int64_t>(replicas)).add(wait_ms);
  Reply r;
  std::string node;
  if (conn.is_cluster()) {
    const int slot = key_slot(key);
    node = conn.cluster()->master_of(slot);
    conn.cluster()->append_at(w, slot);
    r = conn.read_reply();
  } else {
    r = conn.command(w);
  }
  if (counts != nullptr) counts->waits++;
  long long n = -1;
  if (!r.is_error() && reply_int(r.raw(), &n) && n >= replicas) return;
  if (counts != nullptr) counts->shortfalls++;
  throw Error(ErrorCode::kUnavailable,
              "not yet replicated: " + std::string(what) + ": WAIT " + std::to_string(replicas) + " " +
                  std::to_string(wait_ms) + (node.empty() ? "" : " on " + node) + " answered " +
                  (r.is_error() ? std::string(r.str()) : std::to_string(n)) + "; retry");
}

}  // namespace couponcore::redis
