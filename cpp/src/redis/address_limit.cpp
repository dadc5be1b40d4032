// The per-client-address limit in Redis; see address_limit.hpp.
#include "redis/address_limit.hpp"

#include "redis/lua_scripts.hpp"

namespace couponcore::redis {

RedisAddressLimit::RedisAddressLimit(const RedisUrl& url, RedisConnOptions options, std::string key_prefix)
    : prefix_(std::move(key_prefix)), conn_(url, std::move(options)), script_(lua::kAddressLimit) {}

int64_t RedisAddressLimit::refuse_ms(std::string_view address, int32_t limit, int32_t window_ms) {
  const std::string key = prefix_ + "{addr}:" + std::to_string(window_ms);
  std::lock_guard lock(mu_);
  Reply r = eval(conn_, script_, {key}, Args{}.add(address).add(limit).add(window_ms));
  check_reply(r, "address limit");
  long long ms = 0;
  if (!reply_int(r.raw(), &ms) || ms < 0 || ms > window_ms) {
    throw Error(ErrorCode::kInternal, "address limit: unexpected reply");
  }
  return ms;
}

}  // namespace couponcore::redis
