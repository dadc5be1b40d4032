// A small synchronous Redis client over hiredis: URL parsing, a connection that reconnects
// with exponential backoff (AUTH, SELECT and CLIENT SETNAME on every connect), pipelining, and
// Lua scripts by EVALSHA with a reload on NOSCRIPT.
//
// Written to the hiredis subset that 0.14 (Debian 12) and 1.x share: redisConnectWithTimeout,
// redisSetTimeout, redisEnableKeepAlive, redisCommandArgv, redisAppendCommandArgv,
// redisGetReply, freeReplyObject, redisFree. RESP2 only.
//
// Entry points:
//   RedisUrl::parse("redis://[[user]:password@]host[:port][/db]")
//   RedisUrl::parse("redis+cluster://[[user]:password@]host:port[,host:port...][/0]")  Redis Cluster
//   RedisUrl::parse("redis+sentinel://[[user]:password@]host:port[,host:port...]/master[/db]
//                    [?sentinel_password=...[&sentinel_username=...]]")
//       a primary found through Redis Sentinel: every connect asks the sentinels
//       (SENTINEL get-master-addr-by-name) and checks ROLE; a READONLY reply (the primary was
//       demoted) drops the connection once the pipeline is read, so the next call finds the new one.
//   RedisConn conn(url, options);  conn.command(Args{"GET", key})
//   conn.append(args) ... conn.read_reply()   pipelining: replies come back in order
//   eval(conn, script, keys, args)            EVALSHA, SCRIPT LOAD on NOSCRIPT
//
// Errors: an I/O failure or timeout throws Error(kUnavailable) and drops the connection (the
// next call reconnects, after the backoff); error replies are returned as Reply (type error)
// for the caller to judge, or thrown by check_reply(): LOADING, BUSY, MASTERDOWN, READONLY,
// TRYAGAIN, CLUSTERDOWN, OOM -> kUnavailable; anything else -> kInternal.
//
// Redis Cluster (a redis+cluster:// URL): the same RedisConn routes each command by its first
// key's slot to the master serving it, follows MOVED / ASK and retries TRYAGAIN / CLUSTERDOWN
// (redis/cluster.hpp). What callers must know: every command's keys lie in one slot (a script
// call's keys share a hash tag; asserted); SCRIPT goes to every master; pipelined commands may
// run on several masters in parallel and in another order across slots, but in append order
// within one slot; a blocking read (XREADGROUP BLOCK) of several streams is for one node only,
// so callers read per stream when is_cluster().
//
// Not thread-safe: one RedisConn per thread (or behind the owner's mutex).
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "couponcore/error.hpp"

struct redisContext;
struct redisReply;

namespace couponcore::redis {

class ClusterRouter;

struct RedisUrl {
  std::string host = "127.0.0.1";
  int port = 6379;
  std::string username;  // empty: AUTH <password> (Redis < 6 style)
  std::string password;  // empty: no AUTH
  int db = 0;
  // redis+cluster:// only: the seeds (host, port); host/port above are the first seed.
  std::vector<std::pair<std::string, int>> cluster_seeds;
  // redis+sentinel:// only: the sentinels and the master's name; host/port above are resolved
  // by asking the sentinels on every connect.
  std::vector<std::pair<std::string, int>> sentinels;
  std::string sentinel_master;
  // ?sentinel_password=...[&sentinel_username=...]: AUTH on the sentinels (their requirepass);
  // empty: they are asked without. The data nodes take the credentials before the first '@'.
  std::string sentinel_username;
  std::string sentinel_password;

  bool cluster() const { return !cluster_seeds.empty(); }
  bool sentinel() const { return !sentinels.empty(); }
  // Throws kInvalidArgument for anything else (rediss:// / TLS and unix sockets included; a
  // redis:// URL with several hosts; a redis+cluster:// URL with another scheme inside or a db).
  static RedisUrl parse(std::string_view url);
  std::string redacted() const;  // host:port/db (cluster: cluster:host:port,...), never the password
};

inline constexpr std::size_t kClusterSeedsMax = 64;

// One reply; move-only. Accessors assert nothing: check type() first.
class Reply {
 public:
  Reply() = default;
  explicit Reply(redisReply* r) : r_(r) {}
  ~Reply();
  Reply(Reply&& o) noexcept : r_(o.r_) { o.r_ = nullptr; }
  Reply& operator=(Reply&& o) noexcept;
  Reply(const Reply&) = delete;
  Reply& operator=(const Reply&) = delete;

  redisReply* raw() const { return r_; }
  bool is_error() const;
  bool is_nil() const;
  bool is_array() const;
  bool is_integer() const;
  bool is_string() const;  // bulk string or status
  std::string_view str() const;  // string, status or error text
  long long integer() const;
  std::size_t size() const;  // array elements
  redisReply* at(std::size_t i) const;

