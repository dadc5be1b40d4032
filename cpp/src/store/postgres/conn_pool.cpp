// A bounded pool of pg::Conn; see conn_pool.hpp.
#include "store/postgres/conn_pool.hpp"

#include <chrono>

#include "couponcore/error.hpp"

namespace couponcore::pg {

ConnPool::ConnPool(std::string conninfo, std::size_t conns_max, ConnOptions options, int64_t acquire_wait_ms)
    : conninfo_(std::move(conninfo)), conns_max_(conns_max), options_(std::move(options)), acquire_wait_ms_(acquire_wait_ms) {
  if (conns_max_ < 1 || conns_max_ > kConnsMax) throw_invalid("a pool holds 1.." + std::to_string(kConnsMax) + " connections");
  options_.connect_now = false;
}

ConnPool::Lease ConnPool::acquire() {
  std::unique_lock lock(mu_);
  const bool got = freed_.wait_for(lock, std::chrono::milliseconds(acquire_wait_ms_),
                                   [&] { return !idle_.empty() || opened_ < conns_max_; });
  if (!got) {
    throw_unavailable("postgres: all " + std::to_string(conns_max_) + " pooled connections busy for " +
                      std::to_string(acquire_wait_ms_) + " ms");
  }
  if (!idle_.empty()) {
    std::unique_ptr<Conn> c = std::move(idle_.back());
    idle_.pop_back();
    return Lease(*this, std::move(c));
  }
  ++opened_;
  lock.unlock();
  try {
    return Lease(*this, std::make_unique<Conn>(conninfo_, options_));
  } catch (...) {
    std::lock_guard again(mu_);
    --opened_;
    freed_.notify_one();
    throw;
  }
}

void ConnPool::disconnect_idle() {
  std::lock_guard lock(mu_);
  for (auto& c : idle_) c->disconnect();
}

void ConnPool::release(std::unique_ptr<Conn> conn) {
  std::lock_guard lock(mu_);
  idle_.push_back(std::move(conn));
  freed_.notify_one();
}

}  // namespace couponcore::pg
