// Binds couponcore::Engine as _core.Engine. Every blocking call converts its arguments with the
// GIL held, releases it around the wait, and builds results after re-taking it.
//
// An engine belongs to the process that opened it: its threads do not survive fork(). In a
// child every call raises Closed, and the child never runs the engine's destructor (which
// would join threads that do not exist there).
#include <unistd.h>

#include <array>
#include <memory>

#include "args.hpp"
#include "async.hpp"
#include "convert.hpp"
#include "records.hpp"
#include "couponcore/engine.hpp"
#include "couponcore/error.hpp"
#include "couponcore/limits.hpp"

namespace couponcore::py_bindings {

py::dict histograms_dict(const Engine& e);

namespace {

class PyEngine {
 public:
  explicit PyEngine(std::unique_ptr<Engine> engine)
      : engine_(std::move(engine)), pid_(::getpid()), async_(std::make_shared<AsyncCompletions>()) {
    engine_->set_batch_end_hook([async = async_] { async->flush(); });
  }
  ~PyEngine() {
    if (::getpid() != pid_) {
      (void)engine_.release();  // opened before a fork: the child must not touch it
      return;
    }
    py::gil_scoped_release nogil;
    engine_.reset();
  }

  Engine& get() {
    if (::getpid() != pid_) {
      raise(ErrorCode::kClosed, "this engine was opened in process " + std::to_string(pid_) +
                                    " before a fork; open a new engine in process " + std::to_string(::getpid()));
    }
    if (engine_->closed()) raise(ErrorCode::kClosed, "the engine is closed");
    return *engine_;
  }

  bool closed() const { return ::getpid() != pid_ || engine_->closed(); }
  AsyncCompletions& async() { return *async_; }

  void close() {
    if (::getpid() != pid_) return;
    py::gil_scoped_release nogil;
    engine_->close();
  }

