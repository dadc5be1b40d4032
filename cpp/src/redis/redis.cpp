// hiredis wrapper: see redis.hpp.
#include "redis/redis.hpp"

#include "redis/cluster.hpp"

#include "util/assert.hpp"

#include <hiredis/hiredis.h>
#include <pthread.h>
#include <signal.h>
#include <sys/time.h>

#include <algorithm>
#include <cctype>
#include <charconv>
#include <chrono>
#include <cstring>
#include <thread>

namespace couponcore::redis {

namespace {

constexpr std::size_t kUrlBytesMax = 2048;

timeval to_timeval(int64_t ms) {
  timeval tv;
  tv.tv_sec = static_cast<time_t>(ms / 1000);
  tv.tv_usec = static_cast<suseconds_t>((ms % 1000) * 1000);
  return tv;
}

int hex_value(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

std::string percent_decode(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  for (std::size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '%') {
      if (i + 2 >= s.size()) throw_invalid("redis url: bad percent escape");
      const int hi = hex_value(s[i + 1]);
      const int lo = hex_value(s[i + 2]);
      if (hi < 0 || lo < 0) throw_invalid("redis url: bad percent escape");
      out.push_back(static_cast<char>(hi * 16 + lo));
      i += 2;
    } else {
      out.push_back(s[i]);
    }
  }
  return out;
}

bool parse_int(std::string_view s, int* out) {
  if (s.empty()) return false;
  auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), *out);
  return ec == std::errc() && end == s.data() + s.size();
}

bool starts_with(std::string_view s, std::string_view p) { return s.substr(0, p.size()) == p; }

// hiredis 0.14 writes with write(2): a peer that closed the socket (CLIENT KILL, a restart)
// raises SIGPIPE, which kills the process by default. Like libpq, block it in this thread
// around our socket I/O and swallow one that we caused.
class SigpipeGuard {
 public:
  SigpipeGuard() {
    sigset_t pipe_only;
    sigemptyset(&pipe_only);
    sigaddset(&pipe_only, SIGPIPE);
    pthread_sigmask(SIG_BLOCK, &pipe_only, &old_);
    sigset_t pending;
    sigpending(&pending);
    was_pending_ = sigismember(&pending, SIGPIPE) == 1;
  }
  ~SigpipeGuard() {
    if (!was_pending_) {
      sigset_t pending;
      sigpending(&pending);
      if (sigismember(&pending, SIGPIPE) == 1) {
        sigset_t pipe_only;
        sigemptyset(&pipe_only);
        sigaddset(&pipe_only, SIGPIPE);
        const timespec zero{0, 0};
        sigtimedwait(&pipe_only, nullptr, &zero);
      }
    }
    pthread_sigmask(SIG_SETMASK, &old_, nullptr);
  }
  SigpipeGuard(const SigpipeGuard&) = delete;
  SigpipeGuard& operator=(const SigpipeGuard&) = delete;

 private:
  sigset_t old_;
  bool was_pending_ = false;
};

}  // namespace

int64_t steady_ms() {
  using namespace std::chrono;
  return duration_cast<milliseconds>(steady_clock::now().time_since_epoch()).count();
}

// ---- URL -------------------------------------------------------------------------------------

