// Partners, API keys and tenant isolation on the embedded engine: key format and hashing (with
// SHA-256 / base32 test vectors), authentication through the cache (a counter shows steady
// state never reaches the database), rotation and revocation (and their bound across engines),
// one error for every bad key, and a partner reaching for another partner's campaign, coupon
// and user through every entry point -> kNotFound, exactly like an unknown id.
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

struct Caught {
  ErrorCode code = ErrorCode::kInternal;
  std::string message;
  bool thrown = false;
};

Caught catch_error(const std::function<void()>& fn) {
  Caught c;
  try {
    fn();
  } catch (const Error& e) {
    c = {e.code(), e.what(), true};
  }
  return c;
}

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

TEST_F(PartnersTest, CreateShowsTheKeyOnceAndAuthenticates) {
  e_ = open();
  PartnerKey pk = e_->create_partner("Acme Shop");
  EXPECT_GT(pk.partner.id, 0);
  EXPECT_EQ(pk.partner.name, "Acme Shop");
  EXPECT_EQ(pk.partner.active_keys, 1);
  EXPECT_TRUE(auth::is_well_formed(pk.api_key));
  Partner p = e_->authenticate(pk.api_key);
  EXPECT_EQ(p.id, pk.partner.id);
  EXPECT_EQ(e_->get_partner(pk.partner.id).name, "Acme Shop");
  EXPECT_EQ(e_->get_partner(0).name, "default");
  std::vector<Partner> all = e_->list_partners(0, 100);
  ASSERT_EQ(all.size(), 1u);  // after id 0
  EXPECT_EQ(all[0].id, pk.partner.id);
}

TEST_F(PartnersTest, SteadyStateAuthenticationNeverTouchesTheDatabase) {
  e_ = open();
  PartnerKey a = e_->create_partner("a"), b = e_->create_partner("b");
  for (int i = 0; i < 1000; ++i) {
    EXPECT_EQ(e_->authenticate(a.api_key).id, a.partner.id);
    EXPECT_EQ(e_->authenticate(b.api_key).id, b.partner.id);
  }
  AuthCounters n = e_->auth_counters();
  EXPECT_EQ(n.authentications, 2000u);
  EXPECT_EQ(n.db_queries, 2u);  // one per key, then the cache answers
  EXPECT_EQ(n.cache_hits, 1998u);
  // A flood of the same unknown key costs one query too (negative answers are cached).
  std::string unknown = auth::generate_api_key();
  for (int i = 0; i < 100; ++i) EXPECT_THROW(e_->authenticate(unknown), Error);
  EXPECT_EQ(e_->auth_counters().db_queries, 3u);
}

