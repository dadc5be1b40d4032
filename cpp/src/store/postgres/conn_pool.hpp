// A bounded pool of pg::Conn for components whose calls come from many caller threads (the
// coupon lifecycle, partners). Not a second libpq layer: it only hands out pg::Conn objects,
// one caller at a time, and takes them back.
//
//   ConnPool pool(url, /*conns_max=*/8);
//   { ConnPool::Lease c = pool.acquire(); c->exec(...); }   // returned when the lease ends
//
// Connections open lazily (the first exec connects) and reconnect by themselves after a loss
// (pg.hpp). acquire() waits at most acquire_wait_ms for a free connection, then throws
// kUnavailable: a pool that is too small shows up as a typed, retryable error, not a hang.
#pragma once

#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "store/postgres/pg.hpp"

namespace couponcore::pg {

class ConnPool {
 public:
  static constexpr std::size_t kConnsMax = 256;

  ConnPool(std::string conninfo, std::size_t conns_max, ConnOptions options = {}, int64_t acquire_wait_ms = 5000);
  ConnPool(const ConnPool&) = delete;
  ConnPool& operator=(const ConnPool&) = delete;

  class Lease {
   public:
    Lease(ConnPool& pool, std::unique_ptr<Conn> conn) : pool_(&pool), conn_(std::move(conn)) {}
    Lease(Lease&& o) noexcept : pool_(o.pool_), conn_(std::move(o.conn_)) {}
    Lease& operator=(Lease&&) = delete;
    Lease(const Lease&) = delete;
    ~Lease() {
      if (conn_) pool_->release(std::move(conn_));
    }
    Conn& operator*() { return *conn_; }
    Conn* operator->() { return conn_.get(); }

   private:
    ConnPool* pool_;
    std::unique_ptr<Conn> conn_;
  };

  Lease acquire();
  // Closes the idle connections (they reconnect if used again): an engine's close() gives its
  // server slots back at once, not when the engine object is destroyed.
  void disconnect_idle();
  const std::string& conninfo() const { return conninfo_; }

 private:
  void release(std::unique_ptr<Conn> conn);

  const std::string conninfo_;
  const std::size_t conns_max_;
  ConnOptions options_;
  const int64_t acquire_wait_ms_;
  std::mutex mu_;
  std::condition_variable freed_;
  std::vector<std::unique_ptr<Conn>> idle_;
  std::size_t opened_ = 0;
};

}  // namespace couponcore::pg
