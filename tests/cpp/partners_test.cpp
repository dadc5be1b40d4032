// Partners and API keys below the engine: key format and hashing (with SHA-256 / base32 test
// vectors), the key cache, and revocation reaching another process's cache within the TTL (two
// partner services on one SQLite file). These use internals (auth/, store/), so they stay out of
// the shared suite. Authentication counters, rotation, revocation, bad keys and names, and tenant
// isolation through every entry point run on both deployments in engine_behaviour_test.cpp.
#include <gtest/gtest.h>

#include <chrono>
#include <thread>

#include "auth/api_key.hpp"
#include "auth/key_cache.hpp"
#include "auth/partner_service.hpp"
#include "couponcore/engine.hpp"
#include "couponcore/error.hpp"
#include "couponcore/scope.hpp"
#include "store/sqlite/sqlite_partners.hpp"
#include "test_util.hpp"

using namespace couponcore;

namespace {

using testutil::Caught;
using testutil::catch_error;

class PartnersTest : public ::testing::Test {
 protected:
  void SetUp() override { path_ = testutil::temp_path("partners") + ".db"; }
  void TearDown() override {
    e_.reset();
    testutil::remove_db(path_);
  }
  std::unique_ptr<Engine> open(int64_t ttl_ms = 30'000) {
    AuthOptions auth;
    auth.cache_ttl_ms = ttl_ms;
    return open_embedded(EmbeddedOptions{path_, false, auth});
  }
  std::string path_;
  std::unique_ptr<Engine> e_;
};

// ---- keys ------------------------------------------------------------------------------------

TEST(ApiKeys, Sha256AndBase32TestVectors) {
  // FIPS 180-2 examples.
  EXPECT_EQ(auth::sha256_hex(""), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  EXPECT_EQ(auth::sha256_hex("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  EXPECT_EQ(auth::sha256_hex("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq"),
            "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
  // RFC 4648 section 10, lowercase and unpadded.
  auto b32 = [](std::string_view s) { return auth::base32_lower(reinterpret_cast<const uint8_t*>(s.data()), s.size()); };
  EXPECT_EQ(b32(""), "");
  EXPECT_EQ(b32("f"), "my");
  EXPECT_EQ(b32("fo"), "mzxq");
  EXPECT_EQ(b32("foo"), "mzxw6");
  EXPECT_EQ(b32("foob"), "mzxw6yq");
  EXPECT_EQ(b32("fooba"), "mzxw6ytb");
  EXPECT_EQ(b32("foobar"), "mzxw6ytboi");
}

TEST(ApiKeys, GeneratedKeysAreWellFormedAndDistinct) {
  std::string a = auth::generate_api_key(), b = auth::generate_api_key();
  EXPECT_EQ(a.size(), auth::kKeyChars);
  EXPECT_EQ(a.rfind("cc_live_", 0), 0u);
  EXPECT_TRUE(auth::is_well_formed(a));
  EXPECT_NE(a, b);
  EXPECT_FALSE(auth::is_well_formed(a.substr(0, a.size() - 1)));
  EXPECT_FALSE(auth::is_well_formed("cc_test_" + a.substr(8)));
  std::string upper = a;
  upper.back() = 'A';
  EXPECT_FALSE(auth::is_well_formed(upper));
  EXPECT_TRUE(auth::constant_time_equal(auth::key_sha256_hex(a), auth::key_sha256_hex(a)));
  EXPECT_FALSE(auth::constant_time_equal(auth::key_sha256_hex(a), auth::key_sha256_hex(b)));
}

TEST(ApiKeys, CacheIsBoundedAndExpires) {
  auth::KeyCache cache(10, 1000);
  Partner p;
  p.id = 7;
  for (int i = 0; i < 100; ++i) cache.put(auth::sha256_hex(std::to_string(i)), p, 0);
  EXPECT_LE(cache.size(), 10u);
  EXPECT_TRUE(cache.get(auth::sha256_hex("99"), 10).has_value());   // newest kept
  EXPECT_FALSE(cache.get(auth::sha256_hex("0"), 10).has_value());   // oldest evicted
  EXPECT_FALSE(cache.get(auth::sha256_hex("99"), 1000).has_value());  // expired at the TTL
  cache.put(auth::sha256_hex("neg"), std::nullopt, 0);
  auto neg = cache.get(auth::sha256_hex("neg"), 1);
  ASSERT_TRUE(neg.has_value());
  EXPECT_FALSE(neg->has_value());  // a cached "no such key"
}

// ---- partners and authentication --------------------------------------------------------------

// The key a partner is given has the format auth::is_well_formed checks (an internal helper, so
// this stays here). Creating partners and authenticating, through the Engine API on both
// deployments: engine_behaviour_test.cpp, CreatePartnerShowsTheKeyOnceAndAuthenticates.
TEST_F(PartnersTest, CreatedKeysAreWellFormed) {
  e_ = open();
  PartnerKey pk = e_->create_partner("Acme Shop");
  EXPECT_TRUE(auth::is_well_formed(pk.api_key));
  EXPECT_TRUE(auth::is_well_formed(e_->rotate_partner_key(pk.partner.id).api_key));
}

// Store-level, on SQLite: an embedded file has one engine (so its own cache is the only one, and
// a revocation there is immediate). Two partner services on one file stand for two processes
// sharing a database: the other one's cache keeps a revoked key at most the TTL. (Production
// engines sharing the Redis cache: production_lifecycle_test.cpp.)
TEST_F(PartnersTest, RevocationReachesOtherCachesWithinTheTtl) {
  constexpr int64_t kTtlMs = 300;
  AuthOptions auth;
  auth.cache_ttl_ms = kTtlMs;
  SqliteStore store_a(path_, false), store_b(path_, false);
  SqlitePartnerStore partners_a(store_a), partners_b(store_b);
  auth::PartnerService a(partners_a, auth), b(partners_b, auth);
  PartnerKey pk = a.create("p");
  EXPECT_EQ(b.authenticate(pk.api_key).id, pk.partner.id);  // cached in b
  const auto revoked_at = std::chrono::steady_clock::now();
  a.revoke(pk.partner.id);
  EXPECT_EQ(catch_error([&] { a.authenticate(pk.api_key); }).code, ErrorCode::kUnauthenticated);
  // b may still answer from its cache, but not past the TTL.
  for (;;) {
    Caught c = catch_error([&] { b.authenticate(pk.api_key); });
    const auto waited = std::chrono::steady_clock::now() - revoked_at;
    if (c.thrown) {
      EXPECT_EQ(c.code, ErrorCode::kUnauthenticated);
      break;
    }
    ASSERT_LT(waited, std::chrono::milliseconds(kTtlMs + 200)) << "revoked key still accepted past the TTL";
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  EXPECT_EQ(b.counters().db_queries, 2u);  // the first lookup, and the one after the TTL
}

}  // namespace
