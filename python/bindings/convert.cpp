#include "convert.hpp"

#include <array>
#include <limits>

#include "args.hpp"
#include "couponcore/limits.hpp"

namespace couponcore::py_bindings {

int64_t to_i64(py::handle o, const char* what) {
  if (!PyLong_Check(o.ptr()) || PyBool_Check(o.ptr())) {
    raise_invalid_type(std::string(what) + " must be an int, got " + std::string(py::str(o.get_type().attr("__name__"))));
  }
  int overflow = 0;
  long long v = PyLong_AsLongLongAndOverflow(o.ptr(), &overflow);
  if (overflow != 0) raise(ErrorCode::kInvalidArgument, std::string(what) + " is out of range");
  if (v == -1 && PyErr_Occurred()) throw py::error_already_set();
  return static_cast<int64_t>(v);
}

py::handle OptionReader::value(const char* key) {
  asked_.insert(key);
  if (!d_.contains(key)) return py::handle();
  py::handle v = d_[key];
  return v.is_none() ? py::handle() : v;
}

void OptionReader::get(const char* key, std::string& field) {
  if (py::handle v = value(key)) field = to_str(v, key);
}

void OptionReader::get(const char* key, bool& field) {
  py::handle v = value(key);
  if (!v) return;
  if (!PyBool_Check(v.ptr())) {
    raise_invalid_type(std::string(key) + " must be a bool, got " + std::string(py::str(v.get_type().attr("__name__"))));
  }
  field = v.ptr() == Py_True;
}

void OptionReader::get(const char* key, int64_t& field) {
  if (py::handle v = value(key)) field = to_i64(v, key);
}

void OptionReader::get(const char* key, int& field) {
  py::handle v = value(key);
  if (!v) return;
  const int64_t x = to_i64(v, key);
  if (x < std::numeric_limits<int>::min() || x > std::numeric_limits<int>::max()) raise(ErrorCode::kInvalidArgument, std::string(key) + " is out of range");
  field = static_cast<int>(x);
}

void OptionReader::get(const char* key, std::size_t& field) {
  py::handle v = value(key);
  if (!v) return;
  const int64_t x = to_i64(v, key);
  if (x < 0) raise(ErrorCode::kInvalidArgument, std::string(key) + " must not be negative");
  field = static_cast<std::size_t>(x);
}

void OptionReader::finish(const char* what) const {
  std::string unknown;
  for (auto item : d_) {
    const std::string key = py::str(item.first);
    if (asked_.count(key) && PyUnicode_Check(item.first.ptr())) continue;
    unknown += (unknown.empty() ? "" : ", ") + key;
  }
  if (!unknown.empty()) raise(ErrorCode::kInvalidArgument, std::string("unknown options for ") + what + ": " + unknown);
}

namespace {
std::string_view utf8(py::handle o, const char* what) {
  if (!PyUnicode_Check(o.ptr())) {
    raise_invalid_type(std::string(what) + " must be a str, got " + std::string(py::str(o.get_type().attr("__name__"))));
  }
  Py_ssize_t n = 0;
  const char* p = PyUnicode_AsUTF8AndSize(o.ptr(), &n);
  if (!p) {
    if (!PyErr_ExceptionMatches(PyExc_UnicodeEncodeError)) throw py::error_already_set();
    PyErr_Clear();  // a lone surrogate ('\ud800'): a str that has no UTF-8 form
    raise(ErrorCode::kInvalidArgument, std::string(what) + " is not valid Unicode text (it holds a lone surrogate)");
  }
  return {p, static_cast<std::size_t>(n)};
}
}  // namespace

std::string to_str(py::handle o, const char* what) { return std::string(utf8(o, what)); }

std::string traceparent_of(py::handle o) {
  if (o.ptr() == nullptr || !PyUnicode_Check(o.ptr())) return {};  // None, or not text: no trace context
  Py_ssize_t n = 0;
  const char* p = PyUnicode_AsUTF8AndSize(o.ptr(), &n);
  if (p == nullptr) {
    PyErr_Clear();  // not encodable: malformed, ignored like any other
    return {};
  }
  return std::string(p, static_cast<std::size_t>(n));
}

std::vector<IssueRequest> to_requests(py::handle user_ids, py::handle request_ids, py::handle traceparents) {
  py::object users = sequence_fast(user_ids, "user_ids");
  const Py_ssize_t n = PySequence_Fast_GET_SIZE(users.ptr());
  if (static_cast<std::size_t>(n) > limits::kIssueBatchMax) {
    raise(ErrorCode::kInvalidArgument, "a batch holds at most " + std::to_string(limits::kIssueBatchMax) +
                                           " requests, got " + std::to_string(n));
  }
  py::object reqs;
  if (!request_ids.is_none()) {
    reqs = sequence_fast(request_ids, "request_ids");
    if (PySequence_Fast_GET_SIZE(reqs.ptr()) != n) {
      raise(ErrorCode::kInvalidArgument, "request_ids must have as many items as user_ids");
    }
  }
  // traceparents: one str for every request, or one item (str or None) per request.
  py::object tps;
  std::string one_tp;
  if (PyUnicode_Check(traceparents.ptr())) {
    one_tp = traceparent_of(traceparents);
  } else if (!traceparents.is_none()) {
    tps = sequence_fast(traceparents, "traceparent");
    if (PySequence_Fast_GET_SIZE(tps.ptr()) != n) {
      raise(ErrorCode::kInvalidArgument, "traceparent must be one str or have as many items as user_ids");
    }
  }
  std::vector<IssueRequest> out(static_cast<std::size_t>(n));
  PyObject** items = PySequence_Fast_ITEMS(users.ptr());
  PyObject** rids = reqs ? PySequence_Fast_ITEMS(reqs.ptr()) : nullptr;
  PyObject** tp_items = tps ? PySequence_Fast_ITEMS(tps.ptr()) : nullptr;
  for (Py_ssize_t i = 0; i < n; ++i) {
    out[i].user_id = utf8(items[i], "user_id");
    if (rids && rids[i] != Py_None) out[i].request_id = utf8(rids[i], "request_id");
    if (tp_items) {
      out[i].traceparent = traceparent_of(tp_items[i]);
    } else if (!one_tp.empty()) {
      out[i].traceparent = one_tp;
    }
  }
  return out;
}

py::object status_object(IssueStatus s) {
  static std::array<PyObject*, 6> cache{};  // leaked on purpose: lives until the process ends
  PyObject*& slot = cache[static_cast<int>(s)];
  if (!slot) {
    py::object cls = py::module_::import("couponcore._types").attr("Status");
    slot = cls(issue_status_name(s)).release().ptr();
  }
  return py::reinterpret_borrow<py::object>(slot);
}

// Answers without a coupon or a retry-after (SOLD_OUT, ALREADY_ISSUED, ...) are equal and immutable: share one
// Python object per status instead of allocating one per request (most answers of a flash sale).
py::object result_object(const IssueResult& r) {
  if (r.seq != 0 || r.retry_after_ms != 0) return py::cast(r);
  static std::array<PyObject*, 6> shared{};  // leaked on purpose: lives until the process ends
  PyObject*& slot = shared[static_cast<int>(r.status)];
  if (!slot) slot = py::cast(r).release().ptr();
  return py::reinterpret_borrow<py::object>(slot);
}

py::list result_list(const std::vector<IssueResult>& results) {
  py::list out(results.size());
  for (std::size_t i = 0; i < results.size(); ++i) {
    PyList_SET_ITEM(out.ptr(), static_cast<Py_ssize_t>(i), result_object(results[i]).release().ptr());
  }
  return out;
}

py::object int_or_none(const std::optional<int64_t>& v) { return v ? py::object(py::int_(*v)) : py::none(); }

AuthOptions auth_options_from(py::handle ttl_ms, py::handle entries_max) {
  AuthOptions a;
  if (!ttl_ms.is_none()) a.cache_ttl_ms = to_i64(ttl_ms, "auth_cache_ttl_ms");
  if (!entries_max.is_none()) {
    const int64_t n = to_i64(entries_max, "auth_cache_entries_max");
    if (n < 0) raise(ErrorCode::kInvalidArgument, "auth_cache_entries_max must not be negative");
    a.cache_entries_max = static_cast<std::size_t>(n);
  }
  return a;
}

}  // namespace couponcore::py_bindings