namespace {

// redis+cluster://[[user]:password@]host:port[,host:port...][/0][?...]
RedisUrl parse_cluster_url(std::string_view url) {
  constexpr std::string_view kForm = "redis+cluster://[[user]:password@]host:port[,host:port...]";
  std::string_view rest = url.substr(std::string_view("redis+cluster://").size());
  if (rest.find("://") != std::string_view::npos) {
    throw_invalid("redis url mixes the cluster and single-node forms: give " + std::string(kForm) +
                  " (seeds as host:port, no scheme of their own)");
  }
  if (const std::size_t q = rest.find('?'); q != std::string_view::npos) rest = rest.substr(0, q);
  RedisUrl out;
  if (const std::size_t at = rest.rfind('@'); at != std::string_view::npos) {
    // Parse the credentials as a single-node URL would.
    RedisUrl creds = RedisUrl::parse("redis://" + std::string(rest.substr(0, at + 1)) + "h");
    out.username = creds.username;
    out.password = creds.password;
    rest = rest.substr(at + 1);
  }
  if (const std::size_t slash = rest.find('/'); slash != std::string_view::npos) {
    const std::string_view path = rest.substr(slash + 1);
    if (!path.empty() && path != "0") throw_invalid("redis+cluster url: Redis Cluster has database 0 only (got /" + std::string(path) + ")");
    rest = rest.substr(0, slash);
  }
  while (true) {
    const std::size_t comma = rest.find(',');
    const std::string_view seed = rest.substr(0, comma);
    if (seed.empty()) throw_invalid("redis+cluster url: an empty seed; the form is " + std::string(kForm));
    if (seed.find('@') != std::string_view::npos) throw_invalid("redis+cluster url: credentials go once, before the first seed");
    RedisUrl one = RedisUrl::parse("redis://" + std::string(seed));
    if (seed.find(':') == std::string_view::npos || (seed.front() == '[' && seed.find("]:") == std::string_view::npos)) {
      throw_invalid("redis+cluster url: seed '" + std::string(seed) + "' needs a port (host:port)");
    }
    out.cluster_seeds.emplace_back(one.host, one.port);
    if (out.cluster_seeds.size() > kClusterSeedsMax) throw_invalid("redis+cluster url: more than 64 seeds");
    if (comma == std::string_view::npos) break;
    rest = rest.substr(comma + 1);
  }
  out.host = out.cluster_seeds.front().first;
  out.port = out.cluster_seeds.front().second;
  return out;
}

// The sentinels' own credentials: ?sentinel_password=...[&sentinel_username=...] (percent-encoded).
void parse_sentinel_query(std::string_view q, RedisUrl* out) {
  while (!q.empty()) {
    const std::size_t amp = q.find('&');
    const std::string_view kv = q.substr(0, amp);
    q = amp == std::string_view::npos ? std::string_view() : q.substr(amp + 1);
    const std::size_t eq = kv.find('=');
    const std::string_view k = kv.substr(0, eq);
    const std::string v = eq == std::string_view::npos ? std::string() : percent_decode(kv.substr(eq + 1));
    if (k == "sentinel_password") {
      out->sentinel_password = v;
    } else if (k == "sentinel_username") {
      out->sentinel_username = v;
    } else {
      throw_invalid("redis+sentinel url: unknown parameter '" + std::string(k) +
                    "' (known: sentinel_password, sentinel_username)");
    }
  }
  if (!out->sentinel_username.empty() && out->sentinel_password.empty()) {
    throw_invalid("redis+sentinel url: sentinel_username needs sentinel_password");
  }
}

RedisUrl parse_sentinel_url(std::string_view url) {
  constexpr std::string_view kForm =
      "redis+sentinel://[[user]:password@]host:port[,host:port...]/master_name[/db][?sentinel_password=...]";
  std::string_view rest = url.substr(std::string_view("redis+sentinel://").size());
  if (rest.find("://") != std::string_view::npos) throw_invalid("redis url mixes the sentinel and other forms: give " + std::string(kForm));
  RedisUrl out;
  if (const std::size_t q = rest.find('?'); q != std::string_view::npos) {
    parse_sentinel_query(rest.substr(q + 1), &out);
    rest = rest.substr(0, q);
  }
  if (const std::size_t at = rest.rfind('@'); at != std::string_view::npos) {
    RedisUrl creds = RedisUrl::parse("redis://" + std::string(rest.substr(0, at + 1)) + "h");
    out.username = creds.username;
    out.password = creds.password;
    rest = rest.substr(at + 1);
  }
  const std::size_t slash = rest.find('/');
  if (slash == std::string_view::npos || slash + 1 >= rest.size()) {
    throw_invalid("redis+sentinel url: the master's name is missing; the form is " + std::string(kForm));
  }
  std::string_view path = rest.substr(slash + 1);
  rest = rest.substr(0, slash);
  std::string_view name = path;
  if (const std::size_t s2 = path.find('/'); s2 != std::string_view::npos) {
    name = path.substr(0, s2);
    const std::string_view db = path.substr(s2 + 1);
    if (!db.empty() && (!parse_int(db, &out.db) || out.db < 0 || out.db > 1'000'000)) {
      throw_invalid("redis+sentinel url: the part after the master's name must be a database number");
    }
  }
  if (name.empty() || name.size() > 256) throw_invalid("redis+sentinel url: the master's name must be 1..256 bytes");
  out.sentinel_master = percent_decode(name);
  while (true) {
    const std::size_t comma = rest.find(',');
    const std::string_view one = rest.substr(0, comma);
    if (one.empty()) throw_invalid("redis+sentinel url: an empty sentinel address; the form is " + std::string(kForm));
    if (one.find('@') != std::string_view::npos) throw_invalid("redis+sentinel url: credentials go once, before the first sentinel");
    if (one.find(':') == std::string_view::npos) throw_invalid("redis+sentinel url: sentinel '" + std::string(one) + "' needs a port (host:port)");
    RedisUrl u = RedisUrl::parse("redis://" + std::string(one));
    out.sentinels.emplace_back(u.host, u.port);
    if (out.sentinels.size() > kClusterSeedsMax) throw_invalid("redis+sentinel url: more than 64 sentinels");
    if (comma == std::string_view::npos) break;
    rest = rest.substr(comma + 1);
  }
  out.host = out.sentinels.front().first;  // replaced by the master's address on connect
  out.port = out.sentinels.front().second;
  return out;
}

}  // namespace