 private:
  std::unique_ptr<Engine> engine_;
  pid_t pid_;
  std::shared_ptr<AsyncCompletions> async_;
};

// Queues requests whose answer resolves `future` (an asyncio.Future of `loop`).
void submit_async(PyEngine& self, int64_t campaign_id, std::vector<IssueRequest> requests, py::object loop,
                  py::object future, bool single) {
  Engine& e = self.get();
  AsyncCompletions* completions = &self.async();
  PyObject* loop_ref = loop.release().ptr();
  PyObject* future_ref = future.release().ptr();
  auto cb = [completions, loop_ref, future_ref, single](std::vector<IssueResult>&& r, std::exception_ptr err) {
    completions->push(AsyncCompletions::Item{loop_ref, future_ref, single, std::move(r), err});
  };
  try {
    py::gil_scoped_release nogil;
    e.submit_issue(campaign_id, std::move(requests), std::move(cb));
  } catch (...) {
    // Refused before queueing: the callback will never run, so the references are ours again.
    Py_DECREF(loop_ref);
    Py_DECREF(future_ref);
    throw;
  }
}

std::vector<IssueResult> issue_blocking(Engine& e, int64_t campaign_id, std::vector<IssueRequest> requests) {
  return submit_and_wait<std::vector<IssueResult>>(
      [&](auto callback) { e.submit_issue(campaign_id, std::move(requests), std::move(callback)); });
}

std::optional<int64_t> opt_i64(py::handle o, const char* what) {
  if (o.is_none()) return std::nullopt;
  return to_i64(o, what);
}

CampaignSpec spec_from(py::dict d) {
  CampaignSpec s;
  auto get = [&](const char* k) -> py::object { return d.contains(k) ? py::object(d[k]) : py::none(); };
  s.name = to_str(get("name"), "name");
  s.quantity = to_i64(get("quantity"), "quantity");
  if (!get("per_user_limit").is_none()) {
    int64_t l = to_i64(get("per_user_limit"), "per_user_limit");
    if (l < 0 || l > INT32_MAX) raise(ErrorCode::kInvalidArgument, "per_user_limit is out of range");
    s.per_user_limit = static_cast<int32_t>(l);
  }
  if (!get("shards").is_none()) {
    int64_t k = to_i64(get("shards"), "shards");
    if (k < 1 || k > limits::kShardsMax) {
      raise(ErrorCode::kInvalidArgument, "shards must be 1.." + std::to_string(limits::kShardsMax) + ", got " + std::to_string(k));
    }
    s.shards = static_cast<int32_t>(k);
  }
  // Rate limits: out-of-int32 values are refused here, the ranges by check_rate_limits.
  auto rate_field = [&](const char* k, int32_t* out) {
    if (get(k).is_none()) return;
    const int64_t v = to_i64(get(k), k);
    if (v < INT32_MIN || v > INT32_MAX) raise(ErrorCode::kInvalidArgument, std::string(k) + " is out of range");
    *out = static_cast<int32_t>(v);
  };
  rate_field("rate_limit_per_user", &s.rate_limit_per_user);
  rate_field("rate_limit_per_partner", &s.rate_limit_per_partner);
  rate_field("rate_window_ms", &s.rate_window_ms);
  s.starts_at_us = opt_i64(get("starts_at_us"), "starts_at");
  s.ends_at_us = opt_i64(get("ends_at_us"), "ends_at");
  if (!get("partner_id").is_none()) s.partner_id = to_i64(get("partner_id"), "partner_id");
  py::object kind = get("discount_kind");
  if (!kind.is_none()) {
    std::string k = to_str(kind, "discount_kind");
    if (k == "fixed") {
      s.discount_kind = DiscountKind::kFixed;
    } else if (k == "percent") {
      s.discount_kind = DiscountKind::kPercent;
    } else if (k != "none") {
      raise(ErrorCode::kInvalidArgument, "discount_kind must be 'fixed', 'percent' or 'none'");
    }
  }
  if (!get("discount_value").is_none()) s.discount_value = to_i64(get("discount_value"), "discount_value");
  s.discount_max = opt_i64(get("discount_max"), "discount_max");
  if (!get("min_order_amount").is_none()) s.min_order_amount = to_i64(get("min_order_amount"), "min_order_amount");
  s.valid_until_us = opt_i64(get("valid_until_us"), "valid_until");
  if (auto vd = opt_i64(get("valid_days"), "valid_days")) {
    if (*vd < INT32_MIN || *vd > INT32_MAX) raise(ErrorCode::kInvalidArgument, "valid_days is out of range");
    s.valid_days = static_cast<int32_t>(*vd);
  }
  return s;
}

}  // namespace

py::object wrap_engine(std::unique_ptr<Engine> engine);
Engine& engine_of(py::handle self) { return self.cast<PyEngine&>().get(); }

void register_engine(py::module_& m) {
  py::class_<PyEngine>(m, "Engine", "The native engine; use couponcore.open() rather than this class.")
      .def_property_readonly("kind", [](PyEngine& self) { return std::string(self.get().kind()); })
      .def_property_readonly("closed", &PyEngine::closed)
      .def("close", &PyEngine::close)
      .def("create_campaign", [](PyEngine& self, py::dict spec) {
        Engine& e = self.get();
        CampaignSpec s = spec_from(spec);
        Campaign c;
        {
          py::gil_scoped_release nogil;
          c = e.create_campaign(s);
        }
        return to_record(c);
      })
      .def("get_campaign", [](PyEngine& self, py::object id) {
        Engine& e = self.get();
        int64_t cid = to_i64(id, "campaign_id");
        Campaign c;
        {
          py::gil_scoped_release nogil;
          c = e.get_campaign(cid);
        }
        return to_record(c);
      })
      .def("list_campaigns", [](PyEngine& self, py::object partner_id) {
        Engine& e = self.get();
        int64_t pid = to_i64(partner_id, "partner_id");
        std::vector<Campaign> cs;
        {
          py::gil_scoped_release nogil;
          cs = e.list_campaigns(pid);
        }
        return to_records(cs);
      })
      .def("issue", [](PyEngine& self, py::object campaign_id, py::object user_id, py::object request_id,
                        py::object traceparent) {
        Engine& e = self.get();
        std::vector<IssueRequest> one(1);
        int64_t cid = to_i64(campaign_id, "campaign_id");
        one[0].user_id = to_str(user_id, "user_id");
        if (!request_id.is_none()) one[0].request_id = to_str(request_id, "request_id");
        one[0].traceparent = traceparent_of(traceparent);
        return result_object(issue_blocking(e, cid, std::move(one)).at(0));
      }, py::arg("campaign_id"), py::arg("user_id"), py::arg("request_id") = py::none(),
         py::arg("traceparent") = py::none())
      .def("issue_many", [](PyEngine& self, py::object campaign_id, py::object user_ids, py::object request_ids,
                             py::object traceparent) {
        Engine& e = self.get();
        int64_t cid = to_i64(campaign_id, "campaign_id");
        std::vector<IssueRequest> reqs = to_requests(user_ids, request_ids, traceparent);
        std::vector<IssueResult> results = issue_blocking(e, cid, std::move(reqs));
        return result_list(results);
      }, py::arg("campaign_id"), py::arg("user_ids"), py::arg("request_ids") = py::none(),
         py::arg("traceparent") = py::none())
      .def("submit_issue", [](PyEngine& self, py::object campaign_id, py::object user_id, py::object request_id,
                               py::object loop, py::object future, py::object traceparent) {
        int64_t cid = to_i64(campaign_id, "campaign_id");
        std::vector<IssueRequest> one(1);
        one[0].user_id = to_str(user_id, "user_id");
        if (!request_id.is_none()) one[0].request_id = to_str(request_id, "request_id");
        one[0].traceparent = traceparent_of(traceparent);
        submit_async(self, cid, std::move(one), std::move(loop), std::move(future), true);
      }, py::arg("campaign_id"), py::arg("user_id"), py::arg("request_id"), py::arg("loop"), py::arg("future"),
         py::arg("traceparent") = py::none())
      .def("submit_issue_many", [](PyEngine& self, py::object campaign_id, py::object user_ids,
                                    py::object request_ids, py::object loop, py::object future, py::object traceparent) {
        int64_t cid = to_i64(campaign_id, "campaign_id");
        std::vector<IssueRequest> reqs = to_requests(user_ids, request_ids, traceparent);
        if (reqs.empty()) {
          future.attr("set_result")(py::list());
          return;
        }
        submit_async(self, cid, std::move(reqs), std::move(loop), std::move(future), false);
      }, py::arg("campaign_id"), py::arg("user_ids"), py::arg("request_ids"), py::arg("loop"), py::arg("future"),
         py::arg("traceparent") = py::none())
      .def("campaign_stats", [](PyEngine& self, py::object campaign_id) {
        Engine& e = self.get();
        int64_t cid = to_i64(campaign_id, "campaign_id");
        CampaignStats st;
        {
          py::gil_scoped_release nogil;
          st = e.campaign_stats(cid);
        }
        return to_record(st);
      })
      .def("gate_issued", [](PyEngine& self, py::object campaign_id) -> py::object {
        Engine& e = self.get();
        const int64_t cid = to_i64(campaign_id, "campaign_id");
        int64_t n;
        {
          py::gil_scoped_release nogil;
          n = e.gate_issued(cid);
        }
        if (n < 0) return py::none();
        return py::int_(n);
      })
      .def("count_address", [](PyEngine& self, const std::string& address, int32_t limit, int32_t window_ms) -> py::object {
        Engine& e = self.get();
        std::optional<int64_t> ms;
        {
          py::gil_scoped_release nogil;
          ms = e.count_address(address, limit, window_ms);
        }
        if (!ms) return py::none();
        return py::int_(*ms);
      }, py::arg("address"), py::arg("limit"), py::arg("window_ms"))
      .def("flush_answers", [](PyEngine& self) {
        Engine& e = self.get();
        py::gil_scoped_release nogil;
        return e.flush_answers();
      })
      .def("answer_counters", [](PyEngine& self) -> py::object {
        const std::optional<AnswerRecorderCounters> k = self.get().answer_counters();
        if (!k) return py::none();
        return to_dict(*k);
      })
      .def("drain", [](PyEngine& self, py::object timeout) {
        Engine& e = self.get();
        const double timeout_s = to_timeout_s(timeout, "timeout_s");
        py::gil_scoped_release nogil;
        return e.drain(timeout_s);
      }, py::arg("timeout_s") = 30.0)
      .def("histograms", [](PyEngine& self) { return histograms_dict(self.get()); })
      .def("enable_tracing", [](PyEngine& self, py::object capacity) {
        self.get().enable_tracing(trace_capacity(capacity));
      }, py::arg("capacity") = 4096)
      .def("disable_tracing", [](PyEngine& self) { self.get().disable_tracing(); })
      .def("take_trace_records", [](PyEngine& self, py::object max, py::object timeout_ms) {
        Engine& e = self.get();
        return take_trace_records([&e](std::size_t n, int64_t t) { return e.take_trace_records(n, t); }, max, timeout_ms);
      }, py::arg("max") = 256, py::arg("timeout_ms") = 0)
      .def("trace_stats", [](PyEngine& self) { return to_dict(self.get().trace_stats()); })
      .def("log_backlog", [](PyEngine& self) {
        Engine& e = self.get();
        std::vector<LogBacklog> b;
        {
          py::gil_scoped_release nogil;
          b = e.log_backlog();
        }
        return to_records(b);
      })
      .def("writers", [](PyEngine& self, bool pending) {
        Engine& e = self.get();
        std::vector<WriterInfo> w;
        {
          py::gil_scoped_release nogil;
          w = e.writers(pending);
        }
        return to_records(w);
      }, py::arg("pending") = true)
      .def("list_dead_letters", [](PyEngine& self, py::object campaign_id, py::object after, py::object limit) {
        Engine& e = self.get();
        const int64_t cid = campaign_id.is_none() ? 0 : to_i64(campaign_id, "campaign_id");
        if (!campaign_id.is_none() && cid <= 0) raise(ErrorCode::kNotFound, "campaign " + std::to_string(cid) + " not found");
        const std::string a = after.is_none() ? std::string() : to_str(after, "after");
        const int64_t n = to_i64(limit, "limit");
        std::vector<DeadLetter> ds;
        {
          py::gil_scoped_release nogil;
          ds = e.list_dead_letters(cid, a, n);
        }
        return to_records(ds);
      }, py::arg("campaign_id") = py::none(), py::arg("after") = py::none(), py::arg("limit") = 100)
      .def("dead_letter", [](PyEngine& self, py::object campaign_id, py::object id, py::object op) {
        Engine& e = self.get();
        const int64_t cid = to_i64(campaign_id, "campaign_id");
        const std::string i = to_str(id, "id");
        const std::string what = to_str(op, "op");
        DeadLetter d;
        {
          py::gil_scoped_release nogil;
          if (what == "get") {
            d = e.get_dead_letter(cid, i);
          } else if (what == "redrive") {
            d = e.redrive_dead_letter(cid, i);
          } else if (what == "drop") {
            d = e.drop_dead_letter(cid, i);
          } else {
            throw Error(ErrorCode::kInvalidArgument, "op must be 'get', 'redrive' or 'drop'");
          }
        }
        return to_record(d);
      }, py::arg("campaign_id"), py::arg("id"), py::arg("op") = "get")
      .def("reconcile", [](PyEngine& self, py::object campaign_id) {
        Engine& e = self.get();
        int64_t cid = to_i64(campaign_id, "campaign_id");
        ReconcileReport r;
        {
          py::gil_scoped_release nogil;
          r = e.reconcile(cid);
        }
        return to_dict(r);
      })
      .def("counters", [](PyEngine& self) {
        EngineCounters k = self.get().counters();
        py::dict d;
        d["requests"] = k.requests;
        d["issued"] = k.issued;
        d["batches"] = k.batches;
        d["commits"] = k.commits;
        d["fast_path"] = k.fast_path;
        d["commit_failures"] = k.commit_failures;
        d["unavailable"] = k.unavailable;
        d["redis_reconnects"] = k.redis_reconnects;
        d["grants_written"] = k.grants_written;
        d["dead_lettered"] = k.dead_lettered;
        d["writer_failures"] = k.writer_failures;
        d["writer_claimed"] = k.writer_claimed;
        d["replica_waits"] = k.replica_waits;
        d["replica_wait_shortfalls"] = k.replica_wait_shortfalls;
        d["queued_requests"] = k.queued_requests;
        d["queue_refused"] = k.queue_refused;
        d["coupon_uses"] = k.coupon_uses;
        d["coupon_cancels"] = k.coupon_cancels;
        d["coupon_uses_refused"] = k.coupon_uses_refused;
        d["address_requests"] = k.address_requests;
        d["address_calls"] = k.address_calls;
        py::dict by;
        for (int i = 0; i < 6; ++i) by[issue_status_name(static_cast<IssueStatus>(i))] = k.by_status[i];
        d["by_status"] = by;
        return d;
      });

  m.def("open_embedded", [](const std::string& path, bool synchronous_full, py::object auth_cache_ttl_ms,
                            py::object auth_cache_entries_max, bool windows, int64_t windows_flush_ms, bool events) {
    EmbeddedOptions o{path, synchronous_full, {}};
    o.windows = windows;
    o.windows_flush_ms = windows_flush_ms;
    o.events = events;
    o.auth = auth_options_from(auth_cache_ttl_ms, auth_cache_entries_max);
    std::unique_ptr<Engine> e;
    {
      py::gil_scoped_release nogil;
      e = open_embedded(o);
    }
    return wrap_engine(std::move(e));
  }, py::arg("path"), py::arg("synchronous_full") = true, py::arg("auth_cache_ttl_ms") = py::none(),
     py::arg("auth_cache_entries_max") = py::none(), py::arg("windows") = true, py::arg("windows_flush_ms") = 200,
     py::arg("events") = true);
}

py::object wrap_engine(std::unique_ptr<Engine> engine) {
  return py::cast(std::make_unique<PyEngine>(std::move(engine)));
}

}  // namespace couponcore::py_bindings
