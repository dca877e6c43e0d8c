#include "svad/linux/sysfs_reader.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>

namespace svad::linux_impl {

namespace {

// Owns a file descriptor for the duration of one read.
class Fd {
public:
    explicit Fd(int fd) : fd_(fd) {}
    ~Fd() {
        if (fd_ >= 0) {
            ::close(fd_);
        }
    }
    Fd(const Fd&) = delete;
    Fd& operator=(const Fd&) = delete;
    int get() const { return fd_; }

private:
    int fd_;
};

// Reads up to maxBytes; sysfs attributes may return short reads.
bool readAll(int fd, std::vector<uint8_t>& out, size_t maxBytes) {
    out.clear();
    std::array<uint8_t, 4096> buf{};
    while (out.size() < maxBytes) {
        size_t want = std::min(buf.size(), maxBytes - out.size());
        ssize_t n = ::read(fd, buf.data(), want);
        if (n < 0) {
            if (errno == EINTR) {
                continue;
            }
            return false;
        }
        if (n == 0) {
            break;
        }
        out.insert(out.end(), buf.begin(), buf.begin() + n);
    }
    return true;
}

}  // namespace

SysfsReader::SysfsReader(std::string root) : root_(std::move(root)) {
    while (root_.size() > 1 && root_.back() == '/') {
        root_.pop_back();
    }
}

std::string SysfsReader::full(const std::string& path) const {
    if (path.empty()) {
        return root_;
    }
    return root_ + "/" + path;
}

std::optional<std::string> SysfsReader::readText(const std::string& path) const {
    constexpr size_t kMaxText = 64 * 1024;
    auto bytes = readBinary(path, kMaxText);
    if (!bytes) {
        return std::nullopt;
    }
    std::string s(bytes->begin(), bytes->end());
    while (!s.empty() && (s.back() == '\n' || s.back() == '\0')) {
        s.pop_back();
    }
    return s;
}

std::optional<std::vector<uint8_t>> SysfsReader::readBinary(const std::string& path,
                                                            size_t maxBytes) const {
    Fd fd(::open(full(path).c_str(), O_RDONLY | O_CLOEXEC | O_NOCTTY));
    if (fd.get() < 0) {
        return std::nullopt;
    }
    std::vector<uint8_t> out;
    out.reserve(std::min<size_t>(maxBytes, 4096));
    if (!readAll(fd.get(), out, maxBytes)) {
        return std::nullopt;
    }
    return out;
}

std::optional<std::vector<std::string>> SysfsReader::list(const std::string& path) const {
    DIR* dir = ::opendir(full(path).c_str());
    if (dir == nullptr) {
        return std::nullopt;
    }
    std::vector<std::string> names;
    while (struct dirent* e = ::readdir(dir)) {
        std::string_view n(e->d_name);
        if (n == "." || n == "..") {
            continue;
        }
        names.emplace_back(n);
    }
    ::closedir(dir);
    std::sort(names.begin(), names.end());
    return names;
}

std::optional<std::string> SysfsReader::readLink(const std::string& path) const {
    std::array<char, 4096> buf{};
    ssize_t n = ::readlink(full(path).c_str(), buf.data(), buf.size() - 1);
    if (n < 0) {
        return std::nullopt;
    }
    return std::string(buf.data(), static_cast<size_t>(n));
}

bool SysfsReader::exists(const std::string& path) const {
    struct stat st {};
    return ::stat(full(path).c_str(), &st) == 0;
}

}  // namespace svad::linux_impl
