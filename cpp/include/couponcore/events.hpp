// Reading domain events (docs/events.md): consumer groups over the deployment's event log.
// Production: one Redis Stream per type (`<prefix>events:{<type>}`, filled by the relay),
// XREADGROUP / XACK / XAUTOCLAIM. Embedded: the SQLite table `events`, each group's position
// per type and its pending events in tables of the same file.
//
// Semantics, both deployments: a group starts at the beginning of each stream and sees every
// event once unless it does not acknowledge it: a reader first gets back its own pending events
// (a consumer that restarts under the same name), then events pending at another consumer for
// longer than claim_idle_ms (a dead consumer), then new ones. Within a type, events come in
// sequence order; a batch spanning several types is sorted by sequence.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace couponcore {

struct EventMessage {
  std::string type;
  std::string id;        // the event id (stable; dedupe by it)
  std::string entry_id;  // where it is in its stream (production: the stream id; embedded: the seq)
  std::string json;      // the CloudEvent
  int64_t sequence = 0;  // the outbox's / log's number (the CloudEvent's `sequence`)
  bool redelivered = false;  // handed out before (this consumer's pending, or claimed)
};

struct EventDeadLetter {
  std::string id;        // the record's id (production: dead-letter stream id; embedded: row id)
  std::string group;
  std::string event_id;
  std::string type;
  std::string reason;
  std::string json;      // the CloudEvent
  int64_t dead_lettered_at_us = 0;
};

struct EventStats {
  int64_t written = 0;             // events written by the deployment (its outbox / log sequence)
  int64_t relayed = 0;             // production: events this engine's relay published
  int64_t outbox_rows = 0;         // production: rows waiting in event_outbox (embedded: 0)
  int64_t outbox_oldest_age_ms = 0;
  bool relay_active = false;       // this engine's relay holds the deployment's relay lock
};

// What EventHub::prune deleted (embedded: rows of the log `events`).
struct EventPruneResult {
  int64_t deleted = 0;               // events deleted in all
  int64_t deleted_unacknowledged = 0;  // of those, past the hard cap without every group's ack
  int64_t chunks = 0;                // transactions (one DELETE of up to chunk_rows each)
  bool more = false;                 // chunks_max reached with more to delete: call again
  bool supported = true;             // false: production (its type streams are capped by MAXLEN)
};

class EventReader {
 public:
  virtual ~EventReader() = default;
  // Up to `batch` events per type (sorted by sequence), waiting up to block_ms for new ones.
  virtual std::vector<EventMessage> read(int64_t batch, int64_t block_ms) = 0;
  virtual int64_t ack(const std::vector<EventMessage>& events) = 0;
};

class EventHub {
 public:
  virtual ~EventHub() = default;
  // types: names from the catalogue (empty: all); kInvalidArgument for an unknown one. group,
  // consumer: 1..64 of [A-Za-z0-9_.:-].
  virtual std::unique_ptr<EventReader> open_reader(const std::string& group, const std::string& consumer,
                                                   const std::vector<std::string>& types, int64_t claim_idle_ms) = 0;
  // Acknowledges by (type, entry_id); returns how many were pending.
  virtual int64_t ack(const std::string& group, const std::vector<EventMessage>& events) = 0;
  virtual void dead_letter(const std::string& group, const EventMessage& event, const std::string& reason) = 0;
  virtual std::vector<EventDeadLetter> list_dead_letters(const std::string& group, int64_t limit) = 0;
  virtual EventStats stats() = 0;
  // Retention of the log: deletes the events older than retention_ms (by their time) that every
  // consumer group reading their type has acknowledged (read and not pending); an event of a
  // type no group has read yet is kept. hard_cap_ms > 0: events older than that are deleted
  // whatever the groups, with their pending rows. Short transactions of up to chunk_rows rows,
  // at most chunks_max of them. Production has nothing to prune (supported = false).
  virtual EventPruneResult prune(int64_t retention_ms, int64_t hard_cap_ms, int64_t chunk_rows, int64_t chunks_max) {
    (void)retention_ms, (void)hard_cap_ms, (void)chunk_rows, (void)chunks_max;
    EventPruneResult r;
    r.supported = false;
    return r;
  }
};

}  // namespace couponcore
