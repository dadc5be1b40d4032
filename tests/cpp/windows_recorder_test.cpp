// The answer recorder (windows/answer_recorder.hpp): answers recorded from many threads reach
// the source packed one record per campaign per flush, and add up exactly; the latency buckets.
#include <gtest/gtest.h>

#include <map>
#include <sstream>
#include <thread>
#include <vector>

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
