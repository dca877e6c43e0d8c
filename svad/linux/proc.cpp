#include "svad/linux/proc.h"

#include <cerrno>
#include <fcntl.h>
#include <string>
#include <unistd.h>

namespace svad::linux_impl {

uint64_t processStartTime(pid_t pid, const char* procRoot) {
    if (pid <= 0) {
        return 0;
    }
    const std::string path = std::string(procRoot) + "/" + std::to_string(pid) + "/stat";
    const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK);
    if (fd < 0) {
        return 0;
    }
    char buf[1024];
    ssize_t n = 0;
    do {
        n = ::read(fd, buf, sizeof buf - 1);
    } while (n < 0 && errno == EINTR);
    ::close(fd);
    if (n <= 0) {
        return 0;
    }
    const std::string text(buf, static_cast<size_t>(n));
    // "PID (COMM) STATE ...": COMM may hold spaces and parentheses; the fields
    // after it start behind the last ')'. starttime is field 22, the 20th after it.
    const size_t close = text.rfind(')');
    if (close == std::string::npos) {
        return 0;
    }
    size_t pos = close + 1;
    for (int field = 3; field <= 22; ++field) {
        while (pos < text.size() && text[pos] == ' ') {
            ++pos;
        }
        const size_t end = text.find(' ', pos);
        if (field == 22) {
            try {
                return std::stoull(text.substr(pos, end - pos));
            } catch (const std::exception&) {
                return 0;
            }
        }
        if (end == std::string::npos) {
            return 0;
        }
        pos = end;
    }
    return 0;
}

std::optional<uid_t> processUid(pid_t pid, const char* procRoot) {
    if (pid <= 0) {
        return std::nullopt;
    }
    const std::string path = std::string(procRoot) + "/" + std::to_string(pid) + "/status";
    const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK);
    if (fd < 0) {
        return std::nullopt;
    }
    std::string text;
    char buf[4096];
    for (;;) {
        const ssize_t n = ::read(fd, buf, sizeof buf);
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n <= 0 || text.size() > 65536) {
            break;
        }
        text.append(buf, static_cast<size_t>(n));
    }
    ::close(fd);
    // "Uid:\treal\teffective\tsaved\tfs"
    const size_t line = text.find("\nUid:");
    if (line == std::string::npos) {
        return std::nullopt;
    }
    size_t pos = line + 5;
    uint64_t value = 0;
    for (int field = 0; field < 2; ++field) {
        while (pos < text.size() && (text[pos] == '\t' || text[pos] == ' ')) {
            ++pos;
        }
        const size_t start = pos;
        value = 0;
        while (pos < text.size() && text[pos] >= '0' && text[pos] <= '9' && value <= UINT32_MAX) {
            value = value * 10 + static_cast<uint64_t>(text[pos] - '0');
            ++pos;
        }
        if (pos == start || value > UINT32_MAX) {
            return std::nullopt;
        }
    }
    return static_cast<uid_t>(value);
}

} // namespace svad::linux_impl
