#include "svad/core/text.h"

#include <algorithm>
#include <cstdint>

namespace svad::core {

namespace {

// The length of the character starting at text[pos] when it is one sd-bus
// accepts; 0 when the byte there starts none.
size_t charLength(std::string_view text, size_t pos) {
    const auto lead = static_cast<unsigned char>(text[pos]);
    if (lead == 0) {
        return 0;
    }
    if (lead < 0x80) {
        return 1;
    }
    size_t len = 0;
    uint32_t cp = 0;
    uint32_t min = 0;
    if ((lead & 0xe0) == 0xc0) {
        len = 2;
        cp = lead & 0x1fU;
        min = 0x80;
    } else if ((lead & 0xf0) == 0xe0) {
        len = 3;
        cp = lead & 0x0fU;
        min = 0x800;
    } else if ((lead & 0xf8) == 0xf0) {
        len = 4;
        cp = lead & 0x07U;
        min = 0x10000;
    } else {
        return 0; // a continuation byte, or 0xf8..0xff
    }
    if (text.size() - pos < len) {
        return 0;
    }
    for (size_t i = 1; i < len; ++i) {
        const auto c = static_cast<unsigned char>(text[pos + i]);
        if ((c & 0xc0) != 0x80) {
            return 0;
        }
        cp = (cp << 6) | (c & 0x3fU);
    }
    const bool overlong = cp < min;
    const bool surrogate = cp >= 0xd800 && cp <= 0xdfff;
    const bool noncharacter = (cp >= 0xfdd0 && cp <= 0xfdef) || (cp & 0xfffeU) == 0xfffeU;
    if (overlong || surrogate || noncharacter || cp > 0x10ffff) {
        return 0;
    }
    return len;
}

constexpr char kHex[] = "0123456789abcdef";

} // namespace

bool validUtf8(std::string_view text) {
    for (size_t pos = 0; pos < text.size();) {
        const size_t len = charLength(text, pos);
        if (len == 0) {
            return false;
        }
        pos += len;
    }
    return true;
}

std::string sanitizeUtf8(std::string_view text) {
    if (validUtf8(text)) {
        return std::string(text);
    }
    return cutUtf8(text, text.size() * 4);
}

std::string cutUtf8(std::string_view text, size_t maxBytes) {
    std::string out;
    out.reserve(std::min(text.size(), maxBytes) + 24);
    size_t pos = 0;
    while (pos < text.size()) {
        const size_t len = charLength(text, pos);
        const size_t width = len == 0 ? 4 : len;
        if (out.size() + width > maxBytes) {
            break;
        }
        if (len == 0) {
            const auto u = static_cast<unsigned char>(text[pos]);
            out += "\\x";
            out += kHex[u >> 4];
            out += kHex[u & 0xf];
            pos += 1;
        } else {
            out.append(text.substr(pos, len));
            pos += len;
        }
    }
    if (pos < text.size()) {
        out += "\u2026(" + std::to_string(text.size()) + " bytes)";
    }
    return out;
}

} // namespace svad::core
