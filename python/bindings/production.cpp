// The production deployment from Python: open_production (options as keyword arguments),
// migrate, and Worker — the standalone grant writer run on a native thread so that Python's
// signal handlers keep running in the main thread (`couponcore worker` stops on SIGTERM/SIGINT).
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <atomic>
#include <mutex>
#include <thread>

#include "args.hpp"
#include "convert.hpp"
#include "records.hpp"
#include "couponcore/engine.hpp"
#include "couponcore/worker.hpp"

namespace couponcore::py_bindings {

py::object wrap_engine(std::unique_ptr<Engine> engine);  // engine.cpp

namespace {

void read_event_options(OptionReader& r, EventOptions& e) {
  r.get("events", e.enabled);
  r.get("events_relay", e.relay);
  r.get("events_relay_poll_ms", e.relay_poll_ms);
  r.get("events_relay_batch_max", e.relay_batch_max);
  r.get("events_stream_maxlen", e.stream_maxlen);
  r.get("events_relay_stop_after_xadd_batches", e.relay_stop_after_xadd_batches);
}

void read_writer_options(OptionReader& r, WriterOptions& w) {
  r.get("writer_read_count_max", w.read_count_max);
  r.get("writer_block_ms", w.block_ms);
  r.get("writer_claim_idle_ms", w.claim_idle_ms);
  r.get("writer_claim_interval_ms", w.claim_interval_ms);
  r.get("writer_dead_letter_after_deliveries", w.dead_letter_after_deliveries);
  r.get("writer_backoff_initial_ms", w.backoff_initial_ms);
  r.get("writer_backoff_max_ms", w.backoff_max_ms);
  r.get("writer_breaker_failures", w.breaker_failures);
  r.get("writer_campaigns_refresh_ms", w.campaigns_refresh_ms);
  r.get("writer_streams_per_read_max", w.streams_per_read_max);
  r.get("writer_heartbeat_interval_ms", w.heartbeat_interval_ms);
  r.get("writer_dead_after_ms", w.dead_after_ms);
}

ProductionOptions production_options(py::dict d) {
  ProductionOptions o;
  OptionReader r(d);
  r.get("redis_url", o.redis_url);
  r.get("postgres_url", o.postgres_url);
  r.get("key_prefix", o.key_prefix);
  r.get("writer_threads", o.writer_threads);
  r.get("migrate_on_open", o.migrate_on_open);
  r.get("answer_ttl_s", o.answer_ttl_s);
  r.get("gate_batch_requests_max", o.gate_batch_requests_max);
  r.get("gate_pipeline_calls_max", o.gate_pipeline_calls_max);
  r.get("gate_cycle_requests_max", o.gate_cycle_requests_max);
  r.get("gate_retries_max", o.gate_retries_max);
  r.get("replicas_acked", o.replicas_acked);
  r.get("replica_wait_ms", o.replica_wait_ms);
  r.get("queued_requests_max", o.queued_requests_max);
  r.get("queue_full_wait_ms", o.queue_full_wait_ms);
  r.get("redis_connect_timeout_ms", o.redis_connect_timeout_ms);
  r.get("redis_command_timeout_ms", o.redis_command_timeout_ms);
  r.get("redis_backoff_max_ms", o.redis_backoff_max_ms);
  r.get("client_name", o.client_name);
  r.get("close_drain_timeout_ms", o.close_drain_timeout_ms);
  r.get("lifecycle_conns_max", o.lifecycle_conns_max);
  r.get("windows", o.windows);
  r.get("windows_flush_ms", o.windows_flush_ms);
  r.get("windows_stream_maxlen", o.windows_stream_maxlen);
  r.get("auth_cache_ttl_ms", o.auth.cache_ttl_ms);
  r.get("auth_cache_entries_max", o.auth.cache_entries_max);
  read_writer_options(r, o.writer);
  read_event_options(r, o.events);
  r.finish("the production engine");
  return o;
}

py::dict stats_dict(const WorkerStats& s) {
  py::dict d;
  d["grants_written"] = s.grants_written;
  d["batches"] = s.batches;
  d["dead_lettered"] = s.dead_lettered;
  d["failures"] = s.failures;
  d["claimed"] = s.claimed;
  d["replica_waits"] = s.replica_waits;
  d["replica_wait_shortfalls"] = s.replica_wait_shortfalls;
  d["breaker_open"] = s.breaker_open;
  return d;
}

// run_worker on its own thread; stop() may be called from a signal handler's Python code.
class PyWorker {
 public:
  explicit PyWorker(WorkerOptions options) : options_(std::move(options)) {
    options_.report = [this](const WorkerStats& s) {
      std::lock_guard lock(mu_);
      stats_ = s;
    };
    if (options_.report_interval_ms <= 0) options_.report_interval_ms = 1000;
    options_.trace = &trace_;
  }
  ~PyWorker() {
    stop_ = true;
    if (thread_.joinable()) {
      py::gil_scoped_release nogil;
      thread_.join();
    }
  }
  void start() {
    if (thread_.joinable()) raise(ErrorCode::kConflict, "the worker is already started");
    thread_ = std::thread([this] {
      try {
        run_worker(options_, stop_);
      } catch (...) {
        std::lock_guard lock(mu_);
        error_ = std::current_exception();
      }
      done_ = true;
    });
  }
  void stop() { stop_ = true; }
  // The trace sink, as the engine's (SpanEmitter drives it): the writers' commits while enabled.
  TraceSlot& trace() { return trace_; }
  // Waits up to timeout_s; true when the worker has finished. Re-raises its error.
  bool join(double timeout_s) {
    {
      py::gil_scoped_release nogil;
      auto deadline = std::chrono::steady_clock::now() + std::chrono::duration<double>(timeout_s);
      while (!done_ && std::chrono::steady_clock::now() < deadline) {
        std::this_thread::sleep_for(std::chrono::milliseconds(20));
      }
    }
    if (!done_) return false;
    if (thread_.joinable()) thread_.join();
    std::lock_guard lock(mu_);
    if (error_) std::rethrow_exception(error_);
    return true;
  }
  py::dict stats() {
    std::lock_guard lock(mu_);
    return stats_dict(stats_);
  }
  // The grant log's backlog over a connection of its own (opened at the first call): for the
  // metrics endpoint's thread, while run_worker runs on its own.
  py::list log_backlog() {
    std::vector<LogBacklog> b;
    {
      py::gil_scoped_release nogil;
      std::lock_guard lock(backlog_mu_);
      if (!backlog_) {
        backlog_ = std::make_unique<LogBacklogReader>(options_.redis_url, options_.key_prefix);
      }
      b = backlog_->read();
    }
    return to_records(b);
  }
  // Live writer consumers of the deployment (by heartbeat), over the same connection.
  int64_t writers_alive() {
    py::gil_scoped_release nogil;
    std::lock_guard lock(backlog_mu_);
    if (!backlog_) backlog_ = std::make_unique<LogBacklogReader>(options_.redis_url, options_.key_prefix);
    return backlog_->writers_alive(options_.writer.dead_after_ms);
  }