RedisUrl RedisUrl::parse(std::string_view url) {
  if (url.size() > kUrlBytesMax) throw_invalid("redis url is over 2048 bytes");
  if (starts_with(url, "redis+cluster://")) return parse_cluster_url(url);
  if (starts_with(url, "redis+sentinel://")) return parse_sentinel_url(url);
  constexpr std::string_view kScheme = "redis://";
  if (!starts_with(url, kScheme)) {
    throw_invalid("redis url must look like redis://[[user]:password@]host[:port][/db] or, for Redis Cluster, "
                  "redis+cluster://host:port[,host:port...] (rediss:// and unix sockets are not supported)");
  }

  RedisUrl out;
  std::string_view rest = url.substr(kScheme.size());
  if (const std::size_t q = rest.find('?'); q != std::string_view::npos) rest = rest.substr(0, q);
  std::string_view path;
  if (const std::size_t slash = rest.find('/'); slash != std::string_view::npos) {
    path = rest.substr(slash + 1);
    rest = rest.substr(0, slash);
  }
  if (const std::size_t at = rest.rfind('@'); at != std::string_view::npos) {
    std::string_view userinfo = rest.substr(0, at);
    rest = rest.substr(at + 1);
    if (const std::size_t colon = userinfo.find(':'); colon != std::string_view::npos) {
      out.username = percent_decode(userinfo.substr(0, colon));
      out.password = percent_decode(userinfo.substr(colon + 1));
    } else {
      out.password = percent_decode(userinfo);  // redis://secret@host: a bare password
    }
  }
  std::string_view host = rest;
  if (host.find(',') != std::string_view::npos) {
    throw_invalid("redis url mixes the cluster and single-node forms: a redis:// url names one server; for the "
                  "seeds of a Redis Cluster use redis+cluster://host:port,host:port");
  }
  if (!host.empty() && host.front() == '[') {  // [ipv6]:port
    const std::size_t close = host.find(']');
    if (close == std::string_view::npos) throw_invalid("redis url: unclosed [ in host");
    out.host = std::string(host.substr(1, close - 1));
    host = host.substr(close + 1);
    if (!host.empty()) {
      if (host.front() != ':' || !parse_int(host.substr(1), &out.port)) throw_invalid("redis url: bad port");
    }
  } else if (const std::size_t colon = host.rfind(':'); colon != std::string_view::npos) {
    if (!parse_int(host.substr(colon + 1), &out.port)) throw_invalid("redis url: bad port");
    out.host = std::string(host.substr(0, colon));
  } else {
    out.host = std::string(host);
  }
  if (out.host.empty()) out.host = "127.0.0.1";
  if (out.port <= 0 || out.port > 65535) throw_invalid("redis url: port must be 1..65535");
  if (!path.empty() && (!parse_int(path, &out.db) || out.db < 0 || out.db > 1'000'000)) {
    throw_invalid("redis url: the path must be a database number");
  }
  return out;
}

