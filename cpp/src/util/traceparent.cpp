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

// The value's version-00 fields (after dropping surrounding spaces and tabs), or false.
bool fields_of(std::string_view v, std::string_view* trace_id, std::string_view* parent_id, std::string_view* flags) {
  while (!v.empty() && (v.front() == ' ' || v.front() == '\t')) v.remove_prefix(1);
  while (!v.empty() && (v.back() == ' ' || v.back() == '\t')) v.remove_suffix(1);
  if (v.size() < kTraceparentBytes) return false;
  const std::string_view version = v.substr(0, 2);
  if (!lower_hex(version) || version == "ff") return false;
  if (version == "00" ? v.size() != kTraceparentBytes : (v.size() > kTraceparentBytes && v[kTraceparentBytes] != '-')) {
    return false;
  }
  if (v[2] != '-' || v[35] != '-' || v[52] != '-') return false;
  *trace_id = v.substr(3, 32), *parent_id = v.substr(36, 16), *flags = v.substr(53, 2);
  return lower_hex(*trace_id) && lower_hex(*parent_id) && lower_hex(*flags) && !all_zero(*trace_id) &&
         !all_zero(*parent_id);
}

}  // namespace

std::string normalize_traceparent(std::string_view value) {
  if (value.empty()) return {};
  std::string_view trace_id, parent_id, flags;
  if (!fields_of(value, &trace_id, &parent_id, &flags)) {
    g_malformed.fetch_add(1, std::memory_order_relaxed);
    return {};
  }
  std::string out;
  out.reserve(kTraceparentBytes);
  out.append("00-").append(trace_id).append("-").append(parent_id).append("-").append(flags);
  return out;
}

void normalize_traceparent_in_place(std::string& value) {
  if (value.empty()) return;
  if (value.size() == kTraceparentBytes && value[0] == '0' && value[1] == '0') {
    std::string_view trace_id, parent_id, flags;
    if (!fields_of(value, &trace_id, &parent_id, &flags)) {  // the common, valid case: checked, not copied
      g_malformed.fetch_add(1, std::memory_order_relaxed);
      value.clear();
    }
    return;
  }
  value = normalize_traceparent(value);
}

uint64_t malformed_traceparents() noexcept { return g_malformed.load(std::memory_order_relaxed); }

}  // namespace couponcore::trace
