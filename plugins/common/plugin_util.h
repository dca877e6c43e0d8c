// Small helpers shared by svad's own plugins (header-only, C++).
#pragma once

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <string>
#include <svad/plugin.h>
#include <unistd.h>

namespace svad::plugins {

// Writes text into a caller's buffer, always NUL-terminated.
inline void say(char* buf, size_t size, const std::string& text) {
    if (buf != nullptr && size > 0) {
        (void)std::snprintf(buf, size, "%s", text.c_str());
    }
}

// The value of a request option, or `fallback`.
inline std::string option(const svad_request* r, const char* key, const std::string& fallback) {
    for (size_t i = 0; r->options != nullptr && i < r->option_count; ++i) {
        if (r->options[i].key != nullptr && std::strcmp(r->options[i].key, key) == 0) {
            return r->options[i].value != nullptr ? r->options[i].value : "";
        }
    }
    return fallback;
}

inline bool truthy(const std::string& v) {
    return v == "true" || v == "yes" || v == "on" || v == "1";
}

// A whole number of at most 2^20, or -1.
inline long smallNumber(const std::string& v) {
    if (v.empty() || v.size() > 7 || v.find_first_not_of("0123456789") != std::string::npos) {
        return -1;
    }
    long n = std::stol(v);
    return n <= (1L << 20) ? n : -1;
}

inline std::string text(const char* s) {
    return s != nullptr ? s : "";
}

// Logs through the host when it can.
inline void hostLog(const svad_host* host, int priority, const char* plugin,
                    const std::string& message) {
    if (host != nullptr && host->log != nullptr) {
        host->log(host->handle, priority, plugin, message.c_str());
    }
}

} // namespace svad::plugins
