// W3C Trace Context: the traceparent value carried by issue / use / points calls, the grant
// entry and the writer (docs/tracing.md). https://www.w3.org/TR/trace-context/#traceparent-header
//
//   version "-" trace-id "-" parent-id "-" trace-flags     e.g.
//   00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01          (55 characters)
//
// normalize_traceparent() returns the value in its version-00 form, or "" when it is not a valid
// traceparent: never an error (the spec: a malformed header is ignored). Lowercase hex only; an
// all-zero trace-id or parent-id, version ff, or a version-00 value of another length is
// invalid; a higher version is parsed leniently (its first 55 characters, if the 56th is absent
// or a '-'). Surrounding spaces and tabs (HTTP's optional whitespace) are dropped.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

namespace couponcore::trace {

inline constexpr std::size_t kTraceparentBytes = 55;

// "" for an empty or malformed value (counted in malformed_traceparents()), else the 00 form.
std::string normalize_traceparent(std::string_view value);

// The same, in place: a value already in its version-00 form is left as it is (no copy).
void normalize_traceparent_in_place(std::string& value);

// Malformed (non-empty, invalid) traceparents seen by this process.
uint64_t malformed_traceparents() noexcept;

}  // namespace couponcore::trace
