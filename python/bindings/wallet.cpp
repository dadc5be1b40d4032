// Binds couponcore::WalletEngine as _core.Wallets: operations as dicts in, records out (records.cpp),
// the GIL released around every blocking call. Like _core.Engine, a Wallets object belongs to
// the process that opened it (refused after fork, never destroyed in a child).
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>
#include <unistd.h>

#include <future>
#include <memory>

#include "convert.hpp"
#include "records.hpp"
#include "couponcore/coupons.hpp"
#include "couponcore/error.hpp"
#include "couponcore/wallet.hpp"

namespace couponcore::py_bindings {

namespace {

class PyWallets {
 public:
  explicit PyWallets(std::unique_ptr<WalletEngine> e) : engine_(std::move(e)), pid_(::getpid()) {}
  ~PyWallets() {
    if (::getpid() != pid_) {
      (void)engine_.release();
      return;
    }
    py::gil_scoped_release nogil;
    engine_.reset();
  }
  WalletEngine& get() {
    if (::getpid() != pid_) {
      raise(ErrorCode::kClosed, "these wallets were opened in process " + std::to_string(pid_) + " before a fork");
    }
    if (engine_->closed()) raise(ErrorCode::kClosed, "the wallets are closed");
    return *engine_;
  }
  void close() {
    if (::getpid() != pid_) return;
    py::gil_scoped_release nogil;
    engine_->close();
  }
  bool closed() const { return ::getpid() != pid_ || engine_->closed(); }