 private:
  redisReply* r_ = nullptr;
};

// Views over a reply element (the parent Reply owns the memory).
std::string_view reply_str(const redisReply* r);
bool reply_is_array(const redisReply* r);
bool reply_is_nil(const redisReply* r);
// Integer replies, or strings holding a decimal integer; false otherwise.
bool reply_int(const redisReply* r, long long* out);

// Throws (see the file top) if r is an error reply. (Takes a reference: it never consumes r.)
void check_reply(const Reply& r, std::string_view what);
[[noreturn]] void throw_reply_error(std::string_view error_text, std::string_view what);

// A command's arguments, owned (copied in): safe to build from temporaries.
class Args {
 public:
  Args() = default;
  Args(std::initializer_list<std::string_view> args);
  Args& add(std::string_view a);
  Args& add(const char* a) { return add(std::string_view(a)); }
  Args& add(const std::string& a) { return add(std::string_view(a)); }
  Args& add(int64_t v);
  Args& add(int v) { return add(static_cast<int64_t>(v)); }
  Args& add(uint32_t v) { return add(static_cast<int64_t>(v)); }
  Args& add(uint64_t v) { return add(static_cast<int64_t>(v)); }
  std::size_t size() const { return lens_.size(); }
  std::string_view at(std::size_t i) const { return std::string_view(buf_.data() + offsets_[i], lens_[i]); }
  // Valid until the next add().
  std::vector<const char*> argv() const;
  const std::vector<std::size_t>& lens() const { return lens_; }

 private:
  std::string buf_;
  std::vector<std::size_t> offsets_;
  std::vector<std::size_t> lens_;
};

struct RedisConnOptions {
  int64_t connect_timeout_ms = 2'000;
  int64_t command_timeout_ms = 5'000;  // socket read/write timeout; longer than any BLOCK
  int64_t backoff_initial_ms = 50;     // after a failed connect; doubles up to backoff_max_ms
  int64_t backoff_max_ms = 1'000;
  std::string client_name;             // CLIENT SETNAME; empty: none
};

class RedisConn {
 public:
  RedisConn(RedisUrl url, RedisConnOptions options);
  ~RedisConn();
  RedisConn(const RedisConn&) = delete;
  RedisConn& operator=(const RedisConn&) = delete;

  // Connects if there is no connection. While backing off after a failed attempt it throws
  // kUnavailable at once, without trying; use wait_backoff() to sleep until the next attempt.
  void ensure_connected();
  bool connected() const;
  void disconnect();
  bool is_cluster() const { return cluster_ != nullptr; }
  ClusterRouter* cluster() { return cluster_.get(); }  // null unless is_cluster()
  // Sleeps until the next connect attempt is allowed (at most max_wait_ms).
  void wait_backoff(int64_t max_wait_ms);
  uint64_t connects() const;

  Reply command(const Args& args);                     // error replies are returned
  Reply command_checked(const Args& args, std::string_view what);
  void append(const Args& args);                       // pipelining: buffered, not sent yet
  Reply read_reply();                                  // flushes, then reads the next reply
  std::size_t appended_unread() const;
  void flush();                                        // sends what append() buffered

  const RedisUrl& url() const { return url_; }
  const RedisConnOptions& options() const { return options_; }

 private:
  [[noreturn]] void fail(std::string_view what);

  RedisUrl url_;
  RedisConnOptions options_;
  redisContext* ctx_ = nullptr;
  uint64_t connects_ = 0;
  int64_t backoff_ms_ = 0;
  int64_t next_attempt_ms_ = 0;  // steady clock
  std::size_t unread_ = 0;
  std::unique_ptr<ClusterRouter> cluster_;  // redis+cluster:// only; then ctx_ stays null
  bool rediscover_ = false;  // sentinel: a READONLY reply was seen; reconnect when nothing is unread
  void resolve_sentinel();   // sets url_.host / port from the sentinels; throws kUnavailable
  void note_reply(const Reply& r);
};

// A Lua script known by its SHA1 once loaded; EVALSHA with SCRIPT LOAD on NOSCRIPT.
class Script {
 public:
  explicit Script(std::string body) : body_(std::move(body)) {}
  const std::string& body() const { return body_; }
  const std::string& sha() const { return sha_; }
  void load(RedisConn& conn);  // SCRIPT LOAD; sets sha()
  // EVALSHA sha numkeys keys... args...; the args start after the keys.
  Args evalsha_args(const std::vector<std::string>& keys) const;

 private:
  std::string body_;
  std::string sha_;
};

bool is_noscript(const Reply& r);
// One script call, reloading the script once on NOSCRIPT. Error replies are returned.
Reply eval(RedisConn& conn, Script& script, const std::vector<std::string>& keys, const Args& args);

int64_t steady_ms();

}  // namespace couponcore::redis
