// couponcore._core: the pybind11 module. Only conversions, GIL handling and error mapping live
// in python/bindings; the engine is the C++ core (cpp/).
#include <pybind11/pybind11.h>

#include "errors.hpp"

namespace couponcore::py_bindings {
void register_records(pybind11::module_& m);  // _core.IssueResult, _core.fields
void register_engine(pybind11::module_& m);
void register_metrics(pybind11::module_& m);
void register_production(pybind11::module_& m);
void register_wallet(pybind11::module_& m);
void register_coupons(pybind11::module_& m);  // after register_engine: adds methods to Engine
void register_events(pybind11::module_& m);   // after register_engine: adds methods to Engine
}

PYBIND11_MODULE(_core, m) {
  m.doc() = "couponcore native core";
  couponcore::py_bindings::register_errors(m);
  couponcore::py_bindings::register_records(m);
  couponcore::py_bindings::register_engine(m);
  couponcore::py_bindings::register_metrics(m);
  couponcore::py_bindings::register_production(m);
  couponcore::py_bindings::register_wallet(m);
  couponcore::py_bindings::register_coupons(m);
  couponcore::py_bindings::register_events(m);
}
