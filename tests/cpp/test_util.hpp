// Helpers shared by the C++ tests: temporary paths and the servers' URLs from the environment
// that `make test` sets (COUPONCORE_TEST_REDIS_URL, COUPONCORE_TEST_POSTGRES_URL, ...).
#pragma once

#include <unistd.h>

#include <atomic>
#include <cstdlib>
#include <filesystem>
#include <string>

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

}  // namespace testutil
