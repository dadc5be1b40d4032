// The grant log of the production deployment: a Redis Stream per campaign (keys in
// redis/keys.hpp), read by the consumer group "writers", and the one path that settles its
// entries once their grants are in the store.
//
// A grant exists iff it is in the log (the gate's Lua appends it in the same atomic step that
// decides it); it leaves the log only once it is in PostgreSQL (acknowledged, then trimmed) or
// in the campaign's dead-letter stream with its reason. Invariant of every commit:
// entries in == entries acknowledged + entries left pending + entries dead-lettered.
//
// Entry points:
//   GrantLog log(conn)                      the log's operations over one Redis connection
//     register_campaign / campaigns         the set of campaign streams the writers follow
//     range / last_id / settled_through     reading (reconcile, drain)
//     backlog                               entries, pending, oldest pending age, dead letters
//     prepare                               parse entries into grants; malformed -> dead letters
//     ack / note_reason / dead_letter       settling single entries
//   commit_entries(pg, log, batch, policy)  write a batch's grants in one transaction, then
//                                           settle every entry: the writer and reconcile both
//                                           call it
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "couponcore/types.hpp"
#include "log/grant_entry.hpp"
#include "redis/keys.hpp"
#include "redis/redis.hpp"

namespace couponcore::pg {
class Conn;
}

namespace couponcore::grantlog {

// A run of entries of one campaign's stream, with their grants once prepared.
struct StreamBatch {
  redis::CampaignKeys keys;
  std::vector<LogEntry> entries;
  std::vector<Grant> grants;             // after prepare(): every entry's grants, in order
  std::vector<std::size_t> grant_entry;  // grants[i] came from entries[grant_entry[i]]
};

class GrantLog {
 public:
  explicit GrantLog(redis::RedisConn& conn);

  // Creates the campaign's stream and group (idempotent) and lists it for the writers.
  void register_campaign(std::string_view prefix, const redis::CampaignKeys& keys);
  void ensure_group(const redis::CampaignKeys& keys);
  // The campaign ids listed for the writers.
  // The stream ids of Pcampaigns (redis::CampaignKeys::stream_id; a campaign id for shard 0).
  std::vector<int64_t> campaigns(std::string_view prefix);

  // At most `count` entries after `after` ("-" for the start; "(<id>" exclusive).
  std::vector<LogEntry> range(const redis::CampaignKeys& keys, const std::string& after, std::size_t count);
  // The newest entry's id, or false if the stream is empty.
  bool last_id(const redis::CampaignKeys& keys, redis::StreamId* out);
  // True when the group has delivered past `target` and nothing at or before it is pending.
  bool settled_through(const redis::CampaignKeys& keys, const redis::StreamId& target);
  int64_t dead_letter_count(const redis::CampaignKeys& keys);
  // The backlog of every listed campaign (at most campaigns_max, the highest ids first), read
  // with pipelined XLEN / XPENDING / XLEN per campaign and one TIME: ages are measured on the
  // Redis server's clock, the clock that made the stream ids. A campaign whose stream or group
  // is gone reports what is left (XLEN of a missing key is 0; no group: nothing pending).
  std::vector<LogBacklog> backlog(std::string_view prefix, std::size_t campaigns_max);

  // Parses every entry; dead-letters the malformed ones (dead_letter_malformed) or leaves them
  // where they are; acknowledges deleted ones (nothing to write). Keeps the rest, with
  // entries[i] <-> grants. Drops stream batches left empty. Returns the entries dead-lettered.
  std::size_t prepare(std::vector<StreamBatch>& batch, bool dead_letter_malformed);

  // XACK (and, with remove, XDEL: for entries the group never delivered), then trims.
  void ack(const redis::CampaignKeys& keys, const std::vector<std::string>& ids, bool remove);
  void note_reason(const redis::CampaignKeys& keys, const std::string& entry_id, const std::string& reason);
  // Moves entry e to the dead-letter stream as one record with its own fields (refused ==
  // nullptr: e is malformed) or one record per refused grant (index into sb.grants, reason).
  // Returns the records written (0 if another writer settled the entry meanwhile).
  int64_t dead_letter(const StreamBatch& sb, const LogEntry& e, const std::string& reason,
                      const std::vector<std::pair<std::size_t, std::string>>* refused = nullptr);

  redis::RedisConn& conn() { return conn_; }

 private:
  redis::RedisConn& conn_;
  redis::Script ack_script_;
  redis::Script dead_letter_script_;
};

// How commit_entries settles an entry with a grant the store refused (a conflict, a foreign key).
struct CommitPolicy {
  // On this delivery or later, its refused grants go to the dead letters and the entry leaves
  // the log; before, it stays pending with the reason noted (it comes back, and its other
  // grants are written again, idempotently). 0: never dead-letter here.
  int64_t dead_letter_after_deliveries = 0;
  // Entries read with XRANGE (reconcile) may never have been delivered to the group: remove
  // them explicitly once acknowledged.
  bool remove_acked = false;
  // Write the outbox rows (coupon.issued, campaign.sold_out) with the grants (docs/events.md).
  bool events = true;
};

struct CommitOutcome {
  int64_t inserted = 0;         // new rows
  int64_t already_present = 0;  // grants whose identical row was there (redeliveries)
  int64_t refused = 0;          // grants the store refused
  std::size_t entries = 0;      // entries in the batch
  std::size_t acked = 0, pending = 0, dead_lettered = 0;  // what became of them
  int64_t dead_letter_records = 0;
};

// Writes every grant of the (prepared) batch to the store in ONE transaction, then settles each
// entry: acknowledged if all its grants are in the store; else pending with its reason, or
// dead-lettered per the policy. Throws Error if the store fails as a whole (a database down):
// then nothing is settled and the entries stay pending for a retry.
CommitOutcome commit_entries(pg::Conn& pg, GrantLog& log, std::vector<StreamBatch>& batch, const CommitPolicy& policy);

}  // namespace couponcore::grantlog
