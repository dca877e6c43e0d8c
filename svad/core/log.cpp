#include "svad/core/log.h"

#include <cstdio>
#include <mutex>

namespace svad::log {

namespace {

std::mutex& lock() {
    static std::mutex m;
    return m;
}
Sink& sink() {
    static Sink s;
    return s;
}
Priority& maxPriority() {
    static Priority p = Priority::Info;
    return p;
}

const char* label(Priority p) {
    switch (p) {
    case Priority::Error:
        return "error";
    case Priority::Warning:
        return "warning";
    case Priority::Notice:
        return "notice";
    case Priority::Info:
        return "info";
    case Priority::Debug:
        return "debug";
    }
    return "info";
}

} // namespace

void setSink(Sink s) {
    std::lock_guard g(lock());
    sink() = std::move(s);
}

void setMaxPriority(Priority p) {
    std::lock_guard g(lock());
    maxPriority() = p;
}

namespace {

// Control characters from callers must not start a line of their own.
std::string escaped(const std::string& text) {
    static constexpr char kHex[] = "0123456789abcdef";
    std::string out;
    out.reserve(text.size());
    for (char c : text) {
        auto u = static_cast<unsigned char>(c);
        if (u < 0x20 || u == 0x7f) {
            out += "\\x";
            out += kHex[u >> 4];
            out += kHex[u & 0xf];
        } else {
            out += c;
        }
    }
    return out;
}

} // namespace

std::string formatLine(Priority p, const std::string& message, const Fields& fields) {
    std::string line = "svad: ";
    line += label(p);
    line += ": ";
    line += escaped(message);
    if (!fields.empty()) {
        line += " [";
        bool first = true;
        for (const auto& [k, v] : fields) {
            if (!first) {
                line += ' ';
            }
            first = false;
            line += k;
            line += '=';
            line += escaped(v);
        }
        line += ']';
    }
    return line;
}

void write(Priority p, const std::string& message, const Fields& fields) {
    std::lock_guard g(lock());
    if (static_cast<int>(p) > static_cast<int>(maxPriority())) {
        return;
    }
    if (sink()) {
        sink()(p, message, fields);
        return;
    }
    std::string line = formatLine(p, message, fields);
    line += '\n';
    (void)std::fwrite(line.data(), 1, line.size(), stderr);
}

} // namespace svad::log
