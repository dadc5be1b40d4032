// See assert.hpp.
#include "util/assert.hpp"

#include <cstdio>
#include <cstdlib>

#include "couponcore/error.hpp"

namespace couponcore {

void assertion_failed(const char* expr, const std::string& what, const char* file, int line) noexcept {
  std::fprintf(stderr, "couponcore bug: assertion failed: %s (%s) at %s:%d\n", expr, what.c_str(), file, line);
  std::fflush(stderr);
  std::abort();
}

void bug_at(const std::string& what, const char* file, int line) {
  if (kAssertions) assertion_failed("bug", what, file, line);
  throw Error(ErrorCode::kInternal, "couponcore bug: " + what + " (please report)");
}

}  // namespace couponcore
