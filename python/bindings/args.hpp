// Argument checks of the binding that are more than a type conversion: sequences of str and
// timeouts in seconds. A wrong Python type is InvalidType, a value out of range (also inf and
// NaN) InvalidArgument: never a bare TypeError, ValueError or OverflowError.
#pragma once

#include <pybind11/pybind11.h>

namespace couponcore::py_bindings {

// Timeouts in seconds are 0..kTimeoutSecondsMax (one year).
inline constexpr double kTimeoutSecondsMax = 365.0 * 86'400.0;

// A sequence (list, tuple, ...) as a PySequence_Fast object. A str, bytes or bytearray (which
// would be split into characters), a dict (its keys), a set (no order) or an iterator is
// InvalidType. The items are the caller's to check.
pybind11::object sequence_fast(pybind11::handle o, const char* what);
// An int or float number of seconds, 0..kTimeoutSecondsMax: a bool or another type is
// InvalidType; negative, too large, inf and NaN are InvalidArgument.
double to_timeout_s(pybind11::handle o, const char* what);

}  // namespace couponcore::py_bindings