std::string RedisUrl::redacted() const {
  if (sentinel()) {
    std::string s = "sentinel:" + sentinel_master + "@";
    for (std::size_t i = 0; i < sentinels.size(); ++i) {
      s += (i ? "," : "") + sentinels[i].first + ":" + std::to_string(sentinels[i].second);
    }
    return s + " (master " + host + ":" + std::to_string(port) + "/" + std::to_string(db) + ")";
  }
  if (cluster()) {
    std::string s = "cluster:";
    for (std::size_t i = 0; i < cluster_seeds.size(); ++i) {
      s += (i ? "," : "") + cluster_seeds[i].first + ":" + std::to_string(cluster_seeds[i].second);
    }
    return s;
  }
  return host + ":" + std::to_string(port) + "/" + std::to_string(db);
}

// ---- replies ---------------------------------------------------------------------------------

Reply::~Reply() {
  if (r_) freeReplyObject(r_);
}

Reply& Reply::operator=(Reply&& o) noexcept {
  if (this != &o) {
    if (r_) freeReplyObject(r_);
    r_ = o.r_;
    o.r_ = nullptr;
  }
  return *this;
}

bool Reply::is_error() const { return r_ && r_->type == REDIS_REPLY_ERROR; }
bool Reply::is_nil() const { return !r_ || r_->type == REDIS_REPLY_NIL; }
bool Reply::is_array() const { return r_ && r_->type == REDIS_REPLY_ARRAY; }
bool Reply::is_integer() const { return r_ && r_->type == REDIS_REPLY_INTEGER; }
bool Reply::is_string() const { return r_ && (r_->type == REDIS_REPLY_STRING || r_->type == REDIS_REPLY_STATUS); }
std::string_view Reply::str() const { return reply_str(r_); }
long long Reply::integer() const { return r_ ? r_->integer : 0; }
std::size_t Reply::size() const { return is_array() ? r_->elements : 0; }
redisReply* Reply::at(std::size_t i) const { return i < size() ? r_->element[i] : nullptr; }

std::string_view reply_str(const redisReply* r) {
  if (!r || !r->str) return {};
  if (r->type != REDIS_REPLY_STRING && r->type != REDIS_REPLY_STATUS && r->type != REDIS_REPLY_ERROR) return {};
  return std::string_view(r->str, r->len);
}

bool reply_is_array(const redisReply* r) { return r && r->type == REDIS_REPLY_ARRAY; }
bool reply_is_nil(const redisReply* r) { return !r || r->type == REDIS_REPLY_NIL; }

bool reply_int(const redisReply* r, long long* out) {
  if (!r) return false;
  if (r->type == REDIS_REPLY_INTEGER) {
    *out = r->integer;
    return true;
  }
  if (r->type != REDIS_REPLY_STRING && r->type != REDIS_REPLY_STATUS) return false;
  std::string_view s = reply_str(r);
  if (s.empty()) return false;
  auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), *out);
  return ec == std::errc() && end == s.data() + s.size();
}

