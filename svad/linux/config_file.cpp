#include "svad/linux/config_file.h"

#include "svad/ports/kernel.h"

#include <cerrno>
#include <cstring>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

namespace svad::linux_impl {

namespace {

core::ConfigLoad failed(std::string error) {
    core::ConfigLoad out;
    out.errors.push_back(std::move(error));
    return out;
}

const char* kindOf(mode_t mode) {
    return S_ISDIR(mode)    ? "a directory"
           : S_ISFIFO(mode) ? "a FIFO"
           : S_ISCHR(mode)  ? "a character device"
           : S_ISBLK(mode)  ? "a block device"
           : S_ISSOCK(mode) ? "a socket"
                            : "not a file";
}

std::string tooLarge(const std::string& path) {
    return path + ": larger than " + std::to_string(core::kMaxConfigBytes) +
           " bytes (1 MiB), the most a configuration file may hold";
}

} // namespace

core::ConfigLoad loadConfig(const std::string& path, const std::string& defaultPluginDir) {
    // O_NONBLOCK: a FIFO opens at once instead of waiting for a writer.
    ports::UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK));
    if (fd.get() < 0) {
        const int err = errno;
        struct stat st {};
        if (err == ENXIO && ::stat(path.c_str(), &st) == 0) { // a socket
            return failed(path + ": " + kindOf(st.st_mode) +
                          ", not a regular file: not a configuration file");
        }
        return failed(path + ": cannot read: " + std::strerror(err));
    }
    struct stat st {};
    if (::fstat(fd.get(), &st) != 0) {
        return failed(path + ": cannot read: " + std::strerror(errno));
    }
    if (!S_ISREG(st.st_mode)) {
        return failed(path + ": " + kindOf(st.st_mode) +
                      ", not a regular file: not a configuration file");
    }
    if (static_cast<uint64_t>(st.st_size) > core::kMaxConfigBytes) {
        return failed(tooLarge(path));
    }
    // The file may grow while it is read: never past the limit.
    std::string text;
    text.resize(core::kMaxConfigBytes + 1);
    size_t have = 0;
    while (have < text.size()) {
        const ssize_t n = ::read(fd.get(), text.data() + have, text.size() - have);
        if (n < 0) {
            if (errno == EINTR) {
                continue;
            }
            return failed(path + ": read error: " + std::strerror(errno));
        }
        if (n == 0) {
            break;
        }
        have += static_cast<size_t>(n);
    }
    if (have > core::kMaxConfigBytes) {
        return failed(tooLarge(path));
    }
    text.resize(have);
    return core::parseConfig(text, path, defaultPluginDir);
}

} // namespace svad::linux_impl
