// _core.AnswerStreams: the production answer source of the live windows (couponcore/windows.hpp),
// for couponcore.windows. Reads release the GIL.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <memory>

#include "couponcore/windows.hpp"

namespace py = pybind11;

namespace couponcore::py_bindings {

void register_windows(py::module_& m) {
  py::class_<AnswerStreamReader>(m, "AnswerStreams", "The production answer source (Redis Streams) of the live windows.")
      .def(py::init([](const std::string& redis_url, const std::string& key_prefix) {
             py::gil_scoped_release nogil;
             return std::make_unique<AnswerStreamReader>(redis_url, key_prefix);
           }),
           py::arg("redis_url"), py::arg("key_prefix"))
      .def("campaigns", [](AnswerStreamReader& r) {
        py::gil_scoped_release nogil;
        return r.campaigns();
      })
      .def("read", [](AnswerStreamReader& r, int64_t campaign_id, const std::string& after, int64_t count) {
        std::vector<AnswerRecord> got;
        {
          py::gil_scoped_release nogil;
          got = r.read(campaign_id, after, count);
        }
        py::list out;
        for (const AnswerRecord& a : got) out.append(py::make_tuple(a.id, a.record));
        return out;
      }, py::arg("campaign_id"), py::arg("after"), py::arg("count"));
}

}  // namespace couponcore::py_bindings
