#include "svad/core/listen_address.h"

#include "svad/core/text.h"

#include <algorithm>
#include <arpa/inet.h>
#include <array>

namespace svad::core {

namespace {

constexpr size_t kMaxPortDigits = 5;
constexpr unsigned kMaxPort = 65535;

bool allDigits(std::string_view s) {
    return !s.empty() &&
           std::all_of(s.begin(), s.end(), [](char c) { return c >= '0' && c <= '9'; });
}

std::optional<uint16_t> port(std::string_view s) {
    if (!allDigits(s) || s.size() > kMaxPortDigits) {
        return std::nullopt;
    }
    unsigned v = 0;
    for (char c : s) {
        v = v * 10 + static_cast<unsigned>(c - '0');
    }
    if (v > kMaxPort) {
        return std::nullopt;
    }
    return static_cast<uint16_t>(v);
}

// inet_pton is a pure parser (no system call); it wants a NUL-terminated string.
bool isAddress(int family, const std::string& host) {
    std::array<unsigned char, 16> buf{};
    return ::inet_pton(family, host.c_str(), buf.data()) == 1;
}

} // namespace

std::optional<ListenAddress> parseListenAddress(std::string_view text, std::string* error) {
    const std::string quoted = "'" + echo(text) + "'";
    auto fail = [&](const std::string& why) -> std::optional<ListenAddress> {
        if (error != nullptr) {
            *error = quoted + ": " + why;
        }
        return std::nullopt;
    };
    if (text == kListenOff) {
        ListenAddress a;
        a.off = true;
        return a;
    }
    const std::string forms = "expected IPV4:PORT, [IPV6]:PORT or off";
    ListenAddress a;
    std::string_view portText;
    if (!text.empty() && text.front() == '[') {
        auto close = text.find(']');
        if (close == std::string_view::npos || close + 1 >= text.size() || text[close + 1] != ':') {
            return fail("an IPv6 address is written [IPV6]:PORT, such as [::1]:9464");
        }
        a.host = std::string(text.substr(1, close - 1));
        a.ipv6 = true;
        portText = text.substr(close + 2);
        if (!isAddress(AF_INET6, a.host)) {
            return fail("'" + echo(a.host) + "' is not an IPv6 address");
        }
    } else {
        auto colon = text.rfind(':');
        if (colon == std::string_view::npos) {
            return fail("no port; " + forms);
        }
        a.host = std::string(text.substr(0, colon));
        portText = text.substr(colon + 1);
        if (a.host.find(':') != std::string::npos) {
            std::string v6 = a.host;
            return fail("write an IPv6 host in brackets, as [" + echo(v6) + "]:" + echo(portText));
        }
        if (a.host.empty()) {
            return fail("no host; " + forms);
        }
        if (!isAddress(AF_INET, a.host)) {
            return fail("'" + echo(a.host) + "' is not an IPv4 address (host names are not " +
                        "accepted); " + forms);
        }
    }
    auto p = port(portText);
    if (!p) {
        return fail("port '" + echo(portText) + "' is not 0-65535");
    }
    a.port = *p;
    return a;
}

std::optional<std::string> checkListenAddress(std::string_view text) {
    std::string error;
    if (parseListenAddress(text, &error)) {
        return std::nullopt;
    }
    return error;
}

} // namespace svad::core
