// Benchmarks of the embedded hot path:
//   BM_GateDecide        CampaignGate::decide alone (the in-memory FCFS rule), while issuing;
//                        /0 without rate limits, /1 with per-user and per-partner limits that
//                        count every request and refuse none (docs/rate-limits.md)
//   BM_GateDecideSoldOut the same once sold out (every answer SOLD_OUT / ALREADY_ISSUED)
//   BM_EmbeddedIssueMany the whole embedded engine: validation, queue, decision, SQLite group
//                        commit (WAL, synchronous=FULL) of every grant, answers
// items_per_second is decisions/s (grants/s for the last, where every request is issued).
#include <benchmark/benchmark.h>

#include <filesystem>
#include <string>
#include <vector>

#include "couponcore/engine.hpp"
#include "gate/campaign_gate.hpp"

using namespace couponcore;

namespace {

std::vector<IssueRequest> make_requests(std::size_t n, const std::string& prefix) {
  std::vector<IssueRequest> v(n);
  for (std::size_t i = 0; i < n; ++i) v[i].user_id = prefix + std::to_string(i);
  return v;
}

Campaign campaign(int64_t quantity, bool rate_limited = false) {
  Campaign c;
  c.id = 1;
  c.spec.name = "bench";
  c.spec.quantity = quantity;
  if (rate_limited) {
    c.spec.rate_limit_per_user = 1'000'000;
    c.spec.rate_limit_per_partner = 1'000'000;
    c.spec.rate_window_ms = 3'600'000;
  }
  return c;
}

void BM_GateDecide(benchmark::State& state) {
  const std::size_t n = 1'000'000;
  auto reqs = make_requests(n, "user-");
  std::vector<Grant> grants;
  grants.reserve(n);
  std::size_t i = n;
  const bool limited = state.range(0) != 0;
  CampaignGate gate(campaign(1'000'000'000, limited));
  const int64_t now = now_us();
  for (auto _ : state) {
    if (i == n) {
      state.PauseTiming();
      gate = CampaignGate(campaign(1'000'000'000, limited));
      grants.clear();
      i = 0;
      state.ResumeTiming();
    }
    benchmark::DoNotOptimize(gate.decide(reqs[i++], now, &grants));
  }
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_GateDecide)->Arg(0)->Arg(1);

void BM_GateDecideSoldOut(benchmark::State& state) {
  const std::size_t n = 1'000'000;
  auto reqs = make_requests(n, "user-");
  CampaignGate gate(campaign(10'000));
  std::vector<Grant> grants;
  const int64_t now = now_us();
  for (std::size_t i = 0; i < 10'000; ++i) gate.decide(reqs[i], now, &grants);
  std::size_t i = 0;
  for (auto _ : state) {
    benchmark::DoNotOptimize(gate.decide(reqs[i], now, nullptr));
    if (++i == n) i = 0;
  }
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_GateDecideSoldOut);

void BM_EmbeddedIssueMany(benchmark::State& state) {
  const std::size_t batch = static_cast<std::size_t>(state.range(0));
  auto path = (std::filesystem::temp_directory_path() / "couponcore-bench.db").string();
  for (const char* s : {"", "-wal", "-shm"}) std::filesystem::remove(path + s);
  auto engine = open_embedded(EmbeddedOptions{path, true});
  CampaignSpec spec;
  spec.name = "bench";
  spec.quantity = 1'000'000'000;
  Campaign c = engine->create_campaign(spec);
  std::size_t round = 0;
  for (auto _ : state) {
    state.PauseTiming();
    auto reqs = make_requests(batch, "r" + std::to_string(round++) + "-");
    state.ResumeTiming();
    auto results = engine->issue_many(c.id, std::move(reqs));
    benchmark::DoNotOptimize(results.data());
  }
  state.SetItemsProcessed(state.iterations() * static_cast<int64_t>(batch));
  engine->close();
  for (const char* s : {"", "-wal", "-shm"}) std::filesystem::remove(path + s);
}
BENCHMARK(BM_EmbeddedIssueMany)->Arg(1000)->Arg(10000)->Unit(benchmark::kMillisecond)->UseRealTime();

}  // namespace

namespace {

// The demo's traffic shape: 10,000 coupons, 200,000 requests from 100,000 users (every user
// presses once, then 100,000 second presses), decided by one gate.
void BM_GateFlashSale(benchmark::State& state) {
  auto first = make_requests(100'000, "user-");
  std::vector<IssueRequest> reqs = first;
  reqs.insert(reqs.end(), first.begin(), first.end());
  std::vector<Grant> grants;
  const int64_t now = now_us();
  for (auto _ : state) {
    state.PauseTiming();
    CampaignGate gate(campaign(10'000));
    grants.clear();
    state.ResumeTiming();
    for (const IssueRequest& r : reqs) benchmark::DoNotOptimize(gate.decide(r, now, &grants));
  }
  state.SetItemsProcessed(state.iterations() * static_cast<int64_t>(reqs.size()));
}
BENCHMARK(BM_GateFlashSale)->Unit(benchmark::kMillisecond);

}  // namespace
