#include "errors.hpp"

#include <array>

namespace py = pybind11;

namespace couponcore::py_bindings {

namespace {

constexpr int kCodes = static_cast<int>(ErrorCode::kInternal) + 1;
std::array<PyObject*, kCodes> g_classes{};  // owned references, kept for the process lifetime
PyObject* g_invalid_type = nullptr;

PyObject* make_class(py::module_& m, const char* name, PyObject* bases, const char* doc) {
  std::string qualified = std::string("couponcore.") + name;
  PyObject* cls = PyErr_NewExceptionWithDoc(qualified.c_str(), doc, bases, nullptr);
  if (!cls) throw py::error_already_set();
  Py_INCREF(cls);
  m.add_object(name, py::reinterpret_borrow<py::object>(cls));
  return cls;
}

PyObject* tuple_of(std::initializer_list<PyObject*> items) {
  PyObject* t = PyTuple_New(static_cast<Py_ssize_t>(items.size()));
  Py_ssize_t i = 0;
  for (PyObject* o : items) {
    Py_INCREF(o);
    PyTuple_SET_ITEM(t, i++, o);
  }
  return t;
}

}  // namespace

void register_errors(py::module_& m) {
  PyObject* base = make_class(m, "Error", PyExc_Exception, "Root of every error couponcore raises.");
  auto cls = [&](ErrorCode code, const char* name, PyObject* also, const char* doc) {
    PyObject* bases = also ? tuple_of({base, also}) : tuple_of({base});
    g_classes[static_cast<int>(code)] = make_class(m, name, bases, doc);
    Py_DECREF(bases);
  };
  cls(ErrorCode::kInvalidArgument, "InvalidArgument", PyExc_ValueError,
      "Bad input: a value out of range, a malformed id, an oversized batch. Nothing was changed.");
  cls(ErrorCode::kNotFound, "NotFound", PyExc_LookupError,
      "No such object (or one that belongs to another partner).");
  cls(ErrorCode::kConflict, "Conflict", nullptr,
      "The object's state forbids the operation, or an idempotency key was reused with other content.");
  cls(ErrorCode::kUnavailable, "Unavailable", nullptr,
      "A server is down or a connection dropped; the operation may be retried with the same ids.");
  cls(ErrorCode::kClosed, "Closed", PyExc_RuntimeError, "The engine is closed (or was opened before a fork).");
  cls(ErrorCode::kInsufficientFunds, "InsufficientFunds", nullptr, "A wallet's balance is too low. Nothing was changed.");
  cls(ErrorCode::kUnauthenticated, "Unauthenticated", nullptr, "Unknown, revoked or malformed API key.");
  cls(ErrorCode::kInternal, "InternalError", nullptr, "A broken invariant inside couponcore: a bug, please report it.");
  PyObject* it_bases = tuple_of({g_classes[static_cast<int>(ErrorCode::kInvalidArgument)], PyExc_TypeError});
  g_invalid_type = make_class(m, "InvalidType", it_bases, "An argument of the wrong Python type.");
  Py_DECREF(it_bases);

  py::register_exception_translator([](std::exception_ptr p) {
    try {
      if (p) std::rethrow_exception(p);
    } catch (const Error& e) {
      PyErr_SetString(g_classes[static_cast<int>(e.code())], e.what());
    }
  });
}

py::object exception_object(std::exception_ptr error) {
  PyObject* cls = g_classes[static_cast<int>(ErrorCode::kInternal)];
  std::string message = "unknown error";
  try {
    std::rethrow_exception(error);
  } catch (const Error& e) {
    cls = g_classes[static_cast<int>(e.code())];
    message = e.what();
  } catch (const std::exception& e) {
    message = e.what();
  } catch (...) {
  }
  return py::reinterpret_borrow<py::object>(cls)(message);
}

void raise(ErrorCode code, const std::string& message) {
  PyErr_SetString(g_classes[static_cast<int>(code)], message.c_str());
  throw py::error_already_set();
}

void raise_invalid_type(const std::string& message) {
  PyErr_SetString(g_invalid_type, message.c_str());
  throw py::error_already_set();
}

}  // namespace couponcore::py_bindings
