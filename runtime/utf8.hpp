#pragma once
// UTF-8 checks for text that crosses a boundary (stage program output,
// messages stored as text), and hex digits. Pure functions.

#include <cstddef>
#include <string>
#include <string_view>

namespace spool {

/// Length of the valid UTF-8 sequence at the start of `s` (non-empty), 0 if
/// invalid: no overlong forms, no UTF-16 surrogates, nothing above U+10FFFF.
std::size_t utf8_sequence(std::string_view s) noexcept;

/// The offset of the first byte of `s` that is not valid UTF-8, or npos.
std::size_t invalid_utf8_at(std::string_view s) noexcept;

/// `s` with NUL bytes and invalid UTF-8 replaced by '?', so that it can be
/// stored as text as it is.
std::string sanitize_utf8(std::string_view s);

/// The value of a hexadecimal digit (0-9, a-f, A-F), -1 for anything else.
constexpr int hex_value(char c) noexcept {
  if (c >= '0' && c <= '9')
    return c - '0';
  if (c >= 'a' && c <= 'f')
    return c - 'a' + 10;
  if (c >= 'A' && c <= 'F')
    return c - 'A' + 10;
  return -1;
}

} // namespace spool
