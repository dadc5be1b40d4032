#include "async.hpp"

#include <unordered_map>

#include "convert.hpp"
#include "errors.hpp"

namespace py = pybind11;

namespace couponcore::py_bindings {

void AsyncCompletions::flush() {
  std::vector<Item> items;
  {
    std::lock_guard lock(mu_);
    if (items_.empty()) return;
    items.swap(items_);
  }
  if (!interpreter_alive()) return;  // leak the references: the interpreter is going away
  py::gil_scoped_acquire gil;
  // Group by loop, keeping arrival order within each loop.
  std::vector<std::pair<PyObject*, py::list>> per_loop;
  std::unordered_map<PyObject*, std::size_t> index;
  for (Item& it : items) {
    auto [pos, inserted] = index.emplace(it.loop, per_loop.size());
    if (inserted) per_loop.emplace_back(it.loop, py::list());
    py::object value;
    bool is_error = static_cast<bool>(it.error);
    if (is_error) {
      value = exception_object(it.error);
    } else if (it.single) {
      value = result_object(it.results.at(0));
    } else {
      value = result_list(it.results);
    }
    per_loop[pos->second].second.append(
        py::make_tuple(py::reinterpret_steal<py::object>(it.future), value, is_error));
    it.future = nullptr;
  }
  py::object resolve = py::module_::import("couponcore._aio").attr("_resolve");
  for (auto& [loop, batch] : per_loop) {
    try {
      py::reinterpret_borrow<py::object>(loop).attr("call_soon_threadsafe")(resolve, batch);
    } catch (py::error_already_set&) {
      // The loop is closed: nobody is waiting any more.
    }
  }
  for (Item& it : items) Py_DECREF(it.loop);
}

}  // namespace couponcore::py_bindings
