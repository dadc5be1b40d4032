// Small shared pieces: error and status names, id validation, the clock, and the blocking
// faces of Engine::submit_issue.
#include <chrono>
#include <future>

#include "couponcore/engine.hpp"
#include "couponcore/error.hpp"
#include "couponcore/limits.hpp"
#include "couponcore/types.hpp"

namespace couponcore {

const char* error_code_name(ErrorCode code) noexcept {
  switch (code) {
    case ErrorCode::kInvalidArgument: return "InvalidArgument";
    case ErrorCode::kNotFound: return "NotFound";
    case ErrorCode::kConflict: return "Conflict";
    case ErrorCode::kUnavailable: return "Unavailable";
    case ErrorCode::kClosed: return "Closed";
    case ErrorCode::kInsufficientFunds: return "InsufficientFunds";
    case ErrorCode::kUnauthenticated: return "Unauthenticated";
    case ErrorCode::kInternal: return "Internal";
  }
  return "Unknown";
}

const char* issue_status_name(IssueStatus s) noexcept {
  switch (s) {
    case IssueStatus::kIssued: return "ISSUED";
    case IssueStatus::kSoldOut: return "SOLD_OUT";
    case IssueStatus::kAlreadyIssued: return "ALREADY_ISSUED";
    case IssueStatus::kNotOpen: return "NOT_OPEN";
    case IssueStatus::kEnded: return "ENDED";
    case IssueStatus::kRateLimited: return "RATE_LIMITED";
  }
  return "UNKNOWN";
}

Error error_from(std::exception_ptr error) noexcept {
  try {
    std::rethrow_exception(error);
  } catch (const Error& e) {
    return e;
  } catch (const std::exception& e) {
    return Error(ErrorCode::kInternal, e.what());
  } catch (...) {
    return Error(ErrorCode::kInternal, "unknown failure");
  }
}

int64_t now_us() {
  using namespace std::chrono;
  return duration_cast<microseconds>(system_clock::now().time_since_epoch()).count();
}

namespace limits {

namespace {
bool id_char_ok(unsigned char c) noexcept {
  if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9')) return true;
  switch (c) {
    case '-': case '_': case '.': case ':': case '@': case '+': case '=': case '/': return true;
    default: return false;
  }
}

void check_id(std::string_view id, std::size_t bytes_max, const char* field) {
  if (id.empty()) throw_invalid(std::string(field) + " must not be empty");
  if (id.size() > bytes_max) {
    throw_invalid(std::string(field) + " is " + std::to_string(id.size()) + " bytes; the limit is " +
                  std::to_string(bytes_max));
  }
  for (unsigned char c : id) {
    if (!id_char_ok(c)) {
      throw_invalid(std::string(field) +
                    " may contain only letters, digits and - _ . : @ + = / (got a byte " +
                    std::to_string(static_cast<int>(c)) + ")");
    }
  }
}
}  // namespace

bool is_valid_id(std::string_view id, std::size_t bytes_max) noexcept {
  if (id.empty() || id.size() > bytes_max) return false;
  for (unsigned char c : id) {
    if (!id_char_ok(c)) return false;
  }
  return true;
}

void check_user_id(std::string_view user_id) { check_id(user_id, kUserIdBytesMax, "user_id"); }
void check_request_id(std::string_view request_id) {
  check_id(request_id, kRequestIdBytesMax, "request_id");
}
void check_order_id(std::string_view order_id) { check_id(order_id, kOrderIdBytesMax, "order_id"); }

}  // namespace limits

}  // namespace couponcore
