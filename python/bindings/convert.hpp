// Conversions between Python objects and the core's values, done while holding the GIL, and
// the interruptible wait used around every blocking call (the GIL is released while waiting and
// re-taken every 50 ms to check signals, so Ctrl-C works).
#pragma once

#include <pybind11/pybind11.h>

#include <chrono>
#include <cstddef>
#include <future>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "couponcore/auth.hpp"
#include "couponcore/error.hpp"
#include "couponcore/types.hpp"
#include "errors.hpp"

namespace couponcore {
class Engine;
}

namespace couponcore::py_bindings {

namespace py = pybind11;

int64_t to_i64(py::handle o, const char* what);
std::string to_str(py::handle o, const char* what);
// Keyword options (a dict) read into an options struct, field by field: None keeps the
// default, a value of the wrong type is InvalidType, a number out of the field's range
// InvalidArgument, and finish() refuses the keys no field asked for — a misspelt option must
// not pass silently. Ranges beyond the field's type are the core's to check.
class OptionReader {
 public:
  explicit OptionReader(py::dict d) : d_(std::move(d)) {}
  void get(const char* key, std::string& field);
  void get(const char* key, bool& field);
  void get(const char* key, int& field);
  void get(const char* key, int64_t& field);
  void get(const char* key, std::size_t& field);
  // InvalidArgument naming every key of the dict no get() asked for, "unknown options for <what>".
  void finish(const char* what) const;

 private:
  py::handle value(const char* key);  // null when absent or None
  py::dict d_;
  std::set<std::string> asked_;
};

// user_ids: a sequence of str; request_ids: None or a sequence of str/None of the same length.
// traceparent: None, one str for all, or a sequence with one str / None per user id.
std::vector<IssueRequest> to_requests(py::handle user_ids, py::handle request_ids, py::handle traceparent);
// A traceparent argument as text ("" for None or a non-str); the engine checks its form.
std::string traceparent_of(py::handle o);
// The Python couponcore.Status member for a status (borrowed; lives as long as the process).
py::object status_object(IssueStatus s);
// An IssueResult as a Python object; answers without a coupon share one object per status.
py::object result_object(const IssueResult& r);
py::list result_list(const std::vector<IssueResult>& results);
py::object int_or_none(const std::optional<int64_t>& v);
// The authentication cache options of open_*(); None keeps the default.
AuthOptions auth_options_from(py::handle ttl_ms, py::handle entries_max);
// The native engine behind a _core.Engine (raises Closed if closed or opened before a fork).
Engine& engine_of(py::handle self);

// False while the interpreter is finalizing: native threads must not take the GIL then.
inline bool interpreter_alive() {
#if PY_VERSION_HEX >= 0x030D0000
  return Py_IsInitialized() && !Py_IsFinalizing();
#else
  return Py_IsInitialized() && !_Py_IsFinalizing();
#endif
}

// Call with the GIL released.
template <typename T>
T wait_interruptibly(std::future<T>& f) {
  using namespace std::chrono_literals;
  while (f.wait_for(50ms) != std::future_status::ready) {
    py::gil_scoped_acquire gil;
    if (PyErr_CheckSignals() != 0) throw py::error_already_set();
  }
  return f.get();
}

// The blocking face of a callback API: submit(callback) and the wait for the callback's answer
// run under ONE release of the GIL (each release and re-acquisition is a hand-off among the
// caller's threads).
template <typename T, typename Submit>
T submit_and_wait(Submit&& submit) {
  auto promise = std::make_shared<std::promise<Answer<T>>>();
  auto future = promise->get_future();
  py::gil_scoped_release nogil;
  submit([promise](T&& r, std::exception_ptr err) {
    Answer<T> a;
    if (err) {
      a.error = error_from(err);  // a copy: see error_from
    } else {
      a.value = std::move(r);
    }
    promise->set_value(std::move(a));
  });
  return wait_interruptibly(future).take();
}

}  // namespace couponcore::py_bindings
