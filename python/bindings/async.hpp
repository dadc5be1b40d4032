// asyncio support: futures resolved from the engine's thread.
//
// An async submission records (loop, future) and queues its completion in AsyncCompletions when
// the engine's callback runs. The engine calls the batch-end hook after each batch of
// callbacks; the hook takes the GIL once, and for each event loop with completions schedules
// ONE loop.call_soon_threadsafe(couponcore._aio._resolve, [(future, value, is_error), ...]):
// the loop wakes once per batch, not once per request. A future cancelled meanwhile is skipped
// (the decision may still have happened; a retry with the same request id gets its answer).
#pragma once

#include <pybind11/pybind11.h>

#include <exception>
#include <mutex>
#include <vector>

#include "couponcore/types.hpp"

namespace couponcore::py_bindings {

class AsyncCompletions {
 public:
  struct Item {
    PyObject* loop;    // owned reference, released under the GIL
    PyObject* future;  // owned reference, released under the GIL
    bool single;       // resolve with results[0] instead of the list
    std::vector<IssueResult> results;
    std::exception_ptr error;
  };

  void push(Item item) {
    std::lock_guard lock(mu_);
    items_.push_back(std::move(item));
  }
  // The batch-end hook: resolves everything queued so far. Called without the GIL.
  void flush();

 private:
  std::mutex mu_;
  std::vector<Item> items_;
};

}  // namespace couponcore::py_bindings