TEST_F(PartnersTest, UnknownRevokedAndMalformedKeysGetOneError) {
  e_ = open();
  PartnerKey pk = e_->create_partner("p");
  PartnerKey revoked = e_->create_partner("r");
  e_->revoke_partner_keys(revoked.partner.id);
  std::vector<std::string> bad = {
      auth::generate_api_key(), revoked.api_key, "", "cc_live_", "nonsense", pk.api_key + "x",
      pk.api_key.substr(0, pk.api_key.size() - 1), std::string(100'000, 'a'), std::string("cc_live_\0abc", 12),
  };
  for (const std::string& k : bad) {
    Caught c = catch_error([&] { e_->authenticate(k); });
    EXPECT_TRUE(c.thrown);
    EXPECT_EQ(c.code, ErrorCode::kUnauthenticated);
    EXPECT_EQ(c.message, "invalid API key");
  }
}

TEST_F(PartnersTest, RotateAndRevokeTakeEffectAtOnceInThisEngine) {
  e_ = open();
  PartnerKey pk = e_->create_partner("p");
  e_->authenticate(pk.api_key);  // cached now
  PartnerKey rotated = e_->rotate_partner_key(pk.partner.id);
  EXPECT_NE(rotated.api_key, pk.api_key);
  EXPECT_EQ(rotated.partner.active_keys, 1);
  EXPECT_EQ(catch_error([&] { e_->authenticate(pk.api_key); }).code, ErrorCode::kUnauthenticated);
  EXPECT_EQ(e_->authenticate(rotated.api_key).id, pk.partner.id);
  EXPECT_EQ(e_->revoke_partner_keys(pk.partner.id).active_keys, 0);
  EXPECT_EQ(catch_error([&] { e_->authenticate(rotated.api_key); }).code, ErrorCode::kUnauthenticated);
  EXPECT_EQ(catch_error([&] { e_->rotate_partner_key(0); }).code, ErrorCode::kInvalidArgument);
  EXPECT_EQ(catch_error([&] { e_->rotate_partner_key(999); }).code, ErrorCode::kNotFound);
  EXPECT_EQ(catch_error([&] { e_->revoke_partner_keys(-1); }).code, ErrorCode::kNotFound);
}

// An embedded file has one engine (so its own cache is the only one, and a revocation there is
// immediate). Two partner services on one file stand for two processes sharing a database: the
// other one's cache keeps a revoked key at most the TTL.
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

TEST_F(PartnersTest, BadNamesAndOptions) {
  e_ = open();
  EXPECT_EQ(catch_error([&] { e_->create_partner(""); }).code, ErrorCode::kInvalidArgument);
  EXPECT_EQ(catch_error([&] { e_->create_partner(std::string(201, 'n')); }).code, ErrorCode::kInvalidArgument);
  EXPECT_EQ(catch_error([&] { e_->create_partner("a\nb"); }).code, ErrorCode::kInvalidArgument);
  EXPECT_TRUE(e_->list_partners(0, 10).empty());
  EXPECT_EQ(catch_error([&] { e_->list_partners(0, 0); }).code, ErrorCode::kInvalidArgument);
  AuthOptions bad;
  bad.cache_ttl_ms = -1;
  EXPECT_EQ(catch_error([&] { open_embedded(EmbeddedOptions{path_ + "-2", false, bad}); }).code,
            ErrorCode::kInvalidArgument);
  testutil::remove_db(path_ + "-2");
  CampaignSpec s;
  s.name = "c";
  s.quantity = 1;
  s.partner_id = 424242;  // no such partner
  EXPECT_EQ(catch_error([&] { e_->create_campaign(s); }).code, ErrorCode::kNotFound);
}

// ---- tenant isolation ----------------------------------------------------------------------------

TEST_F(PartnersTest, AnotherPartnersObjectsAreNotFoundThroughEveryEntryPoint) {
  e_ = open();
  PartnerKey ka = e_->create_partner("a"), kb = e_->create_partner("b");
  PartnerScope a(*e_, ka.partner.id), b(*e_, kb.partner.id), dflt(*e_, 0);
  CampaignSpec s;
  s.name = "a's drop";
  s.quantity = 10;
  s.discount_kind = DiscountKind::kFixed;
  s.discount_value = 100;
  Campaign ca = a.create_campaign(s);
  EXPECT_EQ(ca.spec.partner_id, ka.partner.id);
  IssueResult ra = a.issue(ca.id, {"shared-user", ""});
  ASSERT_EQ(ra.status, IssueStatus::kIssued);
  const int64_t coupon = ra.coupon_id;
  a.use_coupon({coupon, "shared-user", "order-a", 1000});

  const int64_t unknown_campaign = ca.id + 1000;
  const int64_t unknown_coupon = make_coupon_id(ca.id, 9);
  // Word for word the unknown id's error, once each message's id is blanked out.
  auto blank_ids = [&](std::string m) {
    for (int64_t id : {unknown_coupon, coupon, unknown_campaign, ca.id}) {  // longest first
      const std::string digits = std::to_string(id);
      for (std::size_t at; (at = m.find(digits)) != std::string::npos;) m.replace(at, digits.size(), "#");
    }
    return m;
  };
  auto same_as_unknown = [&](const std::function<void()>& theirs, const std::function<void()>& unknown) {
    Caught t = catch_error(theirs), u = catch_error(unknown);
    EXPECT_TRUE(t.thrown);
    EXPECT_EQ(t.code, ErrorCode::kNotFound) << t.message;
    EXPECT_EQ(u.code, ErrorCode::kNotFound) << u.message;
    EXPECT_EQ(blank_ids(t.message), blank_ids(u.message));
  };
  for (PartnerScope* other : {&b, &dflt}) {
    PartnerScope& o = *other;
    same_as_unknown([&] { o.get_campaign(ca.id); }, [&] { o.get_campaign(unknown_campaign); });
    same_as_unknown([&] { o.pause_campaign(ca.id); }, [&] { o.pause_campaign(unknown_campaign); });
    same_as_unknown([&] { o.resume_campaign(ca.id); }, [&] { o.resume_campaign(unknown_campaign); });
    same_as_unknown([&] { o.close_campaign(ca.id); }, [&] { o.close_campaign(unknown_campaign); });
    same_as_unknown([&] { o.set_campaign_quantity(ca.id, 50); }, [&] { o.set_campaign_quantity(unknown_campaign, 50); });
    same_as_unknown([&] { o.campaign_stats(ca.id); }, [&] { o.campaign_stats(unknown_campaign); });
    same_as_unknown([&] { o.issue(ca.id, {"x", ""}); }, [&] { o.issue(unknown_campaign, {"x", ""}); });
    same_as_unknown([&] { o.issue_many(ca.id, {{"x", ""}}); }, [&] { o.issue_many(unknown_campaign, {{"x", ""}}); });
    same_as_unknown([&] { o.submit_issue(ca.id, {{"x", ""}}, [](auto&&, auto) {}); },
                    [&] { o.submit_issue(unknown_campaign, {{"x", ""}}, [](auto&&, auto) {}); });
    same_as_unknown([&] { o.coupon_counts(ca.id); }, [&] { o.coupon_counts(unknown_campaign); });
    same_as_unknown([&] { o.get_coupon(coupon); }, [&] { o.get_coupon(unknown_coupon); });
    same_as_unknown([&] { o.use_coupon({coupon, "shared-user", "order-a", 1000}); },
                    [&] { o.use_coupon({unknown_coupon, "shared-user", "order-a", 1000}); });
    same_as_unknown([&] { o.cancel_coupon_use(coupon, "order-a"); },
                    [&] { o.cancel_coupon_use(unknown_coupon, "order-a"); });
    // The same user id under another partner is another user: no coupons, no error.
    CouponQuery q;
    q.user_id = "shared-user";
    EXPECT_TRUE(o.list_user_coupons(q).items.empty());
    for (const Campaign& c : o.list_campaigns()) EXPECT_NE(c.id, ca.id);
  }
  // Nothing changed for a.
  EXPECT_EQ(a.get_campaign(ca.id).state, CampaignState::kActive);
  EXPECT_EQ(a.get_campaign(ca.id).spec.quantity, 10);
  EXPECT_EQ(a.get_coupon(coupon).state, CouponState::kUsed);
  EXPECT_EQ(a.coupon_counts(ca.id).total, 1);
  CouponQuery q;
  q.user_id = "shared-user";
  EXPECT_EQ(a.list_user_coupons(q).items.size(), 1u);
  EXPECT_EQ(a.list_campaigns().size(), 1u);
  // A scope's create_campaign always creates for its own partner, whatever the spec says.
  s.partner_id = ka.partner.id;
  EXPECT_EQ(b.create_campaign(s).spec.partner_id, kb.partner.id);
}

}  // namespace
