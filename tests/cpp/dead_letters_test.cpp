// Dead letters as a tool, on the production deployment against real Redis and PostgreSQL
// (docs/dead-letters.md): PostgreSQL refuses some users' grants (a CHECK constraint NOT VALID),
// the writers dead-letter them; a re-drive after the fix lands the row; a drop gives the seq and
// the user's slot back, and the campaign still ends with exactly `quantity` rows, seqs 1..quantity.
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <set>
#include <thread>

#include "couponcore/engine.hpp"
#include "couponcore/error.hpp"
#include "production_test_util.hpp"
#include "redis/keys.hpp"
#include "store/postgres/pg.hpp"

using namespace couponcore;

namespace {

#define EXPECT_CODE(code, fn) EXPECT_EQ(testutil::code_of(fn), code)

class DeadLettersTest : public ::testing::Test {
 protected:
  void SetUp() override {
    options_ = testutil::production_options(testutil::current_test_name());
    options_.writer.claim_idle_ms = 100;
    options_.writer.claim_interval_ms = 50;
    options_.writer.dead_letter_after_deliveries = 2;
    blocked_ = "blocked" + std::to_string(::getpid()) + "-";
    constraint_ = "dl_cpp_refuse_" + std::to_string(::getpid());
    pg::Conn conn(options_.postgres_url);
    conn.exec("ALTER TABLE coupons ADD CONSTRAINT " + constraint_ + " CHECK (user_id NOT LIKE '" + blocked_ +
              "%') NOT VALID");
  }
  void TearDown() override {
    fix();
    testutil::delete_keys(options_.key_prefix);
  }
  void fix() {
    pg::Conn conn(options_.postgres_url);
    conn.exec("ALTER TABLE coupons DROP CONSTRAINT IF EXISTS " + constraint_);
  }
  static CampaignSpec spec(int64_t quantity) {
    CampaignSpec s;
    s.name = "dead letters";
    s.quantity = quantity;
    return s;
  }
  static IssueRequest req(const std::string& user) {
    IssueRequest r;
    r.user_id = user;
    return r;
  }
  std::vector<DeadLetter> wait_dead_letters(Engine& e, int64_t campaign_id, std::size_t n) {
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
    std::vector<DeadLetter> got;
    while ((got = e.list_dead_letters(campaign_id, "", 100)).size() < n && std::chrono::steady_clock::now() < deadline) {
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    return got;
  }
  std::vector<std::pair<int64_t, std::string>> rows(int64_t campaign_id) {
    pg::Conn conn(options_.postgres_url);
    pg::Result r = conn.exec("SELECT seq, user_id FROM coupons WHERE campaign_id = $1 ORDER BY seq",
                             pg::Params().add(campaign_id));
    std::vector<std::pair<int64_t, std::string>> out;
    for (int i = 0; i < r.rows(); ++i) out.emplace_back(r.i64(i, 0), std::string(r.text(i, 1)));
    return out;
  }

  ProductionOptions options_;
  std::string blocked_, constraint_;
};

TEST_F(DeadLettersTest, RedriveAfterTheFixLandsTheRowDropGivesTheSeqBack) {
  auto e = open_production(options_);
  Campaign c = e->create_campaign(spec(4));
  IssueResult u1 = e->issue(c.id, req("u1"));
  IssueResult a = e->issue(c.id, req(blocked_ + "a"));
  IssueResult b = e->issue(c.id, req(blocked_ + "b"));
  IssueResult u2 = e->issue(c.id, req("u2"));
  for (const IssueResult& r : {u1, a, b, u2}) ASSERT_EQ(r.status, IssueStatus::kIssued);
  ASSERT_EQ(e->issue(c.id, req("u3")).status, IssueStatus::kSoldOut);
  std::vector<DeadLetter> dls = wait_dead_letters(*e, c.id, 2);
  ASSERT_EQ(dls.size(), 2u);
  ASSERT_TRUE(e->drain(10));
  DeadLetter da = dls[0].seq == int64_t{a.seq} ? dls[0] : dls[1];
  DeadLetter db = dls[0].seq == int64_t{a.seq} ? dls[1] : dls[0];
  EXPECT_EQ(da.user_id, blocked_ + "a");
  EXPECT_EQ(db.seq, int64_t{b.seq});
  EXPECT_EQ(da.deliveries, 2);
  EXPECT_EQ(da.user_ordinal, 1);
  EXPECT_FALSE(da.entry_id.empty());
  EXPECT_GT(da.dead_lettered_at_us, 0);
  EXPECT_EQ(e->get_dead_letter(c.id, da.id).seq, da.seq);
  // Still dead-lettered: the coupons are "not yet usable", as any grant on its way.
  EXPECT_CODE(ErrorCode::kUnavailable, [&] { e->get_coupon(0, a.coupon_id); });

  fix();
  EXPECT_EQ(e->redrive_dead_letter(c.id, da.id).id, da.id);
  EXPECT_CODE(ErrorCode::kNotFound, [&] { e->redrive_dead_letter(c.id, da.id); });
  EXPECT_EQ(e->drop_dead_letter(c.id, db.id).id, db.id);
  EXPECT_CODE(ErrorCode::kNotFound, [&] { e->drop_dead_letter(c.id, db.id); });
  ASSERT_TRUE(e->drain(20));
  EXPECT_EQ(e->get_coupon(0, a.coupon_id).user_id, blocked_ + "a");
  EXPECT_CODE(ErrorCode::kNotFound, [&] { e->get_coupon(0, b.coupon_id); });
  // The dropped seq is issued again (to its user too: the slot came back), then sold out.
  IssueResult again = e->issue(c.id, req(blocked_ + "b"));
  ASSERT_EQ(again.status, IssueStatus::kIssued);
  EXPECT_EQ(again.seq, b.seq);
  EXPECT_EQ(e->issue(c.id, req("u4")).status, IssueStatus::kSoldOut);
  ASSERT_TRUE(e->drain(20));
  std::vector<std::pair<int64_t, std::string>> got = rows(c.id);
  ASSERT_EQ(got.size(), 4u);
  for (std::size_t i = 0; i < got.size(); ++i) EXPECT_EQ(got[i].first, static_cast<int64_t>(i + 1));
  EXPECT_TRUE(e->list_dead_letters(0, "", 100).empty());
  ReconcileReport rep = e->reconcile(c.id);
  EXPECT_TRUE(rep.consistent);
  EXPECT_EQ(rep.gate_issued, 4);
}

// Drops while threads issue on the same campaign: the freed seqs are issued again, and the
// campaign ends with exactly `quantity` rows, seqs 1..quantity, none twice.
TEST_F(DeadLettersTest, DropsWhileThreadsIssueKeepSeqsUniqueAndStockWhole) {
  constexpr int64_t kQuantity = 300;
  auto e = open_production(options_);
  Campaign c = e->create_campaign(spec(kQuantity));
  std::vector<IssueRequest> first;
  for (int i = 0; i < 50; ++i) first.push_back(req(i % 5 == 0 ? blocked_ + std::to_string(i) : "a" + std::to_string(i)));
  for (const IssueResult& r : e->issue_many(c.id, first)) ASSERT_EQ(r.status, IssueStatus::kIssued);
  std::vector<DeadLetter> dls = wait_dead_letters(*e, c.id, 10);
  ASSERT_EQ(dls.size(), 10u);
  fix();
  std::atomic<bool> drops_done{false};
  std::atomic<int> next{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 6; ++t) {
    threads.emplace_back([&] {
      int sold_out_after = 0;
      while (sold_out_after < 3) {
        const bool done = drops_done.load();
        if (e->issue(c.id, req("t" + std::to_string(next++))).status == IssueStatus::kSoldOut && done) ++sold_out_after;
      }
    });
  }
  for (const DeadLetter& d : dls) e->drop_dead_letter(c.id, d.id);
  drops_done = true;
  for (std::thread& t : threads) t.join();
  // What a drop freed after this engine's sold-out fast path last looked: an engine without one.
  ProductionOptions quiet = options_;
  quiet.writer_threads = 0;
  auto other = open_production(quiet);
  for (int i = 0; other->issue(c.id, req("late" + std::to_string(i))).status != IssueStatus::kSoldOut; ++i) {
    ASSERT_LT(i, 10);
  }
  ASSERT_TRUE(e->drain(30));
  std::vector<std::pair<int64_t, std::string>> got = rows(c.id);
  ASSERT_EQ(got.size(), static_cast<std::size_t>(kQuantity));
  for (std::size_t i = 0; i < got.size(); ++i) EXPECT_EQ(got[i].first, static_cast<int64_t>(i + 1));
  EXPECT_TRUE(e->reconcile(c.id).consistent);
}

TEST_F(DeadLettersTest, BadInputIsTypedAndTheEmbeddedEngineHasNone) {
  auto e = open_production(options_);
  Campaign c = e->create_campaign(spec(2));
  for (const std::string& id : {"x", "1-", "-1", "1-2-3", ""}) {
    EXPECT_CODE(ErrorCode::kInvalidArgument, [&] { e->get_dead_letter(c.id, id); });
    EXPECT_CODE(ErrorCode::kInvalidArgument, [&] { e->drop_dead_letter(c.id, id); });
  }
  EXPECT_CODE(ErrorCode::kNotFound, [&] { e->redrive_dead_letter(c.id, "1-1"); });
  EXPECT_CODE(ErrorCode::kNotFound, [&] { e->drop_dead_letter(999'999'999, "1-1"); });
  EXPECT_CODE(ErrorCode::kInvalidArgument, [&] { e->list_dead_letters(c.id, "", 0); });
  EXPECT_CODE(ErrorCode::kInvalidArgument, [&] { e->list_dead_letters(0, "1-1", 10); });
  EXPECT_EQ(e->issue(c.id, req("u")).seq, 1u);

  EmbeddedOptions eo;
  eo.path = ":memory:";
  auto emb = open_embedded(eo);
  Campaign ec = emb->create_campaign(spec(2));
  EXPECT_TRUE(emb->list_dead_letters(0, "", 10).empty());
  EXPECT_CODE(ErrorCode::kNotFound, [&] { emb->drop_dead_letter(ec.id, "1-1"); });
}

}  // namespace
