// API keys: generation, shape check, hashing and comparison. No I/O beyond the kernel CSPRNG.
//
//   generate_api_key()      "cc_live_" + base32(32 bytes from getrandom(2)), 60 characters
//   is_well_formed(key)     prefix, length and alphabet; anything else is refused before lookup
//   key_sha256_hex(key)     what the database stores and is searched by (64 lowercase hex)
//   constant_time_equal()   CRYPTO_memcmp: no early exit on the first differing byte
//   key_hint(key)           "cc_live_abcd…" for listings (20 bits of 256: harmless)
//
// Why OpenSSL's libcrypto for SHA-256: a well-kept, audited implementation that Debian ships
// (libssl-dev) and that already sits under libpq; writing our own hash buys nothing.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace couponcore::auth {

inline constexpr std::size_t kKeyRandomBytes = 32;
inline constexpr std::size_t kKeyBase32Chars = 52;  // ceil(256 / 5)
inline constexpr std::size_t kKeyChars = 8 + kKeyBase32Chars;  // "cc_live_" + body

std::string generate_api_key();
bool is_well_formed(std::string_view key) noexcept;
std::string key_sha256_hex(std::string_view key);
bool constant_time_equal(std::string_view a, std::string_view b) noexcept;
std::string key_hint(std::string_view key);

// RFC 4648 base32, lowercase, no padding.
std::string base32_lower(const uint8_t* data, std::size_t size);
std::string sha256_hex(std::string_view data);

}  // namespace couponcore::auth
