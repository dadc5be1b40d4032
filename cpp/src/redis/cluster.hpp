// Redis Cluster routing under RedisConn: a RedisConn opened on a redis+cluster:// URL owns one
// ClusterRouter, which keeps the slot map and one plain RedisConn per master, and routes every
// command by the slot of its first key. Callers keep using RedisConn as before (command,
// append/read_reply, eval); what changes for them is listed in redis.hpp.
//
//   slot map      CLUSTER SLOTS from any known master or seed; loaded on ensure_connected(),
//                 reloaded after MOVED, CLUSTERDOWN and a lost node connection. The first load
//                 refuses a map with holes (kUnavailable); later, a command for an uncovered slot
//                 is kUnavailable ("slot N is not served by any master").
//   MOVED         reload the map, retry on the named node
//   ASK           ASKING + the command on the named node, pipelined; the map is not changed
//   TRYAGAIN,     retried with backoff (5 ms doubling to 200 ms) within command_timeout_ms; then
//   CLUSTERDOWN   the error reply is the caller's (check_reply makes it kUnavailable)
//   keyless       SCRIPT ... goes to every master (a script is loaded everywhere); other keyless
//                 commands (TIME, PING) to one master
//   pipelining    append() buffers on the key's node; the first read_reply() sends every node's
//                 buffer, then reads every pipelined reply (the nodes work in parallel), retries
//                 the redirected ones one by one, and hands the replies back in append order.
//                 A reply lost with its node throws (kUnavailable) at its turn; the replies after
//                 it can still be read (one master's failure is not the others'), or are
//                 dropped by the next command / append / ensure_connected.
//
// Not thread-safe, like RedisConn.
#pragma once

#include <cstdint>
#include <atomic>
#include <deque>
#include <exception>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "redis/redis.hpp"

namespace couponcore::redis {

inline constexpr int kClusterSlots = 16384;

// CRC16-CCITT (XMODEM), as Redis Cluster uses it: crc16("123456789") == 0x31C3.
uint16_t crc16(std::string_view data);
// The key's slot: of its hash tag (the part between the first '{' and the next '}', if that is
// not empty), else of the whole key.
int key_slot(std::string_view key);
// Index of a command's first key in args; -1 for a command without keys.
int first_key_index(const Args& args);

// What every router of this process met, since it started (for tests and logs).
struct ClusterEvents {
  uint64_t moved = 0, ask = 0, tryagain = 0, clusterdown = 0, map_loads = 0;
};
ClusterEvents cluster_events();

class ClusterRouter {
 public:
  ClusterRouter(const RedisUrl& url, const RedisConnOptions& options);
  ~ClusterRouter();
  ClusterRouter(const ClusterRouter&) = delete;
  ClusterRouter& operator=(const ClusterRouter&) = delete;

  void ensure_ready();
  bool ready() const { return loaded_ && !stale_; }
  void disconnect();
  uint64_t connects() const;

  Reply command(const Args& args);
  void append(Args args);
  Reply read_reply();
  // A keyless command (WAIT) pipelined to the master that serves slot by the current map; its
  // reply comes back in append order like the others. Never redirected.
  void append_at(Args args, int slot);
  // host:port of the node that gave the last reply read_reply() returned (after redirections;
  // "" if that reply failed before reaching a node).
  const std::string& last_node() const { return last_node_; }
  // A command on one known node ("host:port"), not routed; kUnavailable if unknown or lost.
  Reply command_on(const std::string& addr, const Args& args);
  std::size_t unread() const { return pending_.size(); }
  std::size_t masters() const { return masters_.size(); }
  // host:port of the master serving slot, or "" if none (for tests and messages).
  std::string master_of(int slot) const;
  std::vector<std::string> master_addrs() const;  // host:port of every master in the map

 private:
  struct Pending {
    RedisConn* conn = nullptr;
    Args args;
    int slot = -1;
    Reply reply;
    std::exception_ptr error;
  };

  RedisConn& node(const std::string& host, int port);
  void refresh_map();
  RedisConn& route(const Args& args, int* slot);
  // conn is updated to the node that gave the final reply (after MOVED / ASK).
  Reply execute(const Args& args, int slot, RedisConn*& conn, Reply reply, bool have_reply);
  Reply broadcast(const Args& args);
  void read_all();
  void abandon();
  void drop_dangling();
  // Queues args on the connection pick(args, &slot) names, or with the error it threw.
  void enqueue(Args args, const std::function<RedisConn&(const Args&, int* slot)>& pick);

  RedisUrl url_;
  RedisConnOptions options_;
  std::vector<std::pair<std::string, int>> seeds_;
  std::vector<std::pair<std::string, std::unique_ptr<RedisConn>>> nodes_;  // "host:port" -> conn
  std::vector<RedisConn*> masters_;
  std::vector<int16_t> slots_;  // slot -> index in masters_, -1: uncovered
  bool loaded_ = false;
  bool stale_ = false;
  std::deque<Pending> pending_;
  bool read_done_ = false;  // pending_'s replies are all read
  bool dangling_ = false;   // a read threw with replies left: dropped unless read next
  std::string last_node_;
};

}  // namespace couponcore::redis
