// The shared authentication cache in Redis; see auth_cache.hpp.
#include "redis/auth_cache.hpp"

#include <charconv>

namespace couponcore::redis {

namespace {

bool parse_i64(std::string_view s, int64_t* out) {
  auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), *out);
  return ec == std::errc() && end == s.data() + s.size();
}

// Anything malformed is a miss: the database answers and the entry is overwritten.
std::optional<Partner> decode(std::string_view v) {
  const std::size_t a = v.find('\n');
  const std::size_t b = a == std::string_view::npos ? a : v.find('\n', a + 1);
  if (b == std::string_view::npos) return std::nullopt;
  Partner p;
  if (!parse_i64(v.substr(0, a), &p.id) || !parse_i64(v.substr(a + 1, b - a - 1), &p.created_at_us)) return std::nullopt;
  p.name = std::string(v.substr(b + 1));
  p.active_keys = 1;  // only live keys are cached
  return p;
}

}  // namespace

RedisKeyCache::RedisKeyCache(const RedisUrl& url, RedisConnOptions options, std::string key_prefix)
    : prefix_(std::move(key_prefix)), conn_(url, std::move(options)) {}

std::optional<auth::SharedKeyCache::Hit> RedisKeyCache::get(const std::string& hash) {
  std::lock_guard lock(mu_);
  conn_.ensure_connected();
  conn_.append(Args{"GET"}.add(key(hash)));
  conn_.append(Args{"PTTL"}.add(key(hash)));
  Reply value = conn_.read_reply();
  Reply ttl = conn_.read_reply();
  check_reply(value, "auth cache GET");
  check_reply(ttl, "auth cache PTTL");
  if (value.is_nil() || !value.is_string() || !ttl.is_integer() || ttl.integer() <= 0) return std::nullopt;
  std::optional<Partner> p = decode(value.str());
  if (!p) return std::nullopt;
  return Hit{std::move(*p), ttl.integer()};
}

void RedisKeyCache::put(const std::string& hash, const Partner& p, int64_t ttl_ms) {
  if (ttl_ms <= 0) return;
  const std::string value = std::to_string(p.id) + "\n" + std::to_string(p.created_at_us) + "\n" + p.name;
  std::lock_guard lock(mu_);
  check_reply(conn_.command(Args{"SET"}.add(key(hash)).add(value).add("PX").add(ttl_ms)), "auth cache SET");
}

void RedisKeyCache::erase(const std::string& hash) {
  std::lock_guard lock(mu_);
  check_reply(conn_.command(Args{"DEL"}.add(key(hash))), "auth cache DEL");
}

}  // namespace couponcore::redis
