// Assertions: our own mistakes, never the outside world's.
//
//   CC_ASSERT(cond, what)   checked in debug and sanitizer builds (COUPONCORE_ASSERTIONS, set by
//                           CMake for Debug builds, any COUPONCORE_SANITIZE build, or
//                           -DCOUPONCORE_ASSERTIONS=ON); compiled out otherwise, so a hot path
//                           may assert freely. A failure prints "couponcore bug: ..." with the
//                           place and aborts: a test run stops at the first broken invariant.
//   bug(what)               an invariant that a release build must not continue past either:
//                           aborts where assertions are on; elsewhere throws
//                           Error(kInternal, "couponcore bug: ... (please report)").
//
// Errors of the outside world (bad input, a server down, a conflict) are couponcore::Error with
// their own codes (couponcore/error.hpp); kInternal is only ever a bug() of ours.
#pragma once

#include <string>

namespace couponcore {

[[noreturn]] void assertion_failed(const char* expr, const std::string& what, const char* file, int line) noexcept;
[[noreturn]] void bug_at(const std::string& what, const char* file, int line);

inline constexpr bool kAssertions =
#ifdef COUPONCORE_ASSERTIONS
    true;
#else
    false;
#endif

}  // namespace couponcore

#ifdef COUPONCORE_ASSERTIONS
#define CC_ASSERT(cond, what)                                                    \
  do {                                                                           \
    if (!(cond)) ::couponcore::assertion_failed(#cond, (what), __FILE__, __LINE__); \
  } while (0)
#else
// Not evaluated (sizeof), only named: no cost, no unused-variable warnings.
#define CC_ASSERT(cond, what)          \
  do {                                 \
    (void)sizeof(!(cond));             \
    (void)sizeof(what);                \
  } while (0)
#endif

#define CC_BUG(what) ::couponcore::bug_at((what), __FILE__, __LINE__)
