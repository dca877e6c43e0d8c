#include "svad/linux/sysfs_reader.h"

#include "svad/ports/kernel.h"

#include <algorithm>
#include <array>
#include <atomic>
#include <cerrno>
#include <fcntl.h>
#include <linux/openat2.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

namespace svad::linux_impl {

namespace {

// openat() that never leaves `dirFd`: a link leading outside it (an absolute
// one, or one with too many "..") fails with EXDEV, so nothing outside the sysfs
// root is read, listed or quoted. Without openat2 (before Linux 5.6, or where a
// seccomp filter refuses it) it is plain openat().
constexpr int kBeneathRetries = 1000;

int openBeneath(int dirFd, const char* name, int flags) {
    static std::atomic<bool> plainOnly{false};
    if (!plainOnly.load(std::memory_order_relaxed)) {
        struct open_how how {};
        how.flags = static_cast<uint64_t>(flags);
        how.resolve = RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS;
        // EAGAIN: a rename or mount somewhere on the host while ".." was walked
        // (every device link in sysfs climbs), and the kernel asks for a retry.
        long fd = -1;
        for (int attempt = 0; attempt < kBeneathRetries; ++attempt) {
            fd = ::syscall(SYS_openat2, dirFd, name, &how, sizeof how);
            if (fd >= 0 || errno != EAGAIN) {
                break;
            }
        }
        if (fd >= 0 || (errno != ENOSYS && errno != EPERM)) {
            return static_cast<int>(fd);
        }
        plainOnly.store(true, std::memory_order_relaxed);
    }
    return ::openat(dirFd, name, flags);
}

// Reads up to maxBytes. A read that returns less than asked ends the file:
// sysfs serves an attribute whole in its first read, and regular files of a
// generated tree do the same; a zero-length read ends it otherwise.
bool readAll(int fd, std::vector<uint8_t>& out, size_t maxBytes) {
    out.clear();
    while (out.size() < maxBytes) {
        const size_t want = std::min<size_t>(4096, maxBytes - out.size());
        const size_t have = out.size();
        out.resize(have + want);
        ssize_t n = ::read(fd, out.data() + have, want);
        if (n < 0) {
            out.resize(have);
            if (errno == EINTR) {
                continue;
            }
            return false;
        }
        out.resize(have + static_cast<size_t>(n));
        if (static_cast<size_t>(n) < want) {
            break;
        }
    }
    return true;
}

} // namespace

SysfsReader::SysfsReader(std::string root) : root_(std::move(root)) {
    while (root_.size() > 1 && root_.back() == '/') {
        root_.pop_back();
    }
    rootFd_ = ::open(root_.empty() ? "." : root_.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC);
}

SysfsReader::~SysfsReader() {
    if (cachedFd_ >= 0) {
        ::close(cachedFd_);
    }
    if (rootFd_ >= 0) {
        ::close(rootFd_);
    }
}

SysfsReader::At SysfsReader::resolve(const std::string& path, std::string& scratch) const {
    const auto slash = path.rfind('/');
    if (slash == std::string::npos) {
        scratch = path.empty() ? "." : path;
        return {rootFd_, scratch.c_str()};
    }
    scratch = path.substr(slash + 1);
    if (!cacheValid_ || path.compare(0, slash, cachedDir_) != 0 || cachedDir_.size() != slash) {
        if (cachedFd_ >= 0) {
            ::close(cachedFd_);
        }
        cachedDir_.assign(path, 0, slash);
        cachedFd_ = rootFd_ < 0 ? -1
                                : openBeneath(rootFd_, cachedDir_.c_str(),
                                              O_PATH | O_DIRECTORY | O_CLOEXEC);
        cacheValid_ = true;
    }
    return {cachedFd_, scratch.c_str()};
}

ports::Read<std::string> SysfsReader::readText(const std::string& path) const {
    auto bytes = readBinary(path, kMaxText);
    if (!bytes) {
        return {std::nullopt, std::move(bytes.note)};
    }
    std::string s(bytes->begin(), bytes->end());
    while (!s.empty() && (s.back() == '\n' || s.back() == '\0')) {
        s.pop_back();
    }
    return {std::move(s), std::move(bytes.note)};
}

namespace {

// What a file that is no attribute is, in words; empty for a regular file.
std::string notAFile(mode_t mode) {
    if (S_ISREG(mode)) {
        return {};
    }
    const char* what = S_ISDIR(mode)    ? "a directory"
                       : S_ISFIFO(mode) ? "a FIFO"
                       : S_ISCHR(mode)  ? "a character device"
                       : S_ISBLK(mode)  ? "a block device"
                       : S_ISSOCK(mode) ? "a socket"
                                        : "not a file";
    return std::string(what) + ", not a regular file: not read";
}

} // namespace

ports::Read<std::vector<uint8_t>> SysfsReader::readBinary(const std::string& path,
                                                          size_t maxBytes) const {
    std::string name;
    At at = resolve(path, name);
    if (at.dirFd < 0) {
        return std::nullopt;
    }
    // O_NONBLOCK: a FIFO opens without a writer and a device without waiting;
    // what was opened is then checked before anything is read from it.
    ports::UniqueFd fd(
        openBeneath(at.dirFd, at.name, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK));
    struct stat st {};
    if (fd.get() < 0 && errno == EXDEV) {
        // Neither its bytes nor where it leads are anything to quote.
        return {std::nullopt, "a link leading outside the sysfs root: not read"};
    }
    if (fd.get() < 0) {
        // A socket cannot be opened at all: say what is there instead.
        if (errno != ENOENT && ::fstatat(at.dirFd, at.name, &st, 0) == 0) {
            return {std::nullopt, notAFile(st.st_mode)};
        }
        return std::nullopt;
    }
    if (::fstat(fd.get(), &st) != 0) {
        return std::nullopt;
    }
    if (auto what = notAFile(st.st_mode); !what.empty()) {
        return {std::nullopt, std::move(what)};
    }
    // One byte more than asked tells whether the file goes on.
    std::vector<uint8_t> out;
    if (!readAll(fd.get(), out, maxBytes + 1)) {
        return std::nullopt;
    }
    if (out.size() <= maxBytes) {
        return out;
    }
    out.resize(maxBytes);
    std::string note = "cut at " + std::to_string(maxBytes) + " bytes";
    if (static_cast<uint64_t>(st.st_size) > maxBytes) {
        note += " of " + std::to_string(st.st_size);
    }
    return {std::move(out), std::move(note)};
}

std::optional<std::vector<std::string>> SysfsReader::list(const std::string& path) const {
    if (rootFd_ < 0) {
        return std::nullopt;
    }
    ports::UniqueFd fd(openBeneath(rootFd_, path.empty() ? "." : path.c_str(),
                                   O_RDONLY | O_DIRECTORY | O_CLOEXEC));
    if (fd.get() < 0) {
        return std::nullopt;
    }
    // getdents64 straight into a buffer: no DIR stream and its extra calls.
    struct LinuxDirent64 {
        uint64_t ino;
        int64_t off;
        unsigned short reclen;
        unsigned char type;
        char name[1];
    };
    std::vector<std::string> names;
    std::array<char, 32768> buf{};
    for (;;) {
        long n = ::syscall(SYS_getdents64, fd.get(), buf.data(), buf.size());
        if (n < 0) {
            if (errno == EINTR) {
                continue;
            }
            return std::nullopt;
        }
        if (n == 0) {
            break;
        }
        for (long pos = 0; pos < n;) {
            const auto* e = reinterpret_cast<const LinuxDirent64*>(buf.data() + pos);
            if (e->reclen == 0) {
                break;
            }
            std::string_view name(e->name);
            if (name != "." && name != "..") {
                names.emplace_back(name);
            }
            pos += e->reclen;
        }
    }
    std::sort(names.begin(), names.end());
    // The directory just listed is likely the next one read from: keep it.
    if (cachedFd_ >= 0) {
        ::close(cachedFd_);
    }
    cachedDir_ = path;
    cachedFd_ = fd.release();
    cacheValid_ = true;
    return names;
}

std::optional<std::string> SysfsReader::readLink(const std::string& path) const {
    std::string name;
    At at = resolve(path, name);
    if (at.dirFd < 0) {
        return std::nullopt;
    }
    std::array<char, 4096> buf{};
    ssize_t n = ::readlinkat(at.dirFd, at.name, buf.data(), buf.size() - 1);
    if (n < 0) {
        return std::nullopt;
    }
    return std::string(buf.data(), static_cast<size_t>(n));
}

bool SysfsReader::exists(const std::string& path) const {
    std::string name;
    At at = resolve(path, name);
    struct stat st {};
    return at.dirFd >= 0 && ::fstatat(at.dirFd, at.name, &st, 0) == 0;
}

} // namespace svad::linux_impl
