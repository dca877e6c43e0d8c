// Text that leaves svad: D-Bus strings must be valid UTF-8 (as sd-bus checks
// it), and whatever a caller or a file supplies is echoed only in part.
// Everything svad publishes, logs or returns goes through these helpers.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

namespace svad::core {

// How much of a caller's or a file's text an error message or a log field quotes.
inline constexpr size_t kEchoBytes = 64;

// True when `text` is UTF-8 that sd-bus accepts in a string: no NUL, no overlong
// form, no surrogate, nothing past U+10FFFF, no noncharacter (U+FDD0..U+FDEF,
// U+xFFFE, U+xFFFF).
bool validUtf8(std::string_view text);

// `text` with every byte that is not part of such a character written as \xNN.
// Valid text comes back unchanged, so applying it twice changes nothing.
std::string sanitizeUtf8(std::string_view text);

// At most `maxBytes` of sanitizeUtf8(text), cut between characters (an escape
// is never split); when anything was left out, followed by "…(N bytes)" with
// N the length of `text`.
std::string cutUtf8(std::string_view text, size_t maxBytes);

// cutUtf8(text, kEchoBytes): caller input quoted in an error or a log field.
inline std::string echo(std::string_view text) {
    return cutUtf8(text, kEchoBytes);
}

} // namespace svad::core
