// Binds the coupon lifecycle, the campaign rules, partners and authentication as methods of
// _core.Engine (added to the class that engine.cpp registers). Conversions only: arguments are
// converted with the GIL held, the call runs with the GIL released, results become record tuples
// (records.cpp; couponcore/_types.py turns them into dataclasses).
//
// Every scoped method takes the partner id first; the Python layer (_engine.py: Scope) supplies
// it. Entry points, all on _core.Engine:
//   check_campaign, get_campaign_for, pause_campaign, resume_campaign, close_campaign,
//   set_campaign_quantity, set_campaign_rate_limits, use_coupon, cancel_coupon_use, get_coupon, list_user_coupons,
//   coupon_counts, expire_coupons, create_partner, rotate_partner_key, revoke_partner_keys,
//   get_partner, list_partners, authenticate, auth_counters
#include <pybind11/pybind11.h>

#include <string>
#include <utility>

#include "convert.hpp"
#include "records.hpp"
#include "couponcore/engine.hpp"
#include "couponcore/limits.hpp"

namespace couponcore::py_bindings {

namespace {

// Runs fn with the GIL released and returns its result.
template <typename Fn>
auto nogil(Fn&& fn) -> decltype(fn()) {
  py::gil_scoped_release release;
  return fn();
}

std::optional<CouponState> state_from(py::handle o) {
  if (o.is_none()) return std::nullopt;
  const std::string s = to_str(o, "state");
  if (s == "issued") return CouponState::kIssued;
  if (s == "used") return CouponState::kUsed;
  if (s == "expired") return CouponState::kExpired;
  raise(ErrorCode::kInvalidArgument, "state must be 'issued', 'used', 'expired' or None");
}

int32_t limit_from(py::handle o) {
  const int64_t n = to_i64(o, "limit");
  if (n < 1 || n > limits::kCouponPageMax) {
    raise(ErrorCode::kInvalidArgument, "limit must be 1.." + std::to_string(limits::kCouponPageMax));
  }
  return static_cast<int32_t>(n);
}

// Adds fn to cls as a method named `name` (self is the _core.Engine).
template <typename Fn>
void method(py::object& cls, const char* name, Fn&& fn, const char* doc) {
  cls.attr(name) = py::cpp_function(std::forward<Fn>(fn), py::name(name), py::is_method(cls),
                                    py::sibling(py::getattr(cls, name, py::none())), doc);
}

void register_campaign_rules(py::object& cls) {
  method(cls, "check_campaign", [](py::handle self, py::object pid, py::object cid) {
    Engine& e = engine_of(self);
    const int64_t p = to_i64(pid, "partner_id"), c = to_i64(cid, "campaign_id");
    nogil([&] { e.check_campaign_partner(p, c); });
  }, "Raises NotFound unless the campaign exists and belongs to the partner.");
  method(cls, "get_campaign_for", [](py::handle self, py::object pid, py::object cid) {
    Engine& e = engine_of(self);
    const int64_t p = to_i64(pid, "partner_id"), c = to_i64(cid, "campaign_id");
    return to_record(nogil([&] {
      e.check_campaign_partner(p, c);
      return e.get_campaign(c);
    }));
  }, "The partner's campaign (NotFound for another partner's).");
  using RuleFn = Campaign (Engine::*)(int64_t, int64_t);
  for (auto [name, fn] : {std::pair<const char*, RuleFn>{"pause_campaign", &Engine::pause_campaign},
                          std::pair<const char*, RuleFn>{"resume_campaign", &Engine::resume_campaign},
                          std::pair<const char*, RuleFn>{"close_campaign", &Engine::close_campaign}}) {
    method(cls, name, [fn = fn](py::handle self, py::object pid, py::object cid) {
      Engine& e = engine_of(self);
      const int64_t p = to_i64(pid, "partner_id"), c = to_i64(cid, "campaign_id");
      return to_record(nogil([&] { return (e.*fn)(p, c); }));
    }, "Changes the campaign's state in the gate and the store together.");
  }
  method(cls, "set_campaign_quantity", [](py::handle self, py::object pid, py::object cid, py::object q) {
    Engine& e = engine_of(self);
    const int64_t p = to_i64(pid, "partner_id"), c = to_i64(cid, "campaign_id"), n = to_i64(q, "quantity");
    return to_record(nogil([&] { return e.set_campaign_quantity(p, c, n); }));
  }, "Sets the quantity (never below the coupons already issued).");
  method(cls, "set_campaign_rate_limits", [](py::handle self, py::object pid, py::object cid, py::object per_user,
                                            py::object per_partner, py::object window_ms) {
    Engine& e = engine_of(self);
    const int64_t p = to_i64(pid, "partner_id"), c = to_i64(cid, "campaign_id");
    auto i32 = [](py::object o, const char* what) {
      const int64_t v = to_i64(o, what);
      if (v < INT32_MIN || v > INT32_MAX) raise(ErrorCode::kInvalidArgument, std::string(what) + " is out of range");
      return static_cast<int32_t>(v);
    };
    const int32_t u = i32(per_user, "rate_limit_per_user"), pp = i32(per_partner, "rate_limit_per_partner"),
                  w = i32(window_ms, "rate_window_ms");
    return to_record(nogil([&] { return e.set_campaign_rate_limits(p, c, u, pp, w); }));
  }, "Sets the rate limits (per user, per partner, window ms; 0 = no limit) in the store, then the gate.");
}

void register_lifecycle(py::object& cls) {
  method(cls, "use_coupon", [](py::handle self, py::object pid, py::object coupon_id, py::object user_id,
                               py::object order_id, py::object order_amount, py::object traceparent) {
    Engine& e = engine_of(self);
    const int64_t p = to_i64(pid, "partner_id");
    UseRequest r{to_i64(coupon_id, "coupon_id"), to_str(user_id, "user_id"), to_str(order_id, "order_id"),
                 to_i64(order_amount, "order_amount"), traceparent_of(traceparent)};
    return to_record(nogil([&] { return e.use_coupon(p, r); }));
  }, "Uses a coupon for an order (idempotent per order_id).");
  method(cls, "cancel_coupon_use", [](py::handle self, py::object pid, py::object coupon_id, py::object order_id,
                                      py::object traceparent) {
    Engine& e = engine_of(self);
    const int64_t p = to_i64(pid, "partner_id"), id = to_i64(coupon_id, "coupon_id");
    const std::string order = to_str(order_id, "order_id");
    const std::string tp = traceparent_of(traceparent);
    return to_record(nogil([&] { return e.cancel_coupon_use(p, id, order, tp); }));
  }, "Undoes an order's use of a coupon (idempotent per order_id).");
  method(cls, "get_coupon", [](py::handle self, py::object pid, py::object coupon_id) {
    Engine& e = engine_of(self);
    const int64_t p = to_i64(pid, "partner_id"), id = to_i64(coupon_id, "coupon_id");
    return to_record(nogil([&] { return e.get_coupon(p, id); }));
  }, "One coupon, its state as of now.");
  method(cls, "list_user_coupons", [](py::handle self, py::object pid, py::object user_id, py::object state,
                                      py::object cursor, py::object limit) {
    Engine& e = engine_of(self);
    CouponQuery q;
    const int64_t p = to_i64(pid, "partner_id");
    q.user_id = to_str(user_id, "user_id");
    q.state = state_from(state);
    if (!cursor.is_none()) q.after_coupon_id = to_i64(cursor, "cursor");
    q.limit = limit_from(limit);
    return to_record(nogil([&] { return e.list_user_coupons(p, q); }));
  }, "A page of a user's coupons (a CouponPage record).");
  method(cls, "coupon_counts", [](py::handle self, py::object pid, py::object cid) {
    Engine& e = engine_of(self);
    const int64_t p = to_i64(pid, "partner_id"), c = to_i64(cid, "campaign_id");
    return to_record(nogil([&] { return e.coupon_counts(p, c); }));
  }, "A campaign's coupons by state.");
  method(cls, "expire_coupons", [](py::handle self, py::object now, py::object chunk_rows, py::object chunks_max) {
    Engine& e = engine_of(self);
    const int64_t t = to_i64(now, "now_us"), rows = to_i64(chunk_rows, "chunk_rows"), max = to_i64(chunks_max, "chunks_max");
    return to_record(nogil([&] { return e.expire_coupons(t, rows, max); }));
  }, "The expiry job: marks lapsed coupons expired, chunk_rows per transaction.");
}

void register_partners(py::object& cls) {
  method(cls, "create_partner", [](py::handle self, py::object name) {
    Engine& e = engine_of(self);
    const std::string n = to_str(name, "name");
    return to_record(nogil([&] { return e.create_partner(n); }));
  }, "A new partner and its API key (a PartnerKey record). The key is never shown again.");
  method(cls, "rotate_partner_key", [](py::handle self, py::object pid) {
    Engine& e = engine_of(self);
    const int64_t p = to_i64(pid, "partner_id");
    return to_record(nogil([&] { return e.rotate_partner_key(p); }));
  }, "A new key for the partner; older keys stop working.");
  method(cls, "revoke_partner_keys", [](py::handle self, py::object pid) {
    Engine& e = engine_of(self);
    const int64_t p = to_i64(pid, "partner_id");
    return to_record(nogil([&] { return e.revoke_partner_keys(p); }));
  }, "Revokes every key of the partner.");
  method(cls, "get_partner", [](py::handle self, py::object pid) {
    Engine& e = engine_of(self);
    const int64_t p = to_i64(pid, "partner_id");
    return to_record(nogil([&] { return e.get_partner(p); }));
  }, "One partner.");
  method(cls, "list_partners", [](py::handle self, py::object after, py::object limit) {
    Engine& e = engine_of(self);
    const int64_t a = to_i64(after, "after");
    const int64_t l = to_i64(limit, "limit");
    if (l < 1 || l > 1000) raise(ErrorCode::kInvalidArgument, "limit must be 1..1000");
    return to_records(nogil([&] { return e.list_partners(a, static_cast<int32_t>(l)); }));
  }, "Partners ordered by id, after `after`.");
  method(cls, "authenticate", [](py::handle self, py::object key) {
    Engine& e = engine_of(self);
    if (!PyUnicode_Check(key.ptr())) raise(ErrorCode::kUnauthenticated, "invalid API key");
    Py_ssize_t n = 0;
    const char* p = PyUnicode_AsUTF8AndSize(key.ptr(), &n);
    if (!p) {  // lone surrogates and the like: malformed, like any other bad key
      PyErr_Clear();
      raise(ErrorCode::kUnauthenticated, "invalid API key");
    }
    const std::string k(p, static_cast<std::size_t>(std::min<Py_ssize_t>(n, limits::kApiKeyBytesMax + 1)));
    return to_record(nogil([&] { return e.authenticate(k); }));
  }, "The partner owning the API key; Unauthenticated otherwise.");
  method(cls, "auth_counters", [](py::handle self) {
    return to_dict(engine_of(self).auth_counters());
  }, "Authentication counters since open (db_queries: lookups that reached the database).");
}

}  // namespace

void register_coupons(py::module_& m) {
  py::object cls = m.attr("Engine");
  register_campaign_rules(cls);
  register_lifecycle(cls);
  register_partners(cls);
}

}  // namespace couponcore::py_bindings
