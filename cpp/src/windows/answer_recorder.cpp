// Answer records: see answer_recorder.hpp.
#include "windows/answer_recorder.hpp"

#include <chrono>
#include <cmath>
#include <cstdio>
#include <random>

#include "couponcore/engine.hpp"
#include "couponcore/error.hpp"
#include "couponcore/metrics.hpp"

namespace couponcore::windows {

int latency_bucket(int64_t latency_us) noexcept {
  if (latency_us < 1) return 0;
  const int b = 1 + static_cast<int>(std::floor(4.0 * std::log2(static_cast<double>(latency_us))));
  return b < kLatencyBuckets ? b : kLatencyBuckets - 1;
}

namespace {
std::string random_id() {
  std::random_device rd;
  const uint64_t v = (static_cast<uint64_t>(rd()) << 32) ^ rd();
  char buf[17];
  std::snprintf(buf, sizeof buf, "%016llx", static_cast<unsigned long long>(v));
  return buf;
}
}  // namespace

AnswerRecorder::AnswerRecorder(std::unique_ptr<AnswerSink> sink, RecorderOptions options)
    : sink_(std::move(sink)), options_(options), recorder_id_(random_id()) {
  if (options_.flush_ms < 10 || options_.flush_ms > 10'000) throw_invalid("windows_flush_ms must be 10..10000");
  if (options_.tick_s < 1 || options_.tick_s > 3600) throw_invalid("windows_tick_s must be 1..3600");
  thread_ = std::thread([this] { run(); });
}

AnswerRecorder::~AnswerRecorder() { stop(); }

void AnswerRecorder::record(int64_t campaign_id, const std::vector<IssueResult>& results, int64_t latency_us) {
  if (results.empty()) return;
  const int64_t second = event_now_us() / 1'000'000;
  const int bucket = latency_bucket(latency_us);
  // Threads take stripes round-robin (thread ids are addresses: their low bits are alike).
  static std::atomic<std::size_t> next_stripe{0};
  thread_local const std::size_t stripe_of_thread = next_stripe.fetch_add(1, std::memory_order_relaxed);
  Stripe& st = stripes_[stripe_of_thread % kStripes];
  std::lock_guard lock(st.mu);
  if (st.last == nullptr || st.last_campaign != campaign_id || st.last_second != second) {
    st.last = &st.partials[campaign_id][second];
    st.last_campaign = campaign_id;
    st.last_second = second;
  }
  Second& s = *st.last;
  for (const IssueResult& r : results) {
    const auto status = static_cast<std::size_t>(r.status);
    s.by_status[status < kStatusSlots ? status : kStatusSlots - 1]++;
  }
  s.hist[bucket] += results.size();
  if (latency_us > s.max_latency_us) s.max_latency_us = latency_us;
  st.answers += results.size();
}

int64_t AnswerRecorder::event_now_us() const noexcept {
  return now_us() + clock_offset_us_.load(std::memory_order_relaxed);
}

std::vector<AnswerRecorder::PendingRecord> AnswerRecorder::take(int64_t now_ms) {
  Partials all;
  for (Stripe& st : stripes_) {
    Partials mine;
    {
      std::lock_guard lock(st.mu);
      mine.swap(st.partials);
      st.last = nullptr;
    }
    for (auto& [campaign, seconds] : mine) {
      auto& into = all[campaign];
      for (auto& [second, part] : seconds) {
        Second& s = into[second];
        for (int i = 0; i < kStatusSlots; ++i) s.by_status[i] += part.by_status[i];
        for (int b = 0; b < kLatencyBuckets; ++b) s.hist[b] += part.hist[b];
        if (part.max_latency_us > s.max_latency_us) s.max_latency_us = part.max_latency_us;
      }
    }
  }
  std::map<int64_t, PendingRecord> records;  // by campaign: a stable order
  const std::string head = std::to_string(kRecordVersion) + " " + std::to_string(now_ms) + " " + recorder_id_ + ".";
  for (const auto& [campaign, seconds] : all) {
    std::string r = head + std::to_string(++records_made_);
    uint64_t answers = 0;
    for (const auto& [second, s] : seconds) {
      for (const uint64_t n : s.by_status) answers += n;
      r += ' ';
      r += std::to_string(second);
      char sep = '/';
      for (int i = 0; i < kStatusSlots; ++i) {
        if (s.by_status[i] == 0) continue;
        r += sep;
        r += std::to_string(i) + "=" + std::to_string(s.by_status[i]);
        sep = ',';
      }
      sep = '/';
      for (int b = 0; b < kLatencyBuckets; ++b) {
        if (s.hist[b] == 0) continue;
        r += sep;
        r += std::to_string(b) + "=" + std::to_string(s.hist[b]);
        sep = ',';
      }
      r += '/';
      r += std::to_string(s.max_latency_us);
    }
    records.emplace(campaign, PendingRecord{campaign, std::move(r), answers});
    last_active_ms_[campaign] = now_ms;
  }
  // Ticks: the watermark of a campaign that went quiet still moves on for tick_s seconds.
  for (auto it = last_active_ms_.begin(); it != last_active_ms_.end();) {
    if (now_ms - it->second > options_.tick_s * 1000) {
      it = last_active_ms_.erase(it);
      continue;
    }
    if (records.count(it->first) == 0) {
      records.emplace(it->first, PendingRecord{it->first, head + std::to_string(++records_made_), 0});
    }
    ++it;
  }
  std::vector<PendingRecord> out;
  out.reserve(records.size());
  for (auto& [campaign, r] : records) out.push_back(std::move(r));
  return out;
}

void AnswerRecorder::flush() {
  std::lock_guard lock(flush_mu_);
  const int64_t now_ms = event_now_us() / 1000;
  for (auto& r : take(now_ms)) pending_.push_back(std::move(r));
  while (pending_.size() > kPendingRecordsMax) {
    counters_.answers_dropped += pending_.front().answers;
    counters_.records_dropped++;
    pending_.pop_front();
  }
  if (pending_.empty()) return;
  std::vector<std::pair<int64_t, std::string>> batch;
  batch.reserve(pending_.size());
  for (const PendingRecord& r : pending_) batch.emplace_back(r.campaign, r.record);
  try {
    sink_->append(batch);
  } catch (...) {
    counters_.flush_failures++;
    throw;
  }
  counters_.records += batch.size();
  pending_.clear();
}

void AnswerRecorder::run() {
  std::unique_lock lock(stop_mu_);
  while (!stopping_) {
    stop_cv_.wait_for(lock, std::chrono::milliseconds(options_.flush_ms), [this] { return stopping_; });
    if (stopping_) break;
    lock.unlock();
    try {
      flush();
    } catch (const std::exception& e) {
      log(LogLevel::kWarning, "windows", std::string("answer records not flushed (kept, retried): ") + e.what());
    }
    lock.lock();
  }
}

void AnswerRecorder::stop() {
  {
    std::lock_guard lock(stop_mu_);
    if (stopping_) return;
    stopping_ = true;
  }
  stop_cv_.notify_all();
  if (thread_.joinable()) thread_.join();
  try {
    flush();
  } catch (const std::exception& e) {
    log(LogLevel::kWarning, "windows", std::string("answer records lost at close: ") + e.what());
  }
}

void record_answers(AnswerRecorder* recorder, int64_t campaign_id, const std::vector<IssueResult>& results,
                    int64_t latency_us) {
  recorder->record(campaign_id, results, latency_us);
}

void set_event_clock(AnswerRecorder* recorder, int64_t server_now_us) {
  recorder->set_clock_offset_us(server_now_us - now_us());
}

RecorderCounters AnswerRecorder::counters() const {
  std::lock_guard lock(flush_mu_);
  RecorderCounters k = counters_;
  k.clock_offset_us = clock_offset_us_.load(std::memory_order_relaxed);
  for (const Stripe& st : stripes_) {
    std::lock_guard slock(st.mu);
    k.answers += st.answers;
  }
  return k;
}

}  // namespace couponcore::windows
