// The answer recorder (windows/answer_recorder.hpp): answers recorded from many threads reach
// the source packed one record per campaign per flush, and add up exactly; the latency buckets.
#include <gtest/gtest.h>

#include <map>
#include <sstream>
#include <thread>
#include <vector>

#include "couponcore/engine.hpp"
#include "couponcore/error.hpp"
#include "store/sqlite/sqlite.hpp"
#include "test_util.hpp"
#include "windows/answer_recorder.hpp"
#include "windows/sources.hpp"

using namespace couponcore;

namespace {

// Sums of status counts per campaign over every record in answer_log; also the records' count.
std::map<int64_t, std::map<int, uint64_t>> sum_log(const std::string& path, int64_t* records) {
  sqlite::Db db(path);
  sqlite::Stmt s(db, "SELECT campaign_id, record FROM answer_log ORDER BY id");
  std::map<int64_t, std::map<int, uint64_t>> out;
  *records = 0;
  while (s.step()) {
    ++*records;
    std::istringstream in(s.text(1));
    std::string version, flush_ms, id, part;
    in >> version >> flush_ms >> id;
    EXPECT_EQ(version, "1");
    EXPECT_EQ(id.size(), 16u + 1 + std::to_string(*records).size()) << id;  // <recorder>.<n>, n from 1
    while (in >> part) {
      const auto a = part.find('/'), b = part.find('/', a + 1);
      std::istringstream counts(part.substr(a + 1, b - a - 1));
      std::string pair;
      while (std::getline(counts, pair, ',')) {
        const auto eq = pair.find('=');
        out[s.i64(0)][std::stoi(pair.substr(0, eq))] += std::stoull(pair.substr(eq + 1));
      }
    }
  }
  return out;
}

}  // namespace

TEST(WindowsRecorder, ManyThreadsAddUpOneRecordPerCampaignPerFlush) {
  const std::string path = testutil::temp_path("windows") + ".db";
  {
    windows::AnswerRecorder rec(std::make_unique<windows::SqliteAnswerSink>(path), {/*flush_ms=*/10000});
    std::vector<std::thread> threads;
    for (int t = 0; t < 8; ++t) {
      threads.emplace_back([&rec, t] {
        for (int i = 0; i < 1000; ++i) {
          std::vector<IssueResult> results(1 + i % 3);
          for (std::size_t j = 0; j < results.size(); ++j) results[j].status = static_cast<IssueStatus>((i + j) % 5);
          rec.record(1 + t % 2, results, i);
        }
      });
    }
    for (auto& th : threads) th.join();
    rec.flush();  // one flush: one record per campaign (the flusher's period is 10 s)
    int64_t records = 0;
    auto sums = sum_log(path, &records);
    EXPECT_EQ(records, 2);
    std::map<int64_t, std::map<int, uint64_t>> expected;
    for (int t = 0; t < 8; ++t) {
      for (int i = 0; i < 1000; ++i) {
        for (int j = 0; j < 1 + i % 3; ++j) expected[1 + t % 2][(i + j) % 5]++;
      }
    }
    EXPECT_EQ(sums, expected);
    EXPECT_EQ(rec.counters().answers, 8u * (1000 / 3 * 6 + 1));  // sum over i of 1 + i % 3
  }
  testutil::remove_db(path);
}

// A source that refuses (the table renamed away under the recorder): the appends fail and are
// counted, the records wait; past kPendingRecordsMax the oldest are dropped and their answers
// counted; once the source is back everything that waited is appended.
TEST(WindowsRecorder, FailedAppendsAreCountedAndDroppedRecordsCountTheirAnswers) {
  const std::string path = testutil::temp_path("windows") + ".db";
  {
    windows::AnswerRecorder rec(std::make_unique<windows::SqliteAnswerSink>(path), {/*flush_ms=*/10000});
    sqlite::Db other(path);
    other.exec("ALTER TABLE answer_log RENAME TO answer_log_away");
    const auto n = static_cast<int64_t>(windows::AnswerRecorder::kPendingRecordsMax);
    for (int64_t c = 1; c <= n + 1; ++c) rec.record(c, std::vector<IssueResult>(c == 1 ? 3 : 1), 5);
    EXPECT_THROW(rec.flush(), Error);
    auto k = rec.counters();
    EXPECT_EQ(k.flush_failures, 1u);
    EXPECT_EQ(k.records_dropped, 1u);  // campaign 1's record, the oldest: its 3 answers
    EXPECT_EQ(k.answers_dropped, 3u);
    EXPECT_EQ(k.records, 0u);
    other.exec("ALTER TABLE answer_log_away RENAME TO answer_log");
    rec.flush();  // the 10,000 that waited, plus the ticks of this flush
    k = rec.counters();
    EXPECT_EQ(k.flush_failures, 1u);
    EXPECT_GE(k.records, static_cast<uint64_t>(n));
    sqlite::Db db(path);
    sqlite::Stmt s(db, "SELECT count(DISTINCT campaign_id), min(campaign_id) FROM answer_log");
    ASSERT_TRUE(s.step());
    EXPECT_EQ(s.i64(0), n);  // every campaign but the first
    EXPECT_EQ(s.i64(1), 2);
  }
  testutil::remove_db(path);
}

// The event clock: the wall clock plus the offset a gate reply set (production: Redis TIME).
TEST(WindowsRecorder, AnswersAreOnTheEventClock) {
  const std::string path = testutil::temp_path("windows") + ".db";
  {
    windows::AnswerRecorder rec(std::make_unique<windows::SqliteAnswerSink>(path), {/*flush_ms=*/10000});
    const int64_t offset_us = 3600LL * 1'000'000;
    windows::set_event_clock(&rec, now_us() + offset_us);
    EXPECT_NEAR(static_cast<double>(rec.counters().clock_offset_us), static_cast<double>(offset_us), 1e6);
    rec.record(1, std::vector<IssueResult>(2), 5);
    rec.flush();
    sqlite::Db db(path);
    sqlite::Stmt s(db, "SELECT record FROM answer_log");
    ASSERT_TRUE(s.step());
    std::istringstream in(s.text(0));
    int64_t version = 0, flush_ms = 0, second = 0;
    std::string id;
    in >> version >> flush_ms >> id >> second;
    const int64_t now_s = now_us() / 1'000'000;
    EXPECT_NEAR(static_cast<double>(second), static_cast<double>(now_s + 3600), 2);
    EXPECT_NEAR(static_cast<double>(flush_ms / 1000), static_cast<double>(now_s + 3600), 2);
  }
  testutil::remove_db(path);
}

TEST(WindowsRecorder, LatencyBuckets) {
  EXPECT_EQ(windows::latency_bucket(0), 0);
  EXPECT_EQ(windows::latency_bucket(1), 1);
  EXPECT_EQ(windows::latency_bucket(2), 5);
  EXPECT_EQ(windows::latency_bucket(1000), 1 + 39);  // 4 * log2(1000) = 39.86
  EXPECT_EQ(windows::latency_bucket(int64_t{1} << 50), windows::kLatencyBuckets - 1);
}

TEST(WindowsRecorder, BadOptionsAreInvalidArgument) {
  const std::string path = testutil::temp_path("windows") + ".db";
  EXPECT_EQ(testutil::code_of([&] {
              windows::AnswerRecorder rec(std::make_unique<windows::SqliteAnswerSink>(path), {/*flush_ms=*/5});
            }),
            ErrorCode::kInvalidArgument);
  testutil::remove_db(path);
}
