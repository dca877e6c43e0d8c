#include "svad/core/parse.h"

#include <cctype>
#include <charconv>

namespace svad::core {

namespace {

std::string_view trim(std::string_view s) {
    while (!s.empty() && std::isspace(static_cast<unsigned char>(s.front())) != 0) {
        s.remove_prefix(1);
    }
    while (!s.empty() && std::isspace(static_cast<unsigned char>(s.back())) != 0) {
        s.remove_suffix(1);
    }
    return s;
}

bool isHexDigits(std::string_view s, size_t n) {
    if (s.size() != n) {
        return false;
    }
    for (char c : s) {
        if (std::isxdigit(static_cast<unsigned char>(c)) == 0) {
            return false;
        }
    }
    return true;
}

} // namespace

std::optional<uint64_t> parseHex(std::string_view text) {
    std::string_view s = trim(text);
    if (s.size() > 2 && s[0] == '0' && (s[1] == 'x' || s[1] == 'X')) {
        s.remove_prefix(2);
    }
    if (s.empty()) {
        return std::nullopt;
    }
    uint64_t v = 0;
    auto [ptr, ec] = std::from_chars(s.data(), s.data() + s.size(), v, 16);
    if (ec != std::errc() || ptr != s.data() + s.size()) {
        return std::nullopt;
    }
    return v;
}

std::optional<int64_t> parseDec(std::string_view text) {
    std::string_view s = trim(text);
    if (s.empty()) {
        return std::nullopt;
    }
    int64_t v = 0;
    auto [ptr, ec] = std::from_chars(s.data(), s.data() + s.size(), v, 10);
    if (ec != std::errc() || ptr != s.data() + s.size()) {
        return std::nullopt;
    }
    return v;
}

bool isPciAddress(std::string_view a) {
    // DDDD:BB:DD.F
    if (a.size() != 12 || a[4] != ':' || a[7] != ':' || a[10] != '.') {
        return false;
    }
    if (!isHexDigits(a.substr(0, 4), 4) || !isHexDigits(a.substr(5, 2), 2) ||
        !isHexDigits(a.substr(8, 2), 2)) {
        return false;
    }
    auto dev = parseHex(a.substr(8, 2));
    return dev && *dev <= 0x1f && a[11] >= '0' && a[11] <= '7';
}

std::string baseName(std::string_view path) {
    while (!path.empty() && path.back() == '/') {
        path.remove_suffix(1);
    }
    auto pos = path.rfind('/');
    return std::string(pos == std::string_view::npos ? path : path.substr(pos + 1));
}

std::string pathLabel(std::string_view name) {
    static constexpr char kHex[] = "0123456789abcdef";
    std::string out;
    out.reserve(name.size() + 4);
    bool pci = isPciAddress(name);
    for (char c : name) {
        auto u = static_cast<unsigned char>(c);
        if (std::isalnum(u) != 0) {
            out.push_back(c);
        } else if (pci) {
            out.push_back('_');
        } else {
            out.push_back('_');
            out.push_back(kHex[u >> 4]);
            out.push_back(kHex[u & 0xf]);
        }
    }
    if (out.empty()) {
        out.push_back('_'); // a path element may not be empty
    }
    return out;
}

std::string labelName(std::string_view label) {
    // A PCI address's label: DDDD_BB_DD_F. No escaped label has this shape, since
    // an escape is always '_' and two hex digits and this one ends in "_F".
    if (label.size() == 12 && label[4] == '_' && label[7] == '_' && label[10] == '_') {
        std::string a(label);
        a[4] = ':';
        a[7] = ':';
        a[10] = '.';
        if (isPciAddress(a)) {
            return a;
        }
    }
    if (label == "_") {
        return {}; // the label of an empty name
    }
    std::string out;
    out.reserve(label.size());
    for (size_t i = 0; i < label.size(); ++i) {
        const char c = label[i];
        if (c != '_') {
            out.push_back(c);
            continue;
        }
        auto code = i + 2 < label.size() && isHexDigits(label.substr(i + 1, 2), 2)
                        ? parseHex(label.substr(i + 1, 2))
                        : std::nullopt;
        if (!code) {
            return std::string(label);
        }
        out.push_back(static_cast<char>(*code));
        i += 2;
    }
    return out;
}

} // namespace svad::core