 private:
  std::unique_ptr<WalletEngine> engine_;
  pid_t pid_;
};

// The wallet engine's tuning options, as couponcore.open() takes them (wallet_batch_ops_max,
// ...), checked as the engine would check them.
WalletOptions wallet_options(py::dict d) {
  WalletOptions o;
  OptionReader r(d);
  r.get("wallet_batch_ops_max", o.batch_ops_max);
  r.get("wallet_queue_ops_max", o.queue_ops_max);
  r.get("wallet_queue_full_wait_ms", o.queue_full_wait_ms);
  r.get("wallet_retry_budget_ms", o.retry_budget_ms);
  r.get("wallet_committers", o.committers);
  r.get("wallet_events", o.events);
  r.finish("the wallet engine");
  check_wallet_options(o);
  return o;
}

std::string str_or_empty(py::dict d, const char* key) {
  if (!d.contains(key) || py::object(d[key]).is_none()) return {};
  return to_str(d[key], key);
}

int64_t i64_or(py::dict d, const char* key, int64_t fallback) {
  if (!d.contains(key) || py::object(d[key]).is_none()) return fallback;
  return to_i64(d[key], key);
}

WalletOp op_of(py::dict d);

// The op of a dict; its "traceparent" item (any kind of op) is carried, never checked here.
WalletOp op_from(py::dict d) {
  WalletOp op = op_of(d);
  if (d.contains("traceparent")) op.traceparent = traceparent_of(d["traceparent"]);
  return op;
}

WalletOp op_of(py::dict d) {
  const std::string kind = to_str(d["kind"], "kind");
  const int64_t partner = to_i64(d["partner_id"], "partner_id");
  const std::string user = to_str(d["user_id"], "user_id");
  const std::string key = str_or_empty(d, "idempotency_key");
  if (key.empty()) raise(ErrorCode::kInvalidArgument, "idempotency_key is required");
  if (kind == "earn") {
    std::optional<int64_t> expires;
    if (d.contains("expires_at_us") && !py::object(d["expires_at_us"]).is_none()) expires = to_i64(d["expires_at_us"], "expires_at");
    return WalletOp::earn(partner, user, to_i64(d["amount"], "amount"), expires, str_or_empty(d, "reason"), key);
  }
  if (kind == "use") return WalletOp::use(partner, user, to_i64(d["amount"], "amount"), str_or_empty(d, "order_id"), key);
  if (kind == "cancel") {
    const int64_t entry = i64_or(d, "entry_id", 0);
    const std::string use_key = str_or_empty(d, "use_key");
    if ((entry != 0) == !use_key.empty()) raise(ErrorCode::kInvalidArgument, "give entry_id or use_key (exactly one)");
    return entry != 0 ? WalletOp::cancel_entry(partner, user, entry, key) : WalletOp::cancel_by_key(partner, user, use_key, key);
  }
  if (kind == "transfer") {
    return WalletOp::transfer(partner, user, to_str(d["to_user_id"], "to_user_id"), to_i64(d["amount"], "amount"), key);
  }
  if (kind == "checkout") {
    return WalletOp::checkout(partner, user, to_str(d["order_id"], "order_id"), to_i64(d["order_amount"], "order_amount"),
                              i64_or(d, "coupon_id", 0), i64_or(d, "points", 0), key);
  }
  if (kind == "cancel_checkout") {
    const std::string checkout_key = str_or_empty(d, "checkout_key");
    const std::string order_id = str_or_empty(d, "order_id");
    if (checkout_key.empty() == order_id.empty()) {
      raise(ErrorCode::kInvalidArgument, "give checkout_key or order_id (exactly one)");
    }
    return order_id.empty() ? WalletOp::cancel_checkout(partner, user, checkout_key, key)
                            : WalletOp::cancel_checkout_of_order(partner, user, order_id, key);
  }
  raise(ErrorCode::kInvalidArgument, "unknown wallet operation " + kind);
}

}  // namespace

void register_wallet(py::module_& m) {
  py::class_<PyWallets>(m, "Wallets", "The native batched wallet engine; use engine.points.")
      .def_property_readonly("kind", [](PyWallets& self) { return std::string(self.get().kind()); })
      .def_property_readonly("closed", &PyWallets::closed)
      .def("close", &PyWallets::close)
      .def("apply", [](PyWallets& self, py::dict op) {
        WalletEngine& w = self.get();
        WalletOp o = op_from(op);
        WalletResult r =
            submit_and_wait<WalletResult>([&](auto callback) { w.submit(std::move(o), std::move(callback)); });
        return to_record(r);
      })
      .def("balance", [](PyWallets& self, py::object partner_id, py::object user_id) {
        WalletEngine& w = self.get();
        int64_t p = to_i64(partner_id, "partner_id");
        std::string u = to_str(user_id, "user_id");
        WalletBalance b;
        {
          py::gil_scoped_release nogil;
          b = w.balance(p, u);
        }
        return to_record(b);
      })
      .def("history", [](PyWallets& self, py::object partner_id, py::object user_id, py::object cursor, py::object limit) {
        WalletEngine& w = self.get();
        int64_t p = to_i64(partner_id, "partner_id");
        std::string u = to_str(user_id, "user_id");
        int64_t c = cursor.is_none() ? 0 : to_i64(cursor, "cursor");
        int64_t l = to_i64(limit, "limit");
        if (l < 1 || l > INT32_MAX) raise(ErrorCode::kInvalidArgument, "limit is out of range");
        WalletHistoryPage page;
        {
          py::gil_scoped_release nogil;
          page = w.history(p, u, c, static_cast<int>(l));
        }
        return to_record(page);
      })
      .def("expire", [](PyWallets& self, py::object now_us, py::object chunk) {
        WalletEngine& w = self.get();
        int64_t n = to_i64(now_us, "now");
        int64_t c = to_i64(chunk, "chunk_wallets");
        if (c < 1 || c > INT32_MAX) raise(ErrorCode::kInvalidArgument, "chunk_wallets is out of range");
        WalletExpireReport r;
        {
          py::gil_scoped_release nogil;
          r = w.expire(n, static_cast<int>(c));
        }
        return to_dict(r);
      })
      .def("purge_idempotency", [](PyWallets& self, py::object before_us, py::object include_checkouts,
                                    py::object chunk_rows, py::object chunks_max) {
        WalletEngine& w = self.get();
        int64_t before = to_i64(before_us, "before");
        if (!PyBool_Check(include_checkouts.ptr())) raise_invalid_type("include_checkouts must be a bool");
        const bool checkouts = include_checkouts.ptr() == Py_True;
        int64_t rows = to_i64(chunk_rows, "chunk_rows");
        int64_t chunks = to_i64(chunks_max, "chunks_max");
        if (rows < 1 || rows > INT32_MAX) raise(ErrorCode::kInvalidArgument, "chunk_rows is out of range");
        if (chunks < 1 || chunks > INT32_MAX) raise(ErrorCode::kInvalidArgument, "chunks_max is out of range");
        WalletPurgeReport r;
        {
          py::gil_scoped_release nogil;
          r = w.purge_idempotency(before, checkouts, static_cast<int>(rows), static_cast<int>(chunks));
        }
        return to_dict(r);
      })
      .def("audit", [](PyWallets& self, py::object partner_id) {
        WalletEngine& w = self.get();
        int64_t p = partner_id.is_none() ? -1 : to_i64(partner_id, "partner_id");
        WalletAudit a;
        {
          py::gil_scoped_release nogil;
          a = w.audit(p);
        }
        return to_dict(a);
      })
      .def("counters", [](PyWallets& self) {
        return to_dict(self.get().counters());
      });

  m.def("check_wallet_options", [](py::dict options) { (void)wallet_options(options); }, py::arg("options"),
        "InvalidArgument / InvalidType for wallet options the engine would refuse.");

  m.def("open_wallets_embedded", [](const std::string& path, bool synchronous_full, py::dict options) {
    EmbeddedWalletOptions o;
    o.path = path;
    o.synchronous_full = synchronous_full;
    o.wallet = wallet_options(options);
    std::unique_ptr<WalletEngine> e;
    {
      py::gil_scoped_release nogil;
      e = open_wallets_embedded(o);
    }
    return std::make_unique<PyWallets>(std::move(e));
  }, py::arg("path"), py::arg("synchronous_full") = true, py::arg("options") = py::dict());

  m.def("open_wallets_postgres", [](const std::string& url, py::dict options, const std::string& key_prefix) {
    PostgresWalletOptions o;
    o.url = url;
    o.key_prefix = key_prefix;
    o.wallet = wallet_options(options);
    std::unique_ptr<WalletEngine> e;
    {
      py::gil_scoped_release nogil;
      e = open_wallets_postgres(o);
    }
    return std::make_unique<PyWallets>(std::move(e));
  }, py::arg("url"), py::arg("options") = py::dict(), py::arg("key_prefix") = "");
}

}  // namespace couponcore::py_bindings
