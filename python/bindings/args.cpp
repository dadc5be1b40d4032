#include "args.hpp"

#include <cmath>
#include <string>

#include "errors.hpp"

namespace couponcore::py_bindings {

namespace py = pybind11;

namespace {
std::string type_name(py::handle o) { return py::str(o.get_type().attr("__name__")); }
}  // namespace

py::object sequence_fast(py::handle o, const char* what) {
  PyObject* p = o.ptr();
  if (PyUnicode_Check(p) || PyBytes_Check(p) || PyByteArray_Check(p)) {
    raise_invalid_type(std::string(what) + " must be a sequence of str (a list or tuple), not a single " + type_name(o));
  }
  // PySequence_Check is false for dicts, sets and iterators: PySequence_Fast would take their
  // keys, an arbitrary order or a one-shot stream.
  if (!PySequence_Check(p)) {
    raise_invalid_type(std::string(what) + " must be a sequence of str (a list or tuple), got " + type_name(o));
  }
  py::object fast = py::reinterpret_steal<py::object>(PySequence_Fast(p, what));
  if (!fast) throw py::error_already_set();
  return fast;
}

double to_timeout_s(py::handle o, const char* what) {
  PyObject* p = o.ptr();
  if (PyBool_Check(p) || !(PyLong_Check(p) || PyFloat_Check(p))) {
    raise_invalid_type(std::string(what) + " must be a number of seconds, got " + type_name(o));
  }
  double v = 0;
  if (PyFloat_Check(p)) {
    v = PyFloat_AS_DOUBLE(p);
  } else {
    v = PyLong_AsDouble(p);  // OverflowError beyond a double's range
    if (v == -1.0 && PyErr_Occurred()) {
      PyErr_Clear();
      v = HUGE_VAL;
    }
  }
  if (!std::isfinite(v) || v < 0 || v > kTimeoutSecondsMax) {
    // (Not the value itself: the str of a huge int may be refused by Python.)
    raise(ErrorCode::kInvalidArgument,
          std::string(what) + " must be 0.." + std::to_string(static_cast<int64_t>(kTimeoutSecondsMax)) + " seconds");
  }
  return v;
}

}  // namespace couponcore::py_bindings
