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
//
// The binary form (the gate call's argument and the grant entry's field b, docs/tracing.md): the
// version-00 value's trace-id (16 bytes), parent-id (8) and trace-flags (1), 25 bytes; 25 zero
// bytes stand for "no trace context" (an all-zero trace-id is invalid, so no value has that form).
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

namespace couponcore::trace {

inline constexpr std::size_t kTraceparentBytes = 55;
inline constexpr std::size_t kTraceparentBinaryBytes = 25;

// "" for an empty or malformed value (counted in malformed_traceparents()), else the 00 form.
std::string normalize_traceparent(std::string_view value);

// The same, in place: a value already in its version-00 form is left as it is (no copy).
void normalize_traceparent_in_place(std::string& value);

// Appends the binary form of `value` to *out: of a version-00 value as normalize_traceparent()
// returns it (checked by the caller), or 25 zero bytes for "" (no trace context).
void append_binary(std::string_view value, std::string* out);

// The version-00 value of a binary form: "" for 25 zero bytes, for a size other than 25 or for an
// all-zero trace-id or parent-id (counted in malformed_traceparents() then, like any invalid value).
std::string from_binary(std::string_view binary);

// Malformed (non-empty, invalid) traceparents seen by this process.
uint64_t malformed_traceparents() noexcept;

}  // namespace couponcore::trace
