// Binds the domain events' consumer API (couponcore/events.hpp) for couponcore.events:
// _core.EventReader (read / ack, the GIL released while waiting) and, on _core.Engine,
// open_event_reader, events_ack, events_dead_letter, events_list_dead_letters, events_stats,
// events_prune.
// A message crosses as a tuple (type, id, entry_id, json, sequence, redelivered); the Python
// layer parses the CloudEvent JSON.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <memory>
#include <string>
#include <vector>

#include "convert.hpp"
#include "couponcore/engine.hpp"
#include "couponcore/events.hpp"

namespace couponcore::py_bindings {

namespace {

py::tuple message_tuple(const EventMessage& m) {
  return py::make_tuple(m.type, m.id, m.entry_id, py::bytes(m.json), m.sequence, m.redelivered);
}

EventMessage message_from(py::handle o) {
  py::tuple t = py::reinterpret_borrow<py::tuple>(o);
  if (t.size() < 5) raise(ErrorCode::kInvalidArgument, "an event is (type, id, entry_id, json, sequence)");
  EventMessage m;
  m.type = to_str(t[0], "type");
  m.id = to_str(t[1], "id");
  m.entry_id = to_str(t[2], "entry_id");
  m.json = py::isinstance<py::bytes>(t[3]) ? std::string(py::reinterpret_borrow<py::bytes>(t[3]))
                                            : to_str(t[3], "json");
  m.sequence = to_i64(t[4], "sequence");
  return m;
}

std::vector<EventMessage> messages_from(py::handle events) {
  std::vector<EventMessage> out;
  for (py::handle o : events) out.push_back(message_from(o));
  return out;
}

py::list message_list(const std::vector<EventMessage>& v) {
  py::list out;
  for (const EventMessage& m : v) out.append(message_tuple(m));
  return out;
}

class PyEventReader {
 public:
  explicit PyEventReader(std::unique_ptr<EventReader> r) : r_(std::move(r)) {}
  py::list read(int64_t batch, int64_t block_ms) {
    if (batch < 1 || batch > 10'000) raise(ErrorCode::kInvalidArgument, "batch must be 1..10000");
    if (block_ms < 0 || block_ms > 60'000) raise(ErrorCode::kInvalidArgument, "block_ms must be 0..60000");
    std::vector<EventMessage> v;
    {
      py::gil_scoped_release nogil;
      v = r_->read(batch, block_ms);
    }
    return message_list(v);
  }
  int64_t ack(py::handle events) {
    std::vector<EventMessage> v = messages_from(events);
    py::gil_scoped_release nogil;
    return r_->ack(v);
  }

 private:
  std::unique_ptr<EventReader> r_;
};

template <typename Fn>
void method(py::object& cls, const char* name, Fn&& fn, const char* doc) {
  cls.attr(name) = py::cpp_function(std::forward<Fn>(fn), py::name(name), py::is_method(cls),
                                    py::sibling(py::getattr(cls, name, py::none())), doc);
}

}  // namespace

void register_events(py::module_& m) {
  py::class_<PyEventReader>(m, "EventReader", "One consumer of a group (couponcore.events).")
      .def("read", &PyEventReader::read, py::arg("batch"), py::arg("block_ms"))
      .def("ack", &PyEventReader::ack, py::arg("events"));

  py::object cls = m.attr("Engine");
  method(cls, "open_event_reader", [](py::handle self, const std::string& group, const std::string& consumer,
                                      py::object types, int64_t claim_idle_ms) {
    Engine& e = engine_of(self);
    std::vector<std::string> t;
    if (!types.is_none()) {
      if (py::isinstance<py::str>(types)) raise(ErrorCode::kInvalidArgument, "types must be a list of type names");
      for (py::handle o : types) t.push_back(to_str(o, "type"));
    }
    if (claim_idle_ms < 1 || claim_idle_ms > 86'400'000) raise(ErrorCode::kInvalidArgument, "claim_idle_ms must be 1..86400000");
    std::unique_ptr<EventReader> r;
    {
      py::gil_scoped_release nogil;
      r = e.events().open_reader(group, consumer, t, claim_idle_ms);
    }
    py::object reader = py::cast(std::make_unique<PyEventReader>(std::move(r)));
    // The reader uses the engine's store (embedded): the engine lives as long as its readers.
    py::detail::keep_alive_impl(reader, self);
    return reader;
  }, "A reader of `group` as `consumer` over `types` (None: all).");
  method(cls, "events_ack", [](py::handle self, const std::string& group, py::handle events) {
    Engine& e = engine_of(self);
    std::vector<EventMessage> v = messages_from(events);
    py::gil_scoped_release nogil;
    return e.events().ack(group, v);
  }, "Acknowledges events of `group`; returns how many were pending.");
  method(cls, "events_dead_letter", [](py::handle self, const std::string& group, py::handle event,
                                       const std::string& reason) {
    Engine& e = engine_of(self);
    EventMessage m = message_from(event);
    py::gil_scoped_release nogil;
    e.events().dead_letter(group, m, reason);
  }, "Moves an event of `group` to the group's dead letters (and acknowledges it).");
  method(cls, "events_list_dead_letters", [](py::handle self, const std::string& group, int64_t limit) {
    Engine& e = engine_of(self);
    if (limit < 1 || limit > 10'000) raise(ErrorCode::kInvalidArgument, "limit must be 1..10000");
    std::vector<EventDeadLetter> v;
    {
      py::gil_scoped_release nogil;
      v = e.events().list_dead_letters(group, limit);
    }
    py::list out;
    for (const EventDeadLetter& d : v) {
      out.append(py::make_tuple(d.id, d.group, d.event_id, d.type, d.reason, py::bytes(d.json), d.dead_lettered_at_us));
    }
    return out;
  }, "The group's dead letters, oldest first.");
  method(cls, "events_stats", [](py::handle self) {
    Engine& e = engine_of(self);
    EventStats s;
    {
      py::gil_scoped_release nogil;
      s = e.events().stats();
    }
    py::dict d;
    d["written"] = s.written;
    d["relayed"] = s.relayed;
    d["outbox_rows"] = s.outbox_rows;
    d["outbox_oldest_age_ms"] = s.outbox_oldest_age_ms;
    d["relay_active"] = s.relay_active;
    return d;
  }, "Event counters: relayed, the outbox backlog (production), the log's last seq (embedded).");
  method(cls, "events_prune", [](py::handle self, int64_t retention_ms, int64_t hard_cap_ms, int64_t chunk_rows,
                                 int64_t chunks_max) {
    Engine& e = engine_of(self);
    EventPruneResult r;
    {
      py::gil_scoped_release nogil;
      r = e.events().prune(retention_ms, hard_cap_ms, chunk_rows, chunks_max);
    }
    py::dict d;
    d["deleted"] = r.deleted;
    d["deleted_unacknowledged"] = r.deleted_unacknowledged;
    d["chunks"] = r.chunks;
    d["more"] = r.more;
    d["supported"] = r.supported;
    return d;
  }, "Retention of the embedded event log: deletes old events every group acknowledged (docs/events.md).");
}

}  // namespace couponcore::py_bindings
