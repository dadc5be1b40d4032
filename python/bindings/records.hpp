// The core's values as Python sees them: ONE field list per value type (records.cpp).
//
// A record is a name and an ordered list of fields, each a name and a getter (a member pointer
// or a lambda) whose result py::cast turns into a Python value (std::optional -> None). A
// record turns a C++ value into a tuple of those values in its order; the Python definition of
// the type (a dataclass in couponcore/_types.py or _wallet.py) picks its fields from the tuple
// by name, once per class (see couponcore._types.record). Each record's field names are published
// as _core.fields("Name"), which tests/python/test_value_types.py checks against every Python
// face. The values that stay dicts in the public API (reconcile(), counters()) are records
// too, turned into dicts.
#pragma once

#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <array>
#include <cstddef>
#include <functional>
#include <string>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

#include "couponcore/auth.hpp"
#include "couponcore/coupons.hpp"
#include "couponcore/engine.hpp"
#include "couponcore/tracing.hpp"
#include "couponcore/types.hpp"
#include "couponcore/wallet.hpp"
#include "couponcore/windows.hpp"

namespace couponcore::py_bindings {

namespace py = pybind11;

template <typename T, typename Get>
struct Field {
  const char* name;
  Get get;
};

// field<T>("name", &T::member) or field<T>("name", [](const T& v) { return ...; })
template <typename T, typename Get>
constexpr Field<T, Get> field(const char* name, Get get) {
  return {name, get};
}

// A getter's result as a Python object (a py::object is passed through).
template <typename V>
py::object to_py(V&& v) {
  if constexpr (std::is_base_of_v<py::handle, std::remove_cvref_t<V>>) {
    return py::reinterpret_borrow<py::object>(v);
  } else {
    return py::cast(std::forward<V>(v));
  }
}

template <typename T, typename... Gets>
class Record {
 public:
  static constexpr std::size_t kSize = sizeof...(Gets);

  constexpr Record(const char* name, Field<T, Gets>... fields) : name_(name), fields_(fields...) {}

  const char* name() const { return name_; }

  std::vector<std::string> names() const {
    return std::apply([](const auto&... f) { return std::vector<std::string>{f.name...}; }, fields_);
  }

  // The value's fields as a tuple, in the record's order.
  py::tuple tuple(const T& v) const {
    py::tuple t(kSize);
    fill(t.ptr(), v, std::index_sequence_for<Gets...>{});
    return t;
  }

  py::dict dict(const T& v) const {
    py::dict d;
    std::apply([&](const auto&... f) { ((d[f.name] = value(f, v)), ...); }, fields_);
    return d;
  }

  // Each field as a read-only property of a pybind11 class of T.
  template <typename Class>
  void def_properties(Class& cls) const {
    std::apply([&](const auto&... f) { (cls.def_property_readonly(f.name, [g = f.get](const T& v) {
                                          return to_py(std::invoke(g, v));
                                        }), ...); },
               fields_);
  }

 private:
  template <typename F>
  static py::object value(const F& f, const T& v) {
    return to_py(std::invoke(f.get, v));
  }

  template <std::size_t... I>
  void fill(PyObject* t, const T& v, std::index_sequence<I...>) const {
    (PyTuple_SET_ITEM(t, I, value(std::get<I>(fields_), v).release().ptr()), ...);
  }

  const char* name_;
  std::tuple<Field<T, Gets>...> fields_;
};

// The Python values of the core's value types (records.cpp holds their one field list each).
py::tuple to_record(const Campaign& v);
py::tuple to_record(const CampaignStats& v);
py::tuple to_record(const LogBacklog& v);
py::tuple to_record(const WriterInfo& v);
py::tuple to_record(const DeadLetter& v);
py::tuple to_record(const Coupon& v);
py::tuple to_record(const UseResult& v);
py::tuple to_record(const CouponPage& v);
py::tuple to_record(const CouponCounts& v);
py::tuple to_record(const ExpireReport& v);
py::tuple to_record(const Partner& v);
py::tuple to_record(const PartnerKey& v);
py::tuple to_record(const WalletResult& v);
py::tuple to_record(const WalletBalance& v);
py::tuple to_record(const WalletEntry& v);
py::tuple to_record(const WalletHistoryPage& v);
// Values the public API returns as dicts.
py::dict to_dict(const ReconcileReport& v);
py::dict to_dict(const AuthCounters& v);
py::dict to_dict(const AnswerRecorderCounters& v);
py::dict to_dict(const WalletExpireReport& v);
py::dict to_dict(const WalletPurgeReport& v);
py::dict to_dict(const WalletAudit& v);
py::dict to_dict(const WalletCounters& v);
py::dict to_dict(const TraceStats& v);
// The trace sink's calls shared by Engine and Worker (couponcore.tracing.SpanEmitter uses them):
// enable_tracing's capacity (a positive int), and take_trace_records: up to `max` records taken by
// `take` without the GIL, as (kind, start_us, end_us, campaign_ids, items, traced, traceparents)
// tuples, kind "gate.batch" or "writer.commit".
std::size_t trace_capacity(py::handle capacity);
py::list take_trace_records(const std::function<std::vector<TraceRecord>(std::size_t, int64_t)>& take, py::handle max,
                            py::handle timeout_ms);

// A list of records.
template <typename T>
py::list to_records(const std::vector<T>& vs) {
  py::list out(vs.size());
  for (std::size_t i = 0; i < vs.size(); ++i) {
    PyList_SET_ITEM(out.ptr(), static_cast<Py_ssize_t>(i), to_record(vs[i]).release().ptr());
  }
  return out;
}

// _core.IssueResult (its properties come from its record) and _core.fields(name).
void register_records(py::module_& m);

}  // namespace couponcore::py_bindings
