// Partners, API keys and authentication; see partner_service.hpp.
#include "auth/partner_service.hpp"

#include <chrono>

#include "auth/api_key.hpp"
#include "couponcore/engine.hpp"
#include "couponcore/error.hpp"
#include "couponcore/limits.hpp"

namespace couponcore::auth {

namespace {

constexpr int32_t kPartnerListMax = 1000;

int64_t steady_now_ms() {
  using namespace std::chrono;
  return duration_cast<milliseconds>(steady_clock::now().time_since_epoch()).count();
}

[[noreturn]] void throw_partner_not_found(int64_t partner_id) {
  throw_not_found("partner " + std::to_string(partner_id) + " not found");
}

}  // namespace

void throw_unauthenticated() { throw Error(ErrorCode::kUnauthenticated, "invalid API key"); }

void check_auth_options(const AuthOptions& o) {
  if (o.cache_ttl_ms < 0 || o.cache_ttl_ms > limits::kAuthCacheTtlMsMax) {
    throw_invalid("auth cache TTL must be 0.." + std::to_string(limits::kAuthCacheTtlMsMax) + " ms");
  }
  if (o.cache_entries_max > limits::kAuthCacheEntriesMax) {
    throw_invalid("auth cache entries must be at most " + std::to_string(limits::kAuthCacheEntriesMax));
  }
}

void check_partner_name(const std::string& name) {
  if (name.empty()) throw_invalid("partner name must not be empty");
  if (name.size() > limits::kPartnerNameBytesMax) {
    throw_invalid("partner name is " + std::to_string(name.size()) + " bytes; the limit is " +
                  std::to_string(limits::kPartnerNameBytesMax));
  }
  limits::check_text(name, "partner name");
}

PartnerService::PartnerService(PartnerStore& store, const AuthOptions& options, SharedKeyCache* shared)
    : store_(store), options_(options), shared_(shared), cache_(options.cache_entries_max, options.cache_ttl_ms) {
  check_auth_options(options);
}

void PartnerService::check_keyed_partner(int64_t partner_id) {
  if (partner_id == 0) throw_invalid("partner 0 is the embedded default and holds no API keys");
  if (partner_id < 0) throw_partner_not_found(partner_id);
}

PartnerKey PartnerService::create(const std::string& name) {
  check_partner_name(name);
  PartnerKey out;
  out.api_key = generate_api_key();
  out.partner = store_.insert_partner(name, key_sha256_hex(out.api_key), key_hint(out.api_key), now_us());
  return out;
}

PartnerKey PartnerService::rotate(int64_t partner_id) {
  check_keyed_partner(partner_id);
  PartnerKey out;
  out.api_key = generate_api_key();
  std::optional<KeyChange> change =
      store_.rotate_key(partner_id, key_sha256_hex(out.api_key), key_hint(out.api_key), now_us());
  if (!change) throw_partner_not_found(partner_id);
  forget(change->revoked_sha256_hex);
  out.partner = change->partner;
  return out;
}

Partner PartnerService::revoke(int64_t partner_id) {
  check_keyed_partner(partner_id);
  std::optional<KeyChange> change = store_.revoke_keys(partner_id, now_us());
  if (!change) throw_partner_not_found(partner_id);
  forget(change->revoked_sha256_hex);
  return change->partner;
}

void PartnerService::forget(const std::vector<std::string>& revoked) {
  revocation_epoch_.fetch_add(1, std::memory_order_acq_rel);
  for (const std::string& h : revoked) {
    cache_.erase(h);
    if (!shared_) continue;
    try {
      shared_->erase(h);
    } catch (const Error&) {
      // The revocation is committed; a shared entry that could not be erased dies within its
      // TTL, the stated bound. (Failing here would invite a retry that has nothing to erase.)
    }
  }
}

Partner PartnerService::get(int64_t partner_id) {
  if (partner_id < 0) throw_partner_not_found(partner_id);
  std::optional<Partner> p = store_.get(partner_id);
  if (!p) throw_partner_not_found(partner_id);
  return *p;
}

bool PartnerService::exists(int64_t partner_id) { return partner_id >= 0 && store_.get(partner_id).has_value(); }

std::vector<Partner> PartnerService::list(int64_t after_id, int32_t limit) {
  if (limit < 1 || limit > kPartnerListMax) throw_invalid("limit must be 1.." + std::to_string(kPartnerListMax));
  return store_.list(after_id, limit);
}

Partner PartnerService::authenticate(std::string_view api_key) {
  authentications_.fetch_add(1, std::memory_order_relaxed);
  if (api_key.size() > limits::kApiKeyBytesMax || !is_well_formed(api_key)) {
    failures_.fetch_add(1, std::memory_order_relaxed);
    throw_unauthenticated();
  }
  const std::string hash = key_sha256_hex(api_key);
  const int64_t now_ms = steady_now_ms();
  if (auto hit = cache_.get(hash, now_ms)) {
    cache_hits_.fetch_add(1, std::memory_order_relaxed);
    if (!*hit) {
      failures_.fetch_add(1, std::memory_order_relaxed);
      throw_unauthenticated();
    }
    return **hit;
  }
  if (shared_) {
    std::optional<SharedKeyCache::Hit> hit;
    try {
      hit = shared_->get(hash);
    } catch (const Error&) {
      // The shared cache is an optimisation: when it is down, the database answers.
    }
    if (hit) {
      l2_hits_.fetch_add(1, std::memory_order_relaxed);
      // The local copy dies with the shared entry, so a revocation's bound stays one TTL.
      cache_.put_for(hash, hit->partner, now_ms, hit->ttl_left_ms);
      return hit->partner;
    }
  }
  // A rotate/revoke that commits while we read must not be undone by our cache put: forget()
  // bumps the epoch before it erases, so if the epoch moved after our read we erase what we put
  // (whichever of the two erases runs last, the stale entry is gone).
  const uint64_t epoch = revocation_epoch_.load(std::memory_order_acquire);
  db_queries_.fetch_add(1, std::memory_order_relaxed);
  std::optional<KeyRecord> rec = store_.find_key(hash);
  const bool ok = rec && !rec->revoked && constant_time_equal(rec->key_sha256_hex, hash);
  if (!ok) {
    cache_.put(hash, std::nullopt, now_ms);  // revocations never make a dead key valid again
    failures_.fetch_add(1, std::memory_order_relaxed);
    throw_unauthenticated();
  }
  cache_.put(hash, rec->partner, now_ms);
  if (revocation_epoch_.load(std::memory_order_acquire) != epoch) {
    cache_.erase(hash);
    return rec->partner;
  }
  if (shared_) {
    try {
      shared_->put(hash, rec->partner, options_.cache_ttl_ms);
    } catch (const Error&) {
    }
  }
  return rec->partner;
}

AuthCounters PartnerService::counters() const {
  AuthCounters c;
  c.authentications = authentications_.load(std::memory_order_relaxed);
  c.failures = failures_.load(std::memory_order_relaxed);
  c.cache_hits = cache_hits_.load(std::memory_order_relaxed);
  c.l2_hits = l2_hits_.load(std::memory_order_relaxed);
  c.db_queries = db_queries_.load(std::memory_order_relaxed);
  return c;
}

}  // namespace couponcore::auth