void throw_reply_error(std::string_view text, std::string_view what) {
  std::string msg = "redis: " + std::string(what) + ": " + std::string(text);
  for (std::string_view p : {"LOADING", "BUSY", "MASTERDOWN", "READONLY", "TRYAGAIN", "CLUSTERDOWN", "OOM"}) {
    if (starts_with(text, p)) throw Error(ErrorCode::kUnavailable, msg);
  }
  throw Error(ErrorCode::kInternal, msg);
}

void check_reply(const Reply& r, std::string_view what) {
  if (r.is_error()) throw_reply_error(r.str(), what);
}

// ---- args ------------------------------------------------------------------------------------

Args::Args(std::initializer_list<std::string_view> args) {
  for (std::string_view a : args) add(a);
}

Args& Args::add(std::string_view a) {
  offsets_.push_back(buf_.size());
  lens_.push_back(a.size());
  buf_.append(a);
  return *this;
}

Args& Args::add(int64_t v) {
  char tmp[24];
  auto [end, ec] = std::to_chars(tmp, tmp + sizeof tmp, v);
  return add(std::string_view(tmp, static_cast<std::size_t>(end - tmp)));
}

std::vector<const char*> Args::argv() const {
  std::vector<const char*> out(offsets_.size());
  for (std::size_t i = 0; i < offsets_.size(); ++i) out[i] = buf_.data() + offsets_[i];
  return out;
}

// ---- connection ------------------------------------------------------------------------------

RedisConn::RedisConn(RedisUrl url, RedisConnOptions options) : url_(std::move(url)), options_(std::move(options)) {
  if (url_.cluster()) cluster_ = std::make_unique<ClusterRouter>(url_, options_);
}

RedisConn::~RedisConn() { disconnect(); }

bool RedisConn::connected() const { return cluster_ ? cluster_->ready() : ctx_ != nullptr; }
uint64_t RedisConn::connects() const { return cluster_ ? cluster_->connects() : connects_; }
std::size_t RedisConn::appended_unread() const { return cluster_ ? cluster_->unread() : unread_; }

void RedisConn::flush() {
  if (cluster_ || !ctx_) return;
  SigpipeGuard guard;
  int done = 0;
  while (!done) {
    if (redisBufferWrite(ctx_, &done) != REDIS_OK) fail("sending pipelined commands");
  }
}

void RedisConn::disconnect() {
  if (cluster_) cluster_->disconnect();
  if (ctx_) redisFree(ctx_);
  ctx_ = nullptr;
  unread_ = 0;
}

void RedisConn::wait_backoff(int64_t max_wait_ms) {
  const int64_t wait = std::min(max_wait_ms, next_attempt_ms_ - steady_ms());
  if (wait > 0) std::this_thread::sleep_for(std::chrono::milliseconds(wait));
}

void RedisConn::fail(std::string_view what) {
  std::string msg = "redis " + url_.redacted() + ": " + std::string(what);
  if (ctx_ && ctx_->errstr[0]) msg += ": " + std::string(ctx_->errstr);
  disconnect();
  throw Error(ErrorCode::kUnavailable, msg);
}

