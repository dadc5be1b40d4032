// W3C traceparent parsing: see traceparent.hpp.
#include "util/traceparent.hpp"

#include <atomic>

#include "util/assert.hpp"

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

namespace {

int hex_value(char c) { return c <= '9' ? c - '0' : c - 'a' + 10; }

constexpr char kHex[] = "0123456789abcdef";

// The hex digits of `hex` (lowercase, an even count) as bytes, appended to *out.
void append_bytes(std::string_view hex, std::string* out) {
  for (std::size_t i = 0; i + 1 < hex.size(); i += 2) {
    out->push_back(static_cast<char>(hex_value(hex[i]) << 4 | hex_value(hex[i + 1])));
  }
}

void append_hex(std::string_view bytes, std::string* out) {
  for (char c : bytes) {
    const auto b = static_cast<unsigned char>(c);
    out->push_back(kHex[b >> 4]);
    out->push_back(kHex[b & 15]);
  }
}

}  // namespace

void append_binary(std::string_view value, std::string* out) {
  if (value.empty()) {
    out->append(kTraceparentBinaryBytes, '\0');
    return;
  }
  CC_ASSERT(value.size() == kTraceparentBytes && value[0] == '0' && value[1] == '0',
            "a traceparent reached its binary form unchecked");
  append_bytes(value.substr(3, 32), out);
  append_bytes(value.substr(36, 16), out);
  append_bytes(value.substr(53, 2), out);
}

std::string from_binary(std::string_view b) {
  if (b.size() != kTraceparentBinaryBytes) {
    g_malformed.fetch_add(1, std::memory_order_relaxed);
    return {};
  }
  const std::string_view trace_id = b.substr(0, 16), parent_id = b.substr(16, 8);
  const auto zero = [](std::string_view s) { return s.find_first_not_of('\0') == std::string_view::npos; };
  if (zero(b)) return {};  // none
  if (zero(trace_id) || zero(parent_id)) {
    g_malformed.fetch_add(1, std::memory_order_relaxed);
    return {};
  }
  std::string out;
  out.reserve(kTraceparentBytes);
  out.append("00-");
  append_hex(trace_id, &out);
  out.push_back('-');
  append_hex(parent_id, &out);
  out.push_back('-');
  append_hex(b.substr(24, 1), &out);
  return out;
}

uint64_t malformed_traceparents() noexcept { return g_malformed.load(std::memory_order_relaxed); }

}  // namespace couponcore::trace