 private:
  TraceSlot trace_;  // before options_, which points at it
  WorkerOptions options_;
  std::atomic<bool> stop_{false};
  std::atomic<bool> done_{false};
  std::thread thread_;
  std::mutex mu_;
  WorkerStats stats_;
  std::exception_ptr error_;
  std::mutex backlog_mu_;
  std::unique_ptr<LogBacklogReader> backlog_;
};

}  // namespace

void register_production(py::module_& m) {
  m.def("open_production", [](py::dict options) {
    ProductionOptions o = production_options(options);
    std::unique_ptr<Engine> e;
    {
      py::gil_scoped_release nogil;
      e = open_production(o);
    }
    return wrap_engine(std::move(e));
  }, py::arg("options"));

  m.def("migrate", [](const std::string& postgres_url) {
    py::gil_scoped_release nogil;
    return migrate(postgres_url);
  }, py::arg("postgres_url"), "Apply the PostgreSQL migrations; returns how many were applied.");

  py::class_<PyWorker>(m, "Worker", "The standalone grant writer (run_worker) on a native thread.")
      .def(py::init([](py::dict d) {
        WorkerOptions o;
        OptionReader r(d);
        r.get("redis_url", o.redis_url);
        r.get("postgres_url", o.postgres_url);
        r.get("key_prefix", o.key_prefix);
        r.get("threads", o.threads);
        r.get("consumer_name", o.consumer_name);
        r.get("replicas_acked", o.replicas_acked);
        r.get("replica_wait_ms", o.replica_wait_ms);
        r.get("migrate_on_start", o.migrate_on_start);
        r.get("report_interval_ms", o.report_interval_ms);
        read_writer_options(r, o.writer);
        read_event_options(r, o.events);
        r.finish("the worker");
        return std::make_unique<PyWorker>(std::move(o));
      }))
      .def("start", &PyWorker::start)
      .def("stop", &PyWorker::stop)
      .def("join", [](PyWorker& w, py::object timeout) { return w.join(to_timeout_s(timeout, "timeout_s")); },
           py::arg("timeout_s"))
      .def("stats", &PyWorker::stats)
      .def("log_backlog", &PyWorker::log_backlog)
      .def("writers_alive", &PyWorker::writers_alive)
      .def("enable_tracing", [](PyWorker& w, py::object capacity) { w.trace().enable(trace_capacity(capacity)); },
           py::arg("capacity") = 4096)
      .def("disable_tracing", [](PyWorker& w) { w.trace().disable(); })
      .def("take_trace_records", [](PyWorker& w, py::object max, py::object timeout_ms) {
        TraceSlot& slot = w.trace();
        return take_trace_records([&slot](std::size_t n, int64_t t) { return slot.take(n, t); }, max, timeout_ms);
      }, py::arg("max") = 256, py::arg("timeout_ms") = 0)
      .def("trace_stats", [](PyWorker& w) { return to_dict(w.trace().stats()); });
}

}  // namespace couponcore::py_bindings