// Asks each sentinel in turn for the master's address.
void RedisConn::resolve_sentinel() {
  std::string errors;
  for (const auto& [h, p] : url_.sentinels) {
    redisContext* c = redisConnectWithTimeout(h.c_str(), p, to_timeval(options_.connect_timeout_ms));
    std::string where = "sentinel " + h + ":" + std::to_string(p);
    if (!c || c->err) {
      errors += (errors.empty() ? "" : "; ") + where + ": " + (c ? c->errstr : "cannot connect");
      if (c) redisFree(c);
      continue;
    }
    redisSetTimeout(c, to_timeval(options_.connect_timeout_ms));
    auto run = [c](const Args& a) {
      std::vector<const char*> argv = a.argv();
      SigpipeGuard guard;
      return Reply(static_cast<redisReply*>(redisCommandArgv(c, static_cast<int>(a.size()), argv.data(), a.lens().data())));
    };
    if (!url_.sentinel_password.empty()) {  // ?sentinel_password=: the sentinels' own requirepass
      Args auth{"AUTH"};
      if (!url_.sentinel_username.empty()) auth.add(url_.sentinel_username);
      auth.add(url_.sentinel_password);
      Reply ar = run(auth);
      if (!ar.raw() || ar.is_error()) {
        errors += (errors.empty() ? "" : "; ") + where + (ar.raw() ? ": AUTH refused: " + std::string(ar.str()) : ": no reply to AUTH");
        redisFree(c);
        continue;
      }
    }
    Args a{"SENTINEL", "get-master-addr-by-name"};
    a.add(url_.sentinel_master);
    Reply r = run(a);
    redisFree(c);
    long long port = 0;
    if (r.raw() && r.is_array() && r.size() == 2 && reply_int(r.at(1), &port) && port > 0 && port <= 65535) {
      url_.host = std::string(reply_str(r.at(0)));
      url_.port = static_cast<int>(port);
      return;
    }
    errors += (errors.empty() ? "" : "; ") + where + ": " +
              (!r.raw() ? "no reply" : r.is_nil() ? "does not know master '" + url_.sentinel_master + "'" : std::string(r.str()));
  }
  throw Error(ErrorCode::kUnavailable, "redis sentinel: no sentinel gave the address of master '" + url_.sentinel_master + "': " + errors);
}

void RedisConn::note_reply(const Reply& r) {
  if (url_.sentinel() && r.is_error() &&
      (r.str().find("READONLY") != std::string_view::npos || r.str().find("replica instances") != std::string_view::npos)) {
    rediscover_ = true;  // the primary was demoted: find the new one once this pipeline is read
  }
}

void RedisConn::ensure_connected() {
  if (cluster_) return cluster_->ensure_ready();
  if (ctx_ && rediscover_ && unread_ == 0) disconnect();
  if (ctx_) return;
  const int64_t now = steady_ms();
  if (now < next_attempt_ms_) {
    throw Error(ErrorCode::kUnavailable, "redis " + url_.redacted() + ": unavailable; next connect attempt in " +
                                             std::to_string(next_attempt_ms_ - now) + " ms");
  }
  auto backoff = [&] {
    backoff_ms_ = backoff_ms_ == 0 ? options_.backoff_initial_ms : std::min(options_.backoff_max_ms, backoff_ms_ * 2);
    next_attempt_ms_ = steady_ms() + backoff_ms_;
  };
  rediscover_ = false;
  if (url_.sentinel()) {
    try {
      resolve_sentinel();
    } catch (const Error&) {
      backoff();
      throw;
    }
  }
  ctx_ = redisConnectWithTimeout(url_.host.c_str(), url_.port, to_timeval(options_.connect_timeout_ms));
  if (!ctx_ || ctx_->err) {
    std::string msg = "redis " + url_.redacted() + ": cannot connect";
    if (ctx_) msg += std::string(": ") + ctx_->errstr;
    disconnect();
    backoff();
    throw Error(ErrorCode::kUnavailable, msg);
  }
  try {
    if (redisSetTimeout(ctx_, to_timeval(options_.command_timeout_ms)) != REDIS_OK) fail("set timeout");
    redisEnableKeepAlive(ctx_);
    if (!url_.password.empty()) {
      Args auth{"AUTH"};
      if (!url_.username.empty()) auth.add(url_.username);
      auth.add(url_.password);
      Reply r = command(auth);
      if (r.is_error()) {
        disconnect();
        throw Error(ErrorCode::kUnavailable, "redis " + url_.redacted() + ": AUTH refused: " + std::string(r.str()));
      }
    }
    if (url_.db != 0) check_reply(command(Args{"SELECT"}.add(url_.db)), "SELECT");
    if (!options_.client_name.empty()) check_reply(command(Args{"CLIENT", "SETNAME"}.add(options_.client_name)), "CLIENT SETNAME");
    if (url_.sentinel()) {
      // A sentinel may still name a demoted primary for a moment: only a master will do.
      Reply role = command(Args{"ROLE"});
      if (!role.is_array() || role.size() < 1 || reply_str(role.at(0)) != "master") {
        throw Error(ErrorCode::kUnavailable, "redis " + url_.redacted() + ": the sentinels' master is not (yet) a master");
      }
    }
  } catch (...) {
    disconnect();
    backoff();
    throw;
  }
  ++connects_;
  backoff_ms_ = 0;
  next_attempt_ms_ = 0;
}

