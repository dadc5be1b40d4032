// Answer-record sources and the windows schema: see sources.hpp.
#include "windows/sources.hpp"

#include <hiredis/hiredis.h>

#include <algorithm>
#include <cstdlib>

#include "couponcore/error.hpp"
#include "couponcore/windows.hpp"
#include "redis/keys.hpp"
#include "store/postgres/pg.hpp"

namespace couponcore::windows {

namespace {

// windows_state: one row per source (name: the Redis key prefix, or "embedded"): the
// aggregator's state and positions (JSON), version + 1 per commit.
// answer_windows: one row per FINAL window. counts: JSON object status number -> answers
// ({"0": 12, "1": 3}); hist: JSON object latency bucket -> answers (answer_recorder.hpp); the
// quantiles are the buckets' upper bounds in us (max_us is exact).
const std::vector<pg::Migration>& pg_windows_migrations() {
  static const std::vector<pg::Migration> all = {
      {"windows", 1,
       "CREATE TABLE answer_windows ("
       " campaign_id bigint NOT NULL,"
       " size_s integer NOT NULL CHECK (size_s IN (1, 60)),"
       " start_s bigint NOT NULL,"
       " answers bigint NOT NULL,"
       " counts text NOT NULL,"
       " hist text NOT NULL,"
       " p50_us bigint NOT NULL, p90_us bigint NOT NULL, p99_us bigint NOT NULL, max_us bigint NOT NULL,"
       " PRIMARY KEY (campaign_id, size_s, start_s));"
       "CREATE TABLE windows_state ("
       " name text PRIMARY KEY,"
       " version bigint NOT NULL,"
       " state text NOT NULL,"
       " updated_at_us bigint NOT NULL);"},
  };
  return all;
}

const pg::MigrationRegistrar kWindowsMigrations("windows", &pg_windows_migrations);

}  // namespace

const std::vector<sqlite::Migration>& sqlite_windows_migrations() {
  static const std::vector<sqlite::Migration> all = {
      {"windows", 1,
       "CREATE TABLE answer_windows ("
       " campaign_id INTEGER NOT NULL,"
       " size_s INTEGER NOT NULL CHECK (size_s IN (1, 60)),"
       " start_s INTEGER NOT NULL,"
       " answers INTEGER NOT NULL,"
       " counts TEXT NOT NULL,"
       " hist TEXT NOT NULL,"
       " p50_us INTEGER NOT NULL, p90_us INTEGER NOT NULL, p99_us INTEGER NOT NULL, max_us INTEGER NOT NULL,"
       " PRIMARY KEY (campaign_id, size_s, start_s));"
       "CREATE TABLE windows_state ("
       " name TEXT PRIMARY KEY,"
       " version INTEGER NOT NULL,"
       " state TEXT NOT NULL,"
       " updated_at_us INTEGER NOT NULL);"
       "CREATE TABLE answer_log ("
       " id INTEGER PRIMARY KEY AUTOINCREMENT,"
       " campaign_id INTEGER NOT NULL,"
       " record TEXT NOT NULL);"},
  };
  return all;
}

std::string answers_key(const std::string& prefix, int64_t campaign_id) {
  return prefix + "{c" + std::to_string(campaign_id) + "}:answers";
}
std::string campaigns_key(const std::string& prefix) { return prefix + "windows:campaigns"; }

// ---- production: Redis Streams -----------------------------------------------------------------

RedisAnswerSink::RedisAnswerSink(const redis::RedisUrl& url, const redis::RedisConnOptions& options,
                                 std::string prefix, int64_t stream_maxlen)
    : conn_(url, options), prefix_(std::move(prefix)), maxlen_(stream_maxlen) {}

void RedisAnswerSink::append(const std::vector<std::pair<int64_t, std::string>>& records) {
  conn_.ensure_connected();
  std::vector<int64_t> campaigns;
  for (const auto& [campaign, record] : records) {
    conn_.append(redis::Args{"XADD"}
                     .add(answers_key(prefix_, campaign))
                     .add("MAXLEN")
                     .add("~")
                     .add(maxlen_)
                     .add("*")
                     .add("r")
                     .add(record));
    if (campaigns.empty() || campaigns.back() != campaign) campaigns.push_back(campaign);
  }
  redis::Args sadd{"SADD"};
  sadd.add(campaigns_key(prefix_));
  for (int64_t c : campaigns) sadd.add(c);
  conn_.append(sadd);
  std::string error;
  for (std::size_t i = 0; i < records.size() + 1; ++i) {
    redis::Reply r = conn_.read_reply();
    if (r.is_error() && error.empty()) error = std::string(r.str());
  }
  if (!error.empty()) throw Error(ErrorCode::kUnavailable, "answer records: " + error);
}

RedisAnswerReader::RedisAnswerReader(const std::string& redis_url, std::string prefix)
    : conn_(redis::RedisUrl::parse(redis_url), redis::RedisConnOptions{}), prefix_(std::move(prefix)) {
  redis::check_key_prefix(prefix_);
}

std::vector<int64_t> RedisAnswerReader::campaigns() {
  redis::Reply r = conn_.command_checked(redis::Args{"SMEMBERS"}.add(campaigns_key(prefix_)), "SMEMBERS");
  std::vector<int64_t> out;
  for (std::size_t i = 0; i < r.size(); ++i) {
    redisReply* e = r.at(i);
    out.push_back(std::strtoll(std::string(e->str, e->len).c_str(), nullptr, 10));
  }
  std::sort(out.begin(), out.end());
  return out;
}

// The id right after `id` ("<ms>-<seq>"): XRANGE's start is inclusive.
static std::string next_id(const std::string& id) {
  if (id.empty() || id == "0") return "-";
  const auto dash = id.find('-');
  if (dash == std::string::npos) throw_invalid("not a stream id: " + id);
  return id.substr(0, dash) + "-" + std::to_string(std::strtoull(id.c_str() + dash + 1, nullptr, 10) + 1);
}

std::vector<std::pair<std::string, std::string>> RedisAnswerReader::read(int64_t campaign_id, const std::string& after,
                                                                        int64_t count) {
  if (count < 1) throw_invalid("count must be >= 1");
  redis::Reply r = conn_.command_checked(
      redis::Args{"XRANGE"}.add(answers_key(prefix_, campaign_id)).add(next_id(after)).add("+").add("COUNT").add(count),
      "XRANGE");
  std::vector<std::pair<std::string, std::string>> out;
  for (std::size_t i = 0; i < r.size(); ++i) {
    redisReply* entry = r.at(i);
    if (entry->type != REDIS_REPLY_ARRAY || entry->elements != 2) continue;
    std::string id(entry->element[0]->str, entry->element[0]->len);
    redisReply* fields = entry->element[1];
    std::string record;
    for (std::size_t f = 0; f + 1 < fields->elements; f += 2) {
      if (std::string_view(fields->element[f]->str, fields->element[f]->len) == "r") {
        record.assign(fields->element[f + 1]->str, fields->element[f + 1]->len);
      }
    }
    out.emplace_back(std::move(id), std::move(record));
  }
  return out;
}

// ---- embedded: the SQLite table answer_log -----------------------------------------------------

SqliteAnswerSink::SqliteAnswerSink(const std::string& path) : db_(path, /*synchronous_full=*/false) {
  db_.migrate(sqlite_windows_migrations());
}

void SqliteAnswerSink::append(const std::vector<std::pair<int64_t, std::string>>& records) {
  sqlite::Tx tx(db_);
  sqlite::Stmt s(db_, "INSERT INTO answer_log(campaign_id, record) VALUES (?, ?)");
  for (const auto& [campaign, record] : records) s.bind(1, campaign).bind(2, std::string_view(record)).run();
  tx.commit();
}

}  // namespace couponcore::windows

namespace couponcore {

AnswerStreamReader::AnswerStreamReader(const std::string& redis_url, const std::string& key_prefix)
    : impl_(std::make_unique<windows::RedisAnswerReader>(redis_url, key_prefix)) {}
AnswerStreamReader::~AnswerStreamReader() = default;
std::vector<int64_t> AnswerStreamReader::campaigns() { return impl_->campaigns(); }
std::vector<AnswerRecord> AnswerStreamReader::read(int64_t campaign_id, const std::string& after, int64_t count) {
  std::vector<AnswerRecord> out;
  for (auto& [id, record] : impl_->read(campaign_id, after, count)) out.push_back({std::move(id), std::move(record)});
  return out;
}

}  // namespace couponcore
