// Small helpers shared by svad's own plugins (header-only, C++).
#pragma once

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <string>
#include <svad/plugin.h>
#include <type_traits>
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

// Fills what every one of svad's plugins sets at init: the sizes, the ABI, the
// name, the kinds and the version, and a new State with the fini that deletes
// it (none for void). False when the host's table is smaller than this header's.
template <typename State>
bool fillTable(svad_plugin* p, size_t size, const char* name, uint32_t kinds) {
    if (size < sizeof(svad_plugin)) {
        return false;
    }
    p->struct_size = sizeof(svad_plugin);
    p->abi_version = SVAD_PLUGIN_ABI_VERSION;
    p->name = name;
    p->kinds = kinds;
    p->version = "1.0";
    if constexpr (!std::is_void_v<State>) {
        p->state = new State();
        p->fini = [](void* state) { delete static_cast<State*>(state); };
    }
    return true;
}

} // namespace svad::plugins