Reply RedisConn::command(const Args& args) {
  if (cluster_) return cluster_->command(args);
  ensure_connected();
  if (unread_ != 0) CC_BUG("redis: command() with pipelined replies unread");
  std::vector<const char*> argv = args.argv();
  SigpipeGuard guard;
  void* raw = redisCommandArgv(ctx_, static_cast<int>(args.size()), argv.data(), args.lens().data());
  if (!raw) fail("command failed");
  Reply r(static_cast<redisReply*>(raw));
  note_reply(r);
  return r;
}

Reply RedisConn::command_checked(const Args& args, std::string_view what) {
  Reply r = command(args);
  check_reply(r, what);
  return r;
}

void RedisConn::append(const Args& args) {
  if (cluster_) return cluster_->append(args);
  ensure_connected();
  std::vector<const char*> argv = args.argv();
  if (redisAppendCommandArgv(ctx_, static_cast<int>(args.size()), argv.data(), args.lens().data()) != REDIS_OK) {
    fail("append failed");
  }
  ++unread_;
}

Reply RedisConn::read_reply() {
  if (cluster_) return cluster_->read_reply();
  if (!ctx_) throw Error(ErrorCode::kUnavailable, "redis " + url_.redacted() + ": connection lost");
  if (unread_ == 0) CC_BUG("redis: read_reply() with nothing pipelined");
  void* raw = nullptr;
  int rc;
  {
    SigpipeGuard guard;
    rc = redisGetReply(ctx_, &raw);
  }
  if (rc != REDIS_OK || !raw) fail("reading a reply");
  --unread_;
  Reply r(static_cast<redisReply*>(raw));
  note_reply(r);
  return r;
}

// ---- scripts ---------------------------------------------------------------------------------

void Script::load(RedisConn& conn) {
  Reply r = conn.command_checked(Args{"SCRIPT", "LOAD"}.add(body_), "SCRIPT LOAD");
  if (!r.is_string() || r.str().size() != 40) throw Error(ErrorCode::kInternal, "redis: SCRIPT LOAD gave no sha");
  sha_ = std::string(r.str());
}

Args Script::evalsha_args(const std::vector<std::string>& keys) const {
  Args a{"EVALSHA"};
  a.add(sha_).add(static_cast<int64_t>(keys.size()));
  for (const std::string& k : keys) a.add(k);
  return a;
}

bool is_noscript(const Reply& r) { return r.is_error() && starts_with(r.str(), "NOSCRIPT"); }

Reply eval(RedisConn& conn, Script& script, const std::vector<std::string>& keys, const Args& args) {
  for (int attempt = 0; attempt < 2; ++attempt) {
    if (script.sha().empty() || attempt > 0) script.load(conn);
    Args full = script.evalsha_args(keys);
    std::vector<const char*> argv = args.argv();
    for (std::size_t i = 0; i < args.size(); ++i) full.add(std::string_view(argv[i], args.lens()[i]));
    Reply r = conn.command(full);
    if (!is_noscript(r)) return r;
  }
  throw Error(ErrorCode::kInternal, "redis: the script is missing right after SCRIPT LOAD");
}

}  // namespace couponcore::redis
