// The one check of a listen address (the metrics endpoint's), used by the
// configuration validator, the command line and the metrics endpoint alike, so
// that what --check-config accepts is what svad can serve.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace svad::core {

// The word that turns an endpoint off.
inline constexpr std::string_view kListenOff = "off";

// A listen address svad accepts:
//   IPV4:PORT      such as 127.0.0.1:9464 or 0.0.0.0:9464 (dotted quad)
//   [IPV6]:PORT    such as [::1]:9464 or [::]:9464 (brackets required)
//   off            no endpoint
// PORT is 0-65535 in decimal; 0 picks a free port. Host names are refused (the
// HTTP server binds numeric addresses only).
struct ListenAddress {
    bool off = false;
    std::string host; // without brackets
    bool ipv6 = false;
    uint16_t port = 0;
};

// The address, or nothing with `error` (if given) saying what is wrong, with
// the offending text quoted in part. The same text for every caller.
std::optional<ListenAddress> parseListenAddress(std::string_view text,
                                                std::string* error = nullptr);

// What is wrong with `text` as a listen address, or nothing when it is one.
std::optional<std::string> checkListenAddress(std::string_view text);

} // namespace svad::core
