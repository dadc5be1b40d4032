// W3C traceparent parsing: see traceparent.hpp.
#include "util/traceparent.hpp"

#include <atomic>

namespace couponcore::trace {

namespace {

std::atomic<uint64_t> g_malformed{0};

bool lower_hex(std::string_view s) {
  for (char c : s) {
    if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) return false;
  }
  return true;
}

bool all_zero(std::string_view s) { return s.find_first_not_of('0') == std::string_view::npos; }

std::string parse(std::string_view v) {
  while (!v.empty() && (v.front() == ' ' || v.front() == '\t')) v.remove_prefix(1);
  while (!v.empty() && (v.back() == ' ' || v.back() == '\t')) v.remove_suffix(1);
  if (v.size() < kTraceparentBytes) return {};
  const std::string_view version = v.substr(0, 2);
  if (!lower_hex(version) || version == "ff") return {};
  if (version == "00" ? v.size() != kTraceparentBytes : (v.size() > kTraceparentBytes && v[kTraceparentBytes] != '-')) {
    return {};
  }
  if (v[2] != '-' || v[35] != '-' || v[52] != '-') return {};
  const std::string_view trace_id = v.substr(3, 32), parent_id = v.substr(36, 16), flags = v.substr(53, 2);
  if (!lower_hex(trace_id) || !lower_hex(parent_id) || !lower_hex(flags)) return {};
  if (all_zero(trace_id) || all_zero(parent_id)) return {};
  std::string out;
  out.reserve(kTraceparentBytes);
  out.append("00-").append(trace_id).append("-").append(parent_id).append("-").append(flags);
  return out;
}

}  // namespace

std::string normalize_traceparent(std::string_view value) {
  if (value.empty()) return {};
  std::string out = parse(value);
  if (out.empty()) g_malformed.fetch_add(1, std::memory_order_relaxed);
  return out;
}

uint64_t malformed_traceparents() noexcept { return g_malformed.load(std::memory_order_relaxed); }

}  // namespace couponcore::trace
