// The one place where the core's typed errors become Python exceptions.
//
// couponcore.Error is the root; each ErrorCode has one class. InvalidArgument is also a
// ValueError, NotFound a LookupError, Closed a RuntimeError, so plain Python handlers work too;
// InvalidType (wrong Python types) is an InvalidArgument and a TypeError.
#pragma once

#include <pybind11/pybind11.h>

#include "couponcore/error.hpp"

namespace couponcore::py_bindings {

void register_errors(pybind11::module_& m);
// Raises the Python exception for code (sets the error indicator and throws error_already_set).
[[noreturn]] void raise(couponcore::ErrorCode code, const std::string& message);
[[noreturn]] void raise_invalid_type(const std::string& message);
// The Python exception instance for a C++ exception (GIL held): couponcore errors map to their
// class, anything else to InternalError.
pybind11::object exception_object(std::exception_ptr error);

}  // namespace couponcore::py_bindings
