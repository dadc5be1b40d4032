// What only the embedded engine has. Its gate semantics, concurrency invariants, group commit,
// reopen, limits and bad input run on both deployments in engine_behaviour_test.cpp.
#include <gtest/gtest.h>

#include "couponcore/engine.hpp"

using namespace couponcore;

namespace {

// Embedded only: ":memory:" is a SQLite path; the production deployment has no throwaway store.
TEST(EmbeddedEngineTest, MemoryDatabaseWorks) {
  auto e = open_embedded(EmbeddedOptions{":memory:", true});
  CampaignSpec s;
  s.name = "drop";
  s.quantity = 2;
  Campaign c = e->create_campaign(s);
  EXPECT_EQ(e->issue(c.id, {"u", ""}).status, IssueStatus::kIssued);
  EXPECT_EQ(e->campaign_stats(c.id).rows, 1);
}

}  // namespace
