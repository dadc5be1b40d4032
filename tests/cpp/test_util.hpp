// Helpers shared by the C++ tests: temporary paths and the servers' URLs from the environment
// that `make test` sets (COUPONCORE_TEST_REDIS_URL, COUPONCORE_TEST_POSTGRES_URL, ...).
#pragma once

#include <gtest/gtest.h>
#include <unistd.h>

#include <atomic>
#include <cstdlib>
#include <filesystem>
#include <functional>
#include <string>

#include "couponcore/error.hpp"

namespace testutil {

inline std::string temp_path(const std::string& stem) {
  static std::atomic<int> counter{0};
  auto dir = std::filesystem::temp_directory_path();
  return (dir / ("couponcore-" + stem + "-" + std::to_string(::getpid()) + "-" + std::to_string(counter++))).string();
}

inline void remove_db(const std::string& path) {
  for (const char* suffix : {"", "-wal", "-shm"}) std::filesystem::remove(path + suffix);
}

inline std::string env_or(const char* name, const std::string& fallback) {
  const char* v = std::getenv(name);
  return v && *v ? std::string(v) : fallback;
}

// The code of the Error fn throws; a test failure (and kInternal) if it throws none.
inline couponcore::ErrorCode code_of(const std::function<void()>& fn) {
  try {
    fn();
  } catch (const couponcore::Error& e) {
    return e.code();
  }
  ADD_FAILURE() << "no error";
  return couponcore::ErrorCode::kInternal;
}

// What fn threw, if it threw an Error: its code and message.
struct Caught {
  couponcore::ErrorCode code = couponcore::ErrorCode::kInternal;
  std::string message;
  bool thrown = false;
};

inline Caught catch_error(const std::function<void()>& fn) {
  Caught c;
  try {
    fn();
  } catch (const couponcore::Error& e) {
    c = {e.code(), e.what(), true};
  }
  return c;
}

}  // namespace testutil
