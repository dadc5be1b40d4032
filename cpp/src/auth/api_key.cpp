// API keys; see api_key.hpp.
#include "auth/api_key.hpp"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <sys/random.h>

#include <array>
#include <cerrno>
#include <cstring>

#include "couponcore/auth.hpp"
#include "couponcore/error.hpp"

namespace couponcore::auth {

namespace {

constexpr char kBase32[] = "abcdefghijklmnopqrstuvwxyz234567";
constexpr int kGetrandomAttemptsMax = 100;  // EINTR retries before giving up

void fill_random(uint8_t* out, std::size_t size) {
  std::size_t done = 0;
  int attempts = 0;
  while (done < size) {
    ssize_t n = ::getrandom(out + done, size - done, 0);
    if (n < 0) {
      if (errno == EINTR && ++attempts < kGetrandomAttemptsMax) continue;
      throw Error(ErrorCode::kUnavailable, std::string("getrandom failed: ") + std::strerror(errno));
    }
    done += static_cast<std::size_t>(n);
  }
}

bool base32_char(char c) noexcept { return (c >= 'a' && c <= 'z') || (c >= '2' && c <= '7'); }

}  // namespace

std::string base32_lower(const uint8_t* data, std::size_t size) {
  std::string out;
  out.reserve((size * 8 + 4) / 5);
  uint32_t buffer = 0;
  int bits = 0;
  for (std::size_t i = 0; i < size; ++i) {
    buffer = (buffer << 8) | data[i];
    bits += 8;
    while (bits >= 5) {
      out.push_back(kBase32[(buffer >> (bits - 5)) & 31]);
      bits -= 5;
    }
  }
  if (bits > 0) out.push_back(kBase32[(buffer << (5 - bits)) & 31]);
  return out;
}

std::string generate_api_key() {
  std::array<uint8_t, kKeyRandomBytes> raw{};
  fill_random(raw.data(), raw.size());
  std::string key(kApiKeyPrefix);
  key += base32_lower(raw.data(), raw.size());
  OPENSSL_cleanse(raw.data(), raw.size());
  return key;
}

bool is_well_formed(std::string_view key) noexcept {
  if (key.size() != kKeyChars || key.substr(0, kApiKeyPrefix.size()) != kApiKeyPrefix) return false;
  for (char c : key.substr(kApiKeyPrefix.size())) {
    if (!base32_char(c)) return false;
  }
  return true;
}

std::string sha256_hex(std::string_view data) {
  std::array<unsigned char, EVP_MAX_MD_SIZE> digest{};
  unsigned int size = 0;
  if (EVP_Digest(data.data(), data.size(), digest.data(), &size, EVP_sha256(), nullptr) != 1 || size != 32) {
    throw Error(ErrorCode::kInternal, "SHA-256 failed (OpenSSL EVP_Digest)");
  }
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out(64, '0');
  for (unsigned int i = 0; i < size; ++i) {
    out[2 * i] = kHex[digest[i] >> 4];
    out[2 * i + 1] = kHex[digest[i] & 15];
  }
  return out;
}

std::string key_sha256_hex(std::string_view key) { return sha256_hex(key); }

bool constant_time_equal(std::string_view a, std::string_view b) noexcept {
  // Lengths are public (a hash is always 64 characters); the contents are compared without an
  // early exit.
  if (a.size() != b.size()) return false;
  return CRYPTO_memcmp(a.data(), b.data(), a.size()) == 0;
}

std::string key_hint(std::string_view key) {
  return std::string(key.substr(0, kApiKeyPrefix.size() + 4)) + "...";
}

}  // namespace couponcore::auth
