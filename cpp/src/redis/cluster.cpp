// Redis Cluster routing: see cluster.hpp.
#include "redis/cluster.hpp"

#include <hiredis/hiredis.h>

#include <algorithm>
#include <charconv>
#include <chrono>
#include <thread>

#include "util/assert.hpp"

namespace couponcore::redis {

namespace {

constexpr int kRedirectsMax = 16;
constexpr int64_t kRetryBackoffInitialMs = 5;
constexpr int64_t kRetryBackoffMaxMs = 200;

bool starts_with(std::string_view s, std::string_view p) { return s.substr(0, p.size()) == p; }

std::atomic<uint64_t> g_moved{0}, g_ask{0}, g_tryagain{0}, g_clusterdown{0}, g_map_loads{0};

bool iequals(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  for (std::size_t i = 0; i < a.size(); ++i) {
    if (std::toupper(static_cast<unsigned char>(a[i])) != std::toupper(static_cast<unsigned char>(b[i]))) return false;
  }
  return true;
}

std::string_view arg(const Args& args, std::size_t i, const std::vector<const char*>& argv) {
  return std::string_view(argv[i], args.lens()[i]);
}

// "MOVED 3999 127.0.0.1:6381" / "ASK 3999 127.0.0.1:6381" -> host, port; false if malformed.
bool parse_redirect(std::string_view e, std::string* host, int* port) {
  const std::size_t a = e.find(' ');
  const std::size_t b = a == std::string_view::npos ? a : e.find(' ', a + 1);
  if (b == std::string_view::npos) return false;
  std::string_view addr = e.substr(b + 1);
  const std::size_t colon = addr.rfind(':');
  if (colon == std::string_view::npos) return false;
  std::string_view p = addr.substr(colon + 1);
  auto [end, ec] = std::from_chars(p.data(), p.data() + p.size(), *port);
  if (ec != std::errc() || *port <= 0 || *port > 65535) return false;
  *host = std::string(addr.substr(0, colon));
  return true;
}

bool is_redirect(const Reply& r) { return r.is_error() && (starts_with(r.str(), "MOVED ") || starts_with(r.str(), "ASK ")); }
bool is_retryable(const Reply& r) {
  return r.is_error() && (starts_with(r.str(), "TRYAGAIN") || starts_with(r.str(), "CLUSTERDOWN"));
}

std::string seeds_text(const std::vector<std::pair<std::string, int>>& seeds) {
  std::string s;
  for (const auto& [h, p] : seeds) s += (s.empty() ? "" : ",") + h + ":" + std::to_string(p);
  return s;
}

}  // namespace

ClusterEvents cluster_events() {
  ClusterEvents e;
  e.moved = g_moved.load();
  e.ask = g_ask.load();
  e.tryagain = g_tryagain.load();
  e.clusterdown = g_clusterdown.load();
  e.map_loads = g_map_loads.load();
  return e;
}

uint16_t crc16(std::string_view data) {
  uint16_t crc = 0;
  for (unsigned char c : data) {
    crc ^= static_cast<uint16_t>(c) << 8;
    for (int i = 0; i < 8; ++i) crc = (crc & 0x8000) ? static_cast<uint16_t>((crc << 1) ^ 0x1021) : static_cast<uint16_t>(crc << 1);
  }
  return crc;
}

int key_slot(std::string_view key) {
  const std::size_t open = key.find('{');
  if (open != std::string_view::npos) {
    const std::size_t close = key.find('}', open + 1);
    if (close != std::string_view::npos && close > open + 1) key = key.substr(open + 1, close - open - 1);
  }
  return crc16(key) & (kClusterSlots - 1);
}

int first_key_index(const Args& args) {
  if (args.size() < 2) return -1;
  const std::vector<const char*> argv = args.argv();
  const std::string_view cmd = arg(args, 0, argv);
  if (iequals(cmd, "EVALSHA") || iequals(cmd, "EVAL") || iequals(cmd, "EVALSHA_RO") || iequals(cmd, "EVAL_RO") ||
      iequals(cmd, "FCALL")) {
    if (args.size() < 4) return -1;
    long long n = 0;
    const std::string_view nk = arg(args, 2, argv);
    auto [end, ec] = std::from_chars(nk.data(), nk.data() + nk.size(), n);
    return ec == std::errc() && n > 0 ? 3 : -1;
  }
  if (iequals(cmd, "XREADGROUP") || iequals(cmd, "XREAD")) {
    for (std::size_t i = 1; i + 1 < args.size(); ++i) {
      if (iequals(arg(args, i, argv), "STREAMS")) return static_cast<int>(i + 1);
    }
    return -1;
  }
  if (iequals(cmd, "XGROUP") || iequals(cmd, "XINFO") || iequals(cmd, "OBJECT") || iequals(cmd, "MEMORY")) {
    return args.size() >= 3 ? 2 : -1;
  }
  for (std::string_view keyless : {"SCRIPT", "PING", "TIME", "INFO", "CLIENT", "CLUSTER", "AUTH", "SELECT", "ASKING",
                                   "READONLY", "DBSIZE", "FLUSHALL", "FLUSHDB", "FUNCTION", "WAIT", "ECHO", "CONFIG"}) {
    if (iequals(cmd, keyless)) return -1;
  }
  return 1;
}

// ---- the router ------------------------------------------------------------------------------

ClusterRouter::ClusterRouter(const RedisUrl& url, const RedisConnOptions& options)
    : url_(url), options_(options), seeds_(url.cluster_seeds), slots_(kClusterSlots, -1) {
  CC_ASSERT(!seeds_.empty(), "a cluster router without seeds");
}

ClusterRouter::~ClusterRouter() = default;

RedisConn& ClusterRouter::node(const std::string& host, int port) {
  const std::string addr = host + ":" + std::to_string(port);
  for (auto& [a, c] : nodes_) {
    if (a == addr) return *c;
  }
  RedisUrl u;
  u.host = host;
  u.port = port;
  u.username = url_.username;
  u.password = url_.password;
  nodes_.emplace_back(addr, std::make_unique<RedisConn>(std::move(u), options_));
  return *nodes_.back().second;
}

uint64_t ClusterRouter::connects() const {
  uint64_t n = 0;
  for (const auto& [a, c] : nodes_) n += c->connects();
  return n;
}

void ClusterRouter::disconnect() {
  for (auto& [a, c] : nodes_) c->disconnect();
  pending_.clear();
  dangling_ = false;
  read_done_ = false;
  stale_ = true;
}

std::string ClusterRouter::master_of(int slot) const {
  if (slot < 0 || slot >= kClusterSlots || slots_[slot] < 0) return {};
  return masters_[static_cast<std::size_t>(slots_[slot])]->url().host + ":" +
         std::to_string(masters_[static_cast<std::size_t>(slots_[slot])]->url().port);
}

std::vector<std::string> ClusterRouter::master_addrs() const {
  std::vector<std::string> out;
  for (const RedisConn* m : masters_) out.push_back(m->url().host + ":" + std::to_string(m->url().port));
  return out;
}

void ClusterRouter::ensure_ready() {
  drop_dangling();
  if (!loaded_ || stale_) refresh_map();
}

// CLUSTER SLOTS from the first node that answers: the known masters, then the seeds.
void ClusterRouter::refresh_map() {
  std::vector<std::pair<std::string, int>> candidates;
  for (RedisConn* m : masters_) candidates.emplace_back(m->url().host, m->url().port);
  for (const auto& s : seeds_) {
    if (std::find(candidates.begin(), candidates.end(), s) == candidates.end()) candidates.push_back(s);
  }
  std::string errors;
  bool not_cluster = false;
  for (const auto& [host, port] : candidates) {
    RedisConn& c = node(host, port);
    if (c.appended_unread() != 0) continue;  // in the middle of a pipeline: not now
    Reply r;
    try {
      r = c.command(Args{"CLUSTER", "SLOTS"});
    } catch (const Error& e) {
      errors += std::string(errors.empty() ? "" : "; ") + e.what();
      continue;
    }
    if (r.is_error()) {
      if (r.str().find("cluster support disabled") != std::string_view::npos) not_cluster = true;
      errors += std::string(errors.empty() ? "" : "; ") + host + ":" + std::to_string(port) + ": " + std::string(r.str());
      continue;
    }
    if (!r.is_array()) continue;
    std::vector<int16_t> slots(kClusterSlots, -1);
    std::vector<RedisConn*> masters;
    for (std::size_t i = 0; i < r.size(); ++i) {
      const redisReply* range = r.at(i);
      long long from = -1, to = -1, mport = 0;
      if (!reply_is_array(range) || range->elements < 3 || !reply_int(range->element[0], &from) ||
          !reply_int(range->element[1], &to) || !reply_is_array(range->element[2]) || range->element[2]->elements < 2 ||
          !reply_int(range->element[2]->element[1], &mport)) {
        continue;
      }
      if (from < 0 || to >= kClusterSlots || from > to || mport <= 0 || mport > 65535) continue;
      std::string mhost(reply_str(range->element[2]->element[0]));
      if (mhost.empty() || mhost == "?") mhost = host;  // "" means: the node you asked
      RedisConn* m = &node(mhost, static_cast<int>(mport));
      auto it = std::find(masters.begin(), masters.end(), m);
      if (it == masters.end()) {
        masters.push_back(m);
        it = masters.end() - 1;
      }
      for (long long s = from; s <= to; ++s) slots[static_cast<std::size_t>(s)] = static_cast<int16_t>(it - masters.begin());
    }
    const auto holes = std::count(slots.begin(), slots.end(), int16_t{-1});
    if (holes != 0 && !loaded_) {
      const auto first = std::find(slots.begin(), slots.end(), int16_t{-1}) - slots.begin();
      auto last = first;
      while (last + 1 < kClusterSlots && slots[static_cast<std::size_t>(last + 1)] < 0) ++last;
      throw Error(ErrorCode::kUnavailable,
                  "redis cluster " + seeds_text(seeds_) + ": the slot map has holes: " + std::to_string(holes) +
                      " of 16384 slots are served by no master (the first: " + std::to_string(first) + "-" +
                      std::to_string(last) + "); fix the cluster (redis-cli --cluster check / fix)");
    }
    slots_ = std::move(slots);
    masters_ = std::move(masters);
    g_map_loads++;
    loaded_ = true;
    stale_ = false;
    return;
  }
  if (not_cluster) {
    throw Error(ErrorCode::kInvalidArgument, "redis+cluster url names a server that is not a cluster node (" + errors +
                                                 "): use redis://host:port for a single server");
  }
  throw Error(ErrorCode::kUnavailable, "redis cluster: no seed answered CLUSTER SLOTS (seeds " + seeds_text(seeds_) +
                                           "): " + (errors.empty() ? "no seed to ask" : errors));
}

RedisConn& ClusterRouter::route(const Args& args, int* slot) {
  ensure_ready();
  const int k = first_key_index(args);
  if (k < 0) {
    *slot = -1;
    CC_ASSERT(!masters_.empty(), "a loaded slot map without masters");
    return *masters_.front();
  }
  const std::vector<const char*> argv = args.argv();
  *slot = key_slot(arg(args, static_cast<std::size_t>(k), argv));
  if (iequals(arg(args, 0, argv), "EVALSHA") || iequals(arg(args, 0, argv), "EVAL")) {
    // Our scripts' keys share a hash tag: one slot per call, or the call is our bug.
    long long n = 0;
    const std::string_view nk = arg(args, 2, argv);
    std::from_chars(nk.data(), nk.data() + nk.size(), n);
    for (long long i = 1; i < n && 3 + i < static_cast<long long>(args.size()); ++i) {
      CC_ASSERT(key_slot(arg(args, static_cast<std::size_t>(3 + i), argv)) == *slot,
                "a script call's keys span several cluster slots");
    }
  }
  const int16_t m = slots_[static_cast<std::size_t>(*slot)];
  if (m < 0) {
    stale_ = true;  // ask again next time: the hole may be closed by then
    throw Error(ErrorCode::kUnavailable, "redis cluster: slot " + std::to_string(*slot) + " (key " +
                                             std::string(arg(args, static_cast<std::size_t>(k), argv)) +
                                             ") is not served by any master");
  }
  return *masters_[static_cast<std::size_t>(m)];
}

// Follows redirections and retries TRYAGAIN / CLUSTERDOWN until the command has a real answer,
// starting from `reply` if have_reply (a pipelined reply), else by sending it to conn.
Reply ClusterRouter::execute(const Args& args, int slot, RedisConn*& conn, Reply reply, bool have_reply) {
  const int64_t deadline = steady_ms() + options_.command_timeout_ms;
  int64_t backoff = kRetryBackoffInitialMs;
  int redirects = 0;
  bool asking = false;
  for (;;) {
    if (!have_reply) {
      try {
        if (asking) {
          conn->append(Args{"ASKING"});
          conn->append(args);
          Reply ok = conn->read_reply();
          reply = conn->read_reply();
        } else {
          reply = conn->command(args);
        }
      } catch (const Error&) {
        stale_ = true;  // the node may have failed over: ask for the map again
        throw;
      }
    }
    have_reply = false;
    asking = false;
    if (is_redirect(reply)) {
      const bool moved = starts_with(reply.str(), "MOVED ");
      (moved ? g_moved : g_ask)++;
      std::string host;
      int port = 0;
      if (!parse_redirect(reply.str(), &host, &port)) return reply;  // for the caller to judge
      if (++redirects > kRedirectsMax) {
        throw Error(ErrorCode::kUnavailable, "redis cluster: slot " + std::to_string(slot) + ": more than " +
                                                 std::to_string(kRedirectsMax) + " redirections (the last: " +
                                                 std::string(reply.str()) + ")");
      }
      if (moved) {
        try {
          refresh_map();
        } catch (const Error&) {
          stale_ = true;
        }
      }
      conn = &node(host, port);
      asking = !moved;
      continue;
    }
    if (is_retryable(reply)) {
      if (steady_ms() + backoff > deadline) return reply;  // the budget is spent: the caller's error
      const bool down = starts_with(reply.str(), "CLUSTERDOWN");
      (down ? g_clusterdown : g_tryagain)++;
      std::this_thread::sleep_for(std::chrono::milliseconds(backoff));
      backoff = std::min(backoff * 2, kRetryBackoffMaxMs);
      if (down) stale_ = true;
      if (slot >= 0) {
        conn = &route(args, &slot);  // the map's owner again (a TRYAGAIN after ASK included)
      }
      continue;
    }
    return reply;
  }
}

// SCRIPT ...: to every master; the first master's reply (or the first error) is the answer.
Reply ClusterRouter::broadcast(const Args& args) {
  ensure_ready();
  Reply first;
  bool have = false;
  for (RedisConn* m : masters_) {
    Reply r = m->command(args);
    if (!have || (r.is_error() && !first.is_error())) {
      first = std::move(r);
      have = true;
    }
  }
  return first;
}

void ClusterRouter::drop_dangling() {
  if (dangling_) abandon();
  dangling_ = false;
}

Reply ClusterRouter::command(const Args& args) {
  drop_dangling();
  if (!pending_.empty()) CC_BUG("redis: command() with pipelined replies unread");
  if (args.size() >= 1) {
    const std::vector<const char*> argv = args.argv();
    if (iequals(arg(args, 0, argv), "SCRIPT")) return broadcast(args);
  }
  int slot = -1;
  RedisConn* conn = &route(args, &slot);
  return execute(args, slot, conn, Reply(), false);
}

void ClusterRouter::enqueue(Args args, const std::function<RedisConn&(const Args&, int* slot)>& pick) {
  Pending p;
  try {
    p.conn = &pick(args, &p.slot);
    p.conn->append(args);
  } catch (const Error&) {
    // The node is down or backing off: it may have failed over, so the map is asked again on
    // the next call (without this, a map read before the promotion would be kept forever).
    stale_ = true;
    p.conn = nullptr;
    p.error = std::current_exception();
  }
  p.args = std::move(args);
  pending_.push_back(std::move(p));
}

void ClusterRouter::append(Args args) {
  drop_dangling();
  if (read_done_) CC_BUG("redis: append() while pipelined replies are being handed back");
  enqueue(std::move(args), [this](const Args& a, int* slot) -> RedisConn& { return route(a, slot); });
}

void ClusterRouter::append_at(Args args, int slot) {
  drop_dangling();
  if (read_done_) CC_BUG("redis: append_at() while pipelined replies are being handed back");
  CC_ASSERT(slot >= 0 && slot < kClusterSlots, "append_at: a slot out of range");
  CC_ASSERT(first_key_index(args) < 0, "append_at is for keyless commands");
  enqueue(std::move(args), [this, slot](const Args&, int*) -> RedisConn& {
    ensure_ready();
    const int16_t m = slots_[static_cast<std::size_t>(slot)];
    if (m < 0) {
      stale_ = true;
      throw Error(ErrorCode::kUnavailable, "redis cluster: slot " + std::to_string(slot) + " is not served by any master");
    }
    return *masters_[static_cast<std::size_t>(m)];
  });
}

Reply ClusterRouter::command_on(const std::string& addr, const Args& args) {
  drop_dangling();
  if (!pending_.empty()) CC_BUG("redis: command_on() with pipelined replies unread");
  for (auto& [a, c] : nodes_) {
    if (a != addr) continue;
    try {
      return c->command(args);
    } catch (const Error&) {
      stale_ = true;
      throw;
    }
  }
  throw Error(ErrorCode::kUnavailable, "redis cluster: node " + addr + " is not known");
}

// Sends every node's buffer, then reads every reply; then the redirected ones are retried.
void ClusterRouter::read_all() {
  for (auto& [a, c] : nodes_) {
    if (c->appended_unread() == 0) continue;
    try {
      c->flush();
    } catch (const Error&) {
      // The node dropped; its pipelined replies fail below (its connection is gone).
    }
  }
  for (Pending& p : pending_) {
    if (p.error || !p.conn) continue;
    try {
      p.reply = p.conn->read_reply();
    } catch (const Error&) {
      p.error = std::current_exception();
      stale_ = true;
    }
  }
  read_done_ = true;
  for (Pending& p : pending_) {
    if (p.error || !(is_redirect(p.reply) || is_retryable(p.reply))) continue;
    try {
      p.reply = execute(p.args, p.slot, p.conn, std::move(p.reply), true);
    } catch (const Error&) {
      p.error = std::current_exception();
    }
  }
}

Reply ClusterRouter::read_reply() {
  if (pending_.empty()) CC_BUG("redis: read_reply() with nothing pipelined");
  if (!read_done_) read_all();
  Pending p = std::move(pending_.front());
  pending_.pop_front();
  if (pending_.empty()) read_done_ = false;
  last_node_ = p.conn ? p.conn->url().host + ":" + std::to_string(p.conn->url().port) : std::string();
  if (p.error) {
    // The other replies stay readable (they are read already): a caller may go on reading them
    // (the gate does: one master's failure is not the others'). A caller that stops, as after a
    // single node's lost connection, has them dropped by its next command or append.
    if (!pending_.empty()) dangling_ = true;
    std::rethrow_exception(p.error);
  }
  if (pending_.empty()) dangling_ = false;
  return std::move(p.reply);
}

void ClusterRouter::abandon() {
  dangling_ = false;
  pending_.clear();
  read_done_ = false;
  for (auto& [a, c] : nodes_) {
    if (c->appended_unread() != 0) c->disconnect();
  }
}

}  // namespace couponcore::redis
