// Metrics snapshots for the Python layer, and the native log sink that forwards the core's
// (rate-limited) warnings and errors to Python's logging module as logger "couponcore.<component>".
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include "convert.hpp"
#include "couponcore/engine.hpp"
#include "couponcore/metrics.hpp"

namespace py = pybind11;

namespace couponcore::py_bindings {

namespace {


py::dict histogram_dict(const Histogram& h) {
  Histogram::Snapshot s = h.snapshot();
  py::dict d;
  d["upper_bounds"] = s.upper_bounds;
  d["cumulative_counts"] = s.cumulative_counts;
  d["sum"] = s.sum;
  d["count"] = s.count;
  return d;
}

void python_log_sink(LogLevel level, std::string_view component, std::string_view message) {
  if (!interpreter_alive()) return;
  py::gil_scoped_acquire gil;
  try {
    py::object logging = py::module_::import("logging");
    std::string name = "couponcore." + std::string(component);
    logging.attr("getLogger")(name).attr("log")(static_cast<int>(level), std::string(message));
  } catch (py::error_already_set& e) {
    e.discard_as_unraisable("couponcore log sink");
  }
}

}  // namespace

py::dict histograms_dict(const Engine& e) {
  py::dict d;
  d["issue_latency_seconds"] = histogram_dict(e.histograms().issue_latency_seconds);
  d["batch_requests"] = histogram_dict(e.histograms().batch_requests);
  d["commit_grants"] = histogram_dict(e.histograms().commit_grants);
  return d;
}

void register_metrics(py::module_& m) {
  set_log_sink(python_log_sink);
  m.def("_log_for_test", [](const std::string& component, const std::string& message) {
    py::gil_scoped_release nogil;
    log(LogLevel::kWarning, component, message);
  }, "Send a warning through the native log path (for tests).");
}

}  // namespace couponcore::py_bindings
