// The durable sources of answer records (windows/answer_recorder.hpp) and the schema of the
// live windows (migration component "windows"), for both deployments:
//
//   production  a Redis Stream per campaign, <prefix>{c<N>}:answers (the campaign's hash tag:
//               the same slot as its grant log on a cluster), XADD MAXLEN ~ stream_maxlen; the
//               campaigns that have one are members of the set <prefix>windows:campaigns.
//   embedded    the SQLite table answer_log (id INTEGER PRIMARY KEY: the read position).
//
// Tables (both stores): answer_windows (one row per final window) and windows_state (one row:
// the aggregator's open windows, watermarks and consumed positions, with a version for the
// optimistic commit). The aggregator itself is couponcore.windows (Python): it commits the
// final rows, the state and the positions in one transaction.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "redis/redis.hpp"
#include "store/sqlite/sqlite.hpp"
#include "windows/answer_recorder.hpp"

namespace couponcore::windows {

const std::vector<sqlite::Migration>& sqlite_windows_migrations();

std::string answers_key(const std::string& prefix, int64_t campaign_id);
std::string campaigns_key(const std::string& prefix);

class RedisAnswerSink final : public AnswerSink {
 public:
  RedisAnswerSink(const redis::RedisUrl& url, const redis::RedisConnOptions& options, std::string prefix,
                  int64_t stream_maxlen);
  void append(const std::vector<std::pair<int64_t, std::string>>& records) override;

 private:
  redis::RedisConn conn_;
  const std::string prefix_;
  const int64_t maxlen_;
};

class SqliteAnswerSink final : public AnswerSink {
 public:
  explicit SqliteAnswerSink(const std::string& path);  // applies the "windows" migrations
  void append(const std::vector<std::pair<int64_t, std::string>>& records) override;

 private:
  sqlite::Db db_;
};

// Reads the production source (for the aggregator): campaigns with a stream, and entries after
// a stream id. Not thread-safe (one per aggregator).
class RedisAnswerReader {
 public:
  RedisAnswerReader(const std::string& redis_url, std::string prefix);
  std::vector<int64_t> campaigns();
  // Up to `count` entries with ids after `after` ("0" or "" from the start): (id, record).
  std::vector<std::pair<std::string, std::string>> read(int64_t campaign_id, const std::string& after, int64_t count);

 private:
  redis::RedisConn conn_;
  const std::string prefix_;
};

}  // namespace couponcore::windows
