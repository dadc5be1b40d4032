// Typed errors of the core. Every failure that reaches a caller is a couponcore::Error with a
// code; the Python binding maps each code onto one exception class in one place
// (python/bindings/errors.cpp). Assertions (assert) are for our own mistakes; Error is for the
// outside world: bad input, missing objects, conflicts, servers that are down.
#pragma once

#include <exception>
#include <optional>
#include <stdexcept>
#include <string>

namespace couponcore {

enum class ErrorCode {
  kInvalidArgument,  // bad input; nothing was changed
  kNotFound,         // unknown id, or an object of another partner (existence is not leaked)
  kConflict,         // the state forbids it (used twice, same idempotency key, other content)
  kUnavailable,      // a server is down or a connection dropped; safe to retry
  kClosed,           // the engine was closed
  kInsufficientFunds,  // a wallet's balance is too low; nothing was changed
  kUnauthenticated,  // unknown, revoked or malformed API key
  kInternal,         // a broken invariant: a bug, please report
};

const char* error_code_name(ErrorCode code) noexcept;

class Error : public std::runtime_error {
 public:
  Error(ErrorCode code, const std::string& message) : std::runtime_error(message), code_(code) {}
  ErrorCode code() const noexcept { return code_; }

 private:
  ErrorCode code_;
};

// A copy of the error an exception_ptr holds (kInternal for anything that is not an Error).
// Blocking faces copy the error on the engine's thread and throw a new exception in the
// caller's thread: no exception object is shared between threads (the engine may release its
// exception_ptr after the caller is done, and that hand-off is invisible to ThreadSanitizer
// because libstdc++'s reference count is not instrumented).
Error error_from(std::exception_ptr error) noexcept;

// What a blocking face waits for: a value, or the copy of an error.
template <typename T>
struct Answer {
  T value{};
  std::optional<Error> error;
  T take() {
    if (error) throw *error;
    return std::move(value);
  }
};

[[noreturn]] inline void throw_invalid(const std::string& m) { throw Error(ErrorCode::kInvalidArgument, m); }
[[noreturn]] inline void throw_not_found(const std::string& m) { throw Error(ErrorCode::kNotFound, m); }
[[noreturn]] inline void throw_conflict(const std::string& m) { throw Error(ErrorCode::kConflict, m); }
[[noreturn]] inline void throw_unavailable(const std::string& m) { throw Error(ErrorCode::kUnavailable, m); }

}  // namespace couponcore
