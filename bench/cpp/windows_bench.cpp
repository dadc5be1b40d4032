// What recording the answers for the live windows costs (windows/answer_recorder.hpp):
//   BM_RecordAnswer       AnswerRecorder::record of one answer (a fast-path submission), from 1
//                         and 8 threads (items/s: records/s; the flusher runs every 200 ms)
//   BM_SoldOutIssue/0|1   Engine::issue on a sold-out embedded campaign (the fast path, where
//                         the caller's thread records), windows off (0) and on (1)
#include <benchmark/benchmark.h>

#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "couponcore/engine.hpp"
#include "windows/answer_recorder.hpp"
#include "windows/sources.hpp"

using namespace couponcore;

namespace {

std::string bench_path(const std::string& stem) {
  const auto p = (std::filesystem::temp_directory_path() / ("couponcore-bench-" + stem + ".db")).string();
  for (const char* s : {"", "-wal", "-shm"}) std::filesystem::remove(p + s);
  return p;
}

windows::AnswerRecorder* shared_recorder = nullptr;

void BM_RecordAnswer(benchmark::State& state) {
  static std::unique_ptr<windows::AnswerRecorder> rec;
  if (state.thread_index() == 0) {
    rec = std::make_unique<windows::AnswerRecorder>(
        std::make_unique<windows::SqliteAnswerSink>(bench_path("recorder")), windows::RecorderOptions{});
    shared_recorder = rec.get();
  }
  std::vector<IssueResult> one(1);
  one[0].status = IssueStatus::kSoldOut;
  for (auto _ : state) shared_recorder->record(1 + state.thread_index() % 4, one, 0);
  state.SetItemsProcessed(state.iterations());
  if (state.thread_index() == 0) rec.reset();
}
BENCHMARK(BM_RecordAnswer)->Threads(1)->Threads(8)->UseRealTime();

void BM_SoldOutIssue(benchmark::State& state) {
  EmbeddedOptions o;
  o.path = bench_path("soldout");
  o.windows = state.range(0) != 0;
  auto engine = open_embedded(o);
  CampaignSpec spec;
  spec.name = "bench";
  spec.quantity = 1;
  const int64_t c = engine->create_campaign(spec).id;
  engine->issue(c, {"first", ""});
  IssueRequest r{"someone", ""};
  for (auto _ : state) benchmark::DoNotOptimize(engine->issue(c, r));
  state.SetItemsProcessed(state.iterations());
  engine->close();
}
BENCHMARK(BM_SoldOutIssue)->Arg(0)->Arg(1)->Arg(0)->Arg(1);

}  // namespace
