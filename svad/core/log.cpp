#include "svad/core/log.h"

#include "svad/core/text.h"

#include <algorithm>
#include <cstdio>
#include <mutex>
#include <optional>

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

namespace {

// A record's text is bounded and valid UTF-8 whatever a caller or a file put in
// it: the sinks (stderr, the journal) get it that way.
constexpr size_t kMaxMessage = 4096;
constexpr size_t kMaxField = 1024;

bool clean(const std::string& text, size_t max) {
    return text.size() <= max && core::validUtf8(text);
}

} // namespace

void write(Priority p, const std::string& rawMessage, const Fields& rawFields) {
    std::lock_guard g(lock());
    if (static_cast<int>(p) > static_cast<int>(maxPriority())) {
        return;
    }
    const bool fieldsClean = std::all_of(rawFields.begin(), rawFields.end(), [](const auto& f) {
        return clean(f.first, kMaxField) && clean(f.second, kMaxField);
    });
    std::optional<std::string> ownMessage;
    if (!clean(rawMessage, kMaxMessage)) {
        ownMessage = core::cutUtf8(rawMessage, kMaxMessage);
    }
    std::optional<Fields> ownFields;
    if (!fieldsClean) {
        ownFields.emplace();
        for (const auto& [k, v] : rawFields) {
            ownFields->emplace_back(core::cutUtf8(k, kMaxField), core::cutUtf8(v, kMaxField));
        }
    }
    const std::string& message = ownMessage ? *ownMessage : rawMessage;
    const Fields& fields = ownFields ? *ownFields : rawFields;
    if (sink()) {
        sink()(p, message, fields);
        return;
    }
    std::string line = formatLine(p, message, fields);
    line += '\n';
    (void)std::fwrite(line.data(), 1, line.size(), stderr);
}

} // namespace svad::log
