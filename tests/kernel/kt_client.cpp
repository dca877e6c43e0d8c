// kt-client: the VMM side of the real-kernel tier. It receives the fds that
// svad hands out (through `svactl exec`) and does with them what a VMM does,
// with the uAPI headers of the kernel it runs on (make headers_install):
//
//   kt-client handoff IOMMUFD DEVFD [--hold]
//       VFIO_DEVICE_BIND_IOMMUFD, IOMMU_GET_HW_INFO, IOMMU_IOAS_ALLOC,
//       VFIO_DEVICE_ATTACH_IOMMUFD_PT and IOMMU_IOAS_MAP of a 1 MiB buffer;
//       with --hold it then waits, holding every object, until it is killed.
//   kt-client attached IOMMUFD DEVFD IOAS_ID
//       IOMMU_IOAS_MAP of a 1 MiB buffer into the IOAS that svad attached the
//       device to, and a check that the device is bound already.
//   kt-client vdpa VHOSTFD
//       VHOST_VDPA_GET_DEVICE_ID, VHOST_VDPA_GET_GROUP_NUM, VHOST_VDPA_GET_AS_NUM.
//   kt-client qmp SECONDS -- COMMAND ARGS...
//       runs COMMAND (a QEMU with -qmp stdio, or svactl exec of one) with its
//       stdin and stdout on pipes and drives QMP there: qmp_capabilities,
//       query-pci (one "pci VENDOR:DEVICE" line per function), quit; prints
//       the milliseconds from the start of COMMAND to the greeting and to the
//       query-pci answer, and COMMAND's exit status. COMMAND is killed when
//       it is not done within SECONDS.
//
// Each step prints one "step NAME: result" line on stdout; the first failing
// step prints "kt-client: NAME: why" on stderr and the exit status is 1 (2 for
// a usage error).

// virtio_ring.h's legacy vring helpers are C, not C++; vhost.h needs none of them.
#define VIRTIO_RING_NO_LEGACY
#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fcntl.h>
#include <linux/iommufd.h>
#include <linux/vfio.h>
#include <linux/vhost.h>
#include <poll.h>
#include <signal.h>
#include <string>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <vector>

namespace {

constexpr size_t kMapSize = 1 << 20;

[[noreturn]] void die(const std::string& step, const std::string& why) {
    (void)std::fflush(stdout);
    (void)std::fprintf(stderr, "kt-client: %s: %s\n", step.c_str(), why.c_str());
    std::exit(1);
}

[[noreturn]] void usage() {
    (void)std::fprintf(stderr, "usage: kt-client handoff IOMMUFD DEVFD [--hold]\n"
                               "       kt-client attached IOMMUFD DEVFD IOAS_ID\n"
                               "       kt-client vdpa VHOSTFD\n"
                               "       kt-client qmp SECONDS -- COMMAND ARGS...\n");
    std::exit(2);
}

std::string errText(int err) {
    return std::string(std::strerror(err)) + " (errno " + std::to_string(err) + ")";
}

int ioctlRetry(int fd, unsigned long request, void* arg) {
    int r = 0;
    do {
        r = ::ioctl(fd, request, arg);
    } while (r < 0 && errno == EINTR);
    return r < 0 ? errno : 0;
}

void step(const char* name, const std::string& result) {
    std::printf("step %s: %s\n", name, result.c_str());
    (void)std::fflush(stdout);
}

int parseFd(const char* text, const char* what) {
    char* end = nullptr;
    long v = std::strtol(text, &end, 10);
    if (end == text || *end != '\0' || v < 0 || v > 1 << 20) {
        die("arguments", std::string(what) + " '" + text + "' is not a number");
    }
    struct stat st {};
    if (::fstat(static_cast<int>(v), &st) != 0) {
        die("arguments", std::string(what) + " " + text + " is not an open fd: " + errText(errno));
    }
    return static_cast<int>(v);
}

// The target of /proc/self/fd/N, to show which node an fd is.
std::string fdTarget(int fd) {
    char buf[256];
    std::string link = "/proc/self/fd/" + std::to_string(fd);
    ssize_t n = ::readlink(link.c_str(), buf, sizeof(buf) - 1);
    if (n <= 0) {
        return "?";
    }
    return std::string(buf, static_cast<size_t>(n));
}

void checkFd(int fd, const char* what, const char* expected) {
    std::string target = fdTarget(fd);
    if (target.find(expected) == std::string::npos) {
        die("fds", std::string(what) + " fd " + std::to_string(fd) + " is " + target + ", not " +
                       expected);
    }
    step("fds", std::string(what) + " fd " + std::to_string(fd) + " -> " + target);
}

uint32_t bind(int devFd, int iommufd) {
    vfio_device_bind_iommufd b{};
    b.argsz = sizeof(b);
    b.flags = 0;
    b.iommufd = iommufd;
    if (int err = ioctlRetry(devFd, VFIO_DEVICE_BIND_IOMMUFD, &b)) {
        die("VFIO_DEVICE_BIND_IOMMUFD", errText(err));
    }
    step("VFIO_DEVICE_BIND_IOMMUFD", "dev_id " + std::to_string(b.out_devid));
    return b.out_devid;
}

// IOMMU_GET_HW_INFO with the VT-d data; then what the kernel says of the byte
// that Linux 6.15 made out_max_pasid_log2 (offset 28, a reserved u32 before):
// a kernel without the field refuses a non-zero byte there with EOPNOTSUPP.
void hwInfo(int iommufd, uint32_t devId) {
    iommu_hw_info_vtd vtd{};
    iommu_hw_info h{};
    h.size = sizeof(h);
    h.dev_id = devId;
    h.data_len = sizeof(vtd);
    h.data_uptr = reinterpret_cast<uintptr_t>(&vtd);
    if (int err = ioctlRetry(iommufd, IOMMU_GET_HW_INFO, &h)) {
        die("IOMMU_GET_HW_INFO", errText(err));
    }
    char line[160];
    (void)std::snprintf(line, sizeof(line),
                        "type %u cap 0x%016llx ecap 0x%016llx capabilities 0x%llx", h.out_data_type,
                        static_cast<unsigned long long>(vtd.cap_reg),
                        static_cast<unsigned long long>(vtd.ecap_reg),
                        static_cast<unsigned long long>(h.out_capabilities));
    step("IOMMU_GET_HW_INFO", line);

    static_assert(sizeof(iommu_hw_info) >= 32, "iommu_hw_info is at least 32 bytes");
    constexpr size_t kPasidByte = 28;
    iommu_hw_info p{};
    p.size = sizeof(p);
    p.dev_id = devId;
    unsigned char* raw = reinterpret_cast<unsigned char*>(&p);
    raw[kPasidByte] = 0xff;
    int err = ioctlRetry(iommufd, IOMMU_GET_HW_INFO, &p);
    if (err == EOPNOTSUPP) {
        step("max_pasid_log2", "none (this kernel has no out_max_pasid_log2)");
    } else if (err == 0) {
        step("max_pasid_log2", std::to_string(raw[kPasidByte]));
    } else {
        die("max_pasid_log2", "IOMMU_GET_HW_INFO: " + errText(err));
    }
    // Whether the VFIO of this kernel attaches PASIDs: its own uAPI headers say.
#ifdef VFIO_DEVICE_ATTACH_PASID
    step("vfio_attach_pasid", "yes (VFIO_DEVICE_ATTACH_PASID in this kernel's linux/vfio.h)");
#else
    step("vfio_attach_pasid", "no (no VFIO_DEVICE_ATTACH_PASID in this kernel's linux/vfio.h)");
#endif
}

// Maps a fresh 1 MiB buffer into `ioas` at an IOVA the kernel picks, then unmaps it.
void mapBuffer(int iommufd, uint32_t ioas) {
    void* buf =
        ::mmap(nullptr, kMapSize, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (buf == MAP_FAILED) {
        die("mmap", errText(errno));
    }
    std::memset(buf, 0x5a, kMapSize);
    iommu_ioas_map m{};
    m.size = sizeof(m);
    m.flags = IOMMU_IOAS_MAP_READABLE | IOMMU_IOAS_MAP_WRITEABLE;
    m.ioas_id = ioas;
    m.user_va = reinterpret_cast<uintptr_t>(buf);
    m.length = kMapSize;
    if (int err = ioctlRetry(iommufd, IOMMU_IOAS_MAP, &m)) {
        die("IOMMU_IOAS_MAP", "ioas " + std::to_string(ioas) + ": " + errText(err));
    }
    char line[96];
    (void)std::snprintf(line, sizeof(line), "ioas %u: 1 MiB at iova 0x%llx", ioas,
                        static_cast<unsigned long long>(m.iova));
    step("IOMMU_IOAS_MAP", line);

    iommu_ioas_unmap u{};
    u.size = sizeof(u);
    u.ioas_id = ioas;
    u.iova = m.iova;
    u.length = kMapSize;
    if (int err = ioctlRetry(iommufd, IOMMU_IOAS_UNMAP, &u)) {
        die("IOMMU_IOAS_UNMAP", errText(err));
    }
    if (u.length != kMapSize) {
        die("IOMMU_IOAS_UNMAP", "unmapped " + std::to_string(u.length) + " bytes, not 1 MiB");
    }
    step("IOMMU_IOAS_UNMAP", "1 MiB");
    // A second mapping stays while the process lives (for --hold).
    if (int err = ioctlRetry(iommufd, IOMMU_IOAS_MAP, &m)) {
        die("IOMMU_IOAS_MAP", "again: " + errText(err));
    }
}

int handoff(int iommufd, int devFd, bool hold) {
    checkFd(iommufd, "iommufd", "/dev/iommu");
    checkFd(devFd, "device", "/dev/vfio/devices/vfio");
    uint32_t devId = bind(devFd, iommufd);
    hwInfo(iommufd, devId);

    iommu_ioas_alloc a{};
    a.size = sizeof(a);
    if (int err = ioctlRetry(iommufd, IOMMU_IOAS_ALLOC, &a)) {
        die("IOMMU_IOAS_ALLOC", errText(err));
    }
    step("IOMMU_IOAS_ALLOC", "ioas " + std::to_string(a.out_ioas_id));

    vfio_device_attach_iommufd_pt at{};
    at.argsz = sizeof(at);
    at.pt_id = a.out_ioas_id;
    if (int err = ioctlRetry(devFd, VFIO_DEVICE_ATTACH_IOMMUFD_PT, &at)) {
        die("VFIO_DEVICE_ATTACH_IOMMUFD_PT", errText(err));
    }
    step("VFIO_DEVICE_ATTACH_IOMMUFD_PT", "pt " + std::to_string(at.pt_id));

    mapBuffer(iommufd, a.out_ioas_id);
    if (hold) {
        step("hold", "pid " + std::to_string(::getpid()));
        for (;;) {
            ::pause();
        }
    }
    return 0;
}

int attached(int iommufd, int devFd, uint32_t ioas) {
    checkFd(iommufd, "iommufd", "/dev/iommu");
    checkFd(devFd, "device", "/dev/vfio/devices/vfio");
    // svad bound the device: a second bind must be refused.
    vfio_device_bind_iommufd b{};
    b.argsz = sizeof(b);
    b.iommufd = iommufd;
    int err = ioctlRetry(devFd, VFIO_DEVICE_BIND_IOMMUFD, &b);
    if (err == 0) {
        die("VFIO_DEVICE_BIND_IOMMUFD", "the device was not bound by svad: a bind succeeded");
    }
    step("VFIO_DEVICE_BIND_IOMMUFD", "refused as expected: " + errText(err));
    mapBuffer(iommufd, ioas);
    return 0;
}

int vdpa(int fd) {
    checkFd(fd, "vhost-vdpa", "/dev/vhost-vdpa-");
    uint32_t id = 0;
    if (int err = ioctlRetry(fd, VHOST_VDPA_GET_DEVICE_ID, &id)) {
        die("VHOST_VDPA_GET_DEVICE_ID", errText(err));
    }
    step("VHOST_VDPA_GET_DEVICE_ID", std::to_string(id));
    uint32_t groups = 0;
    if (int err = ioctlRetry(fd, VHOST_VDPA_GET_GROUP_NUM, &groups)) {
        die("VHOST_VDPA_GET_GROUP_NUM", errText(err));
    }
    step("VHOST_VDPA_GET_GROUP_NUM", std::to_string(groups));
    uint32_t as = 0;
    if (int err = ioctlRetry(fd, VHOST_VDPA_GET_AS_NUM, &as)) {
        die("VHOST_VDPA_GET_AS_NUM", errText(err));
    }
    step("VHOST_VDPA_GET_AS_NUM", std::to_string(as));
    if (groups == 0 || as == 0) {
        die("vdpa", "a vDPA device has at least one group and one address space");
    }
    return 0;
}

// ---- qmp ---------------------------------------------------------------------

int64_t nowMs() {
    timespec ts{};
    ::clock_gettime(CLOCK_MONOTONIC, &ts);
    return static_cast<int64_t>(ts.tv_sec) * 1000 + ts.tv_nsec / 1000000;
}

// One QEMU on two pipes: its lines in, commands out, within one deadline.
class Qmp {
public:
    Qmp(char** command, int seconds) : start_(nowMs()), deadline_(start_ + seconds * 1000LL) {
        int in[2];
        int out[2];
        if (::pipe2(in, O_CLOEXEC) != 0 || ::pipe2(out, O_CLOEXEC) != 0) {
            die("pipe", errText(errno));
        }
        pid_ = ::fork();
        if (pid_ < 0) {
            die("fork", errText(errno));
        }
        if (pid_ == 0) {
            ::signal(SIGPIPE, SIG_DFL);
            // dup2 clears close-on-exec on the copies: COMMAND gets only these two.
            if (::dup2(in[0], STDIN_FILENO) < 0 || ::dup2(out[1], STDOUT_FILENO) < 0) {
                _exit(127);
            }
            ::execvp(command[0], command);
            (void)std::fprintf(stderr, "kt-client: exec %s: %s\n", command[0],
                               std::strerror(errno));
            _exit(127);
        }
        ::close(in[0]);
        ::close(out[1]);
        to_ = in[1];
        from_ = out[0];
        step("spawn", "pid " + std::to_string(pid_) + " " + command[0]);
    }

    int64_t elapsed() const { return nowMs() - start_; }

    void send(const std::string& execute) {
        const std::string line = "{\"execute\": \"" + execute + "\"}\n";
        if (::write(to_, line.data(), line.size()) != static_cast<ssize_t>(line.size())) {
            fail("send " + execute, errText(errno));
        }
    }

    // The next line that `want` starts; events in between are skipped, an
    // error answer ends the run.
    std::string expect(const std::string& what, const std::string& want) {
        for (;;) {
            std::string line = readLine(what);
            if (line.rfind(want, 0) == 0) {
                return line;
            }
            if (line.rfind("{\"error\"", 0) == 0) {
                fail(what, line);
            }
        }
    }

    // After quit: QEMU closes its end and exits.
    int finish() {
        ::close(to_);
        to_ = -1;
        std::string rest;
        while (readLineOrEof("exit", rest)) {
        }
        int status = 0;
        for (;;) {
            pid_t r = ::waitpid(pid_, &status, WNOHANG);
            if (r == pid_) {
                break;
            }
            if (r < 0 || nowMs() > deadline_) {
                fail("exit", "pid " + std::to_string(pid_) + " did not exit after quit");
            }
            ::usleep(10000);
        }
        pid_ = -1;
        return status;
    }

    [[noreturn]] void fail(const std::string& what, const std::string& why) {
        if (pid_ > 0) {
            ::kill(pid_, SIGKILL);
            ::waitpid(pid_, nullptr, 0);
        }
        die("qmp " + what, why);
    }

private:
    bool readLineOrEof(const std::string& what, std::string& line) {
        for (;;) {
            size_t nl = buf_.find('\n');
            if (nl != std::string::npos) {
                line = buf_.substr(0, nl);
                buf_.erase(0, nl + 1);
                return true;
            }
            int64_t left = deadline_ - nowMs();
            if (left <= 0) {
                fail(what, "no answer within the deadline (" + std::to_string(elapsed()) +
                               " ms); last output: " + buf_.substr(0, 200));
            }
            pollfd p{from_, POLLIN, 0};
            int r = ::poll(&p, 1, static_cast<int>(left));
            if (r < 0 && errno != EINTR) {
                fail(what, "poll: " + errText(errno));
            }
            if (r <= 0) {
                continue;
            }
            char chunk[4096];
            ssize_t n = ::read(from_, chunk, sizeof(chunk));
            if (n < 0 && errno != EINTR) {
                fail(what, "read: " + errText(errno));
            }
            if (n == 0) {
                return false;
            }
            if (n > 0) {
                buf_.append(chunk, static_cast<size_t>(n));
            }
        }
    }

    std::string readLine(const std::string& what) {
        std::string line;
        if (!readLineOrEof(what, line)) {
            int status = 0;
            ::waitpid(pid_, &status, 0);
            pid_ = -1;
            die("qmp " + what, "the command closed its QMP output (exit status " +
                                   std::to_string(WIFEXITED(status) ? WEXITSTATUS(status)
                                                                    : 128 + WTERMSIG(status)) +
                                   ")");
        }
        return line;
    }

    int64_t start_;
    int64_t deadline_;
    pid_t pid_ = -1;
    int to_ = -1;
    int from_ = -1;
    std::string buf_;
};

// The number after `"key": ` in `text` from `from`, or -1.
long jsonNumber(const std::string& text, size_t from, size_t to, const std::string& key) {
    size_t at = text.find("\"" + key + "\": ", from);
    if (at == std::string::npos || at > to) {
        return -1;
    }
    return std::strtol(text.c_str() + at + key.size() + 4, nullptr, 10);
}

int qmp(char** command, int seconds) {
    // A QEMU that dies early makes a write fail with EPIPE, which is reported.
    ::signal(SIGPIPE, SIG_IGN);
    Qmp q(command, seconds);
    q.expect("greeting", "{\"QMP\"");
    step("qmp-greeting", std::to_string(q.elapsed()) + " ms");
    q.send("qmp_capabilities");
    q.expect("qmp_capabilities", "{\"return\"");
    q.send("query-pci");
    std::string pci = q.expect("query-pci", "{\"return\"");
    step("query-pci", std::to_string(q.elapsed()) + " ms");
    // Each function's ids are the object "id": {...} (vendor, device, subsystem ...).
    size_t at = 0;
    while ((at = pci.find("\"id\": {", at)) != std::string::npos) {
        size_t end = pci.find('}', at);
        long vendor = jsonNumber(pci, at, end, "vendor");
        long device = jsonNumber(pci, at, end, "device");
        char line[32];
        (void)std::snprintf(line, sizeof(line), "pci %04lx:%04lx\n", vendor, device);
        std::fputs(line, stdout);
        at = end;
    }
    // QEMU answers quit and exits; the answer may not make it out first.
    q.send("quit");
    int status = q.finish();
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
        die("exit", "status " + std::to_string(WIFEXITED(status) ? WEXITSTATUS(status)
                                                                 : 128 + WTERMSIG(status)));
    }
    step("exit", "status 0 after " + std::to_string(q.elapsed()) + " ms");
    return 0;
}

} // namespace

int main(int argc, char** argv) {
    if (argc < 2) {
        usage();
    }
    const std::string cmd = argv[1];
    if (cmd == "handoff" && (argc == 4 || (argc == 5 && std::string(argv[4]) == "--hold"))) {
        return handoff(parseFd(argv[2], "iommufd"), parseFd(argv[3], "device"), argc == 5);
    }
    if (cmd == "attached" && argc == 5) {
        char* end = nullptr;
        unsigned long ioas = std::strtoul(argv[4], &end, 10);
        if (end == argv[4] || *end != '\0' || ioas == 0 || ioas > UINT32_MAX) {
            die("arguments", std::string("IOAS_ID '") + argv[4] + "' is not an IOAS ID");
        }
        return attached(parseFd(argv[2], "iommufd"), parseFd(argv[3], "device"),
                        static_cast<uint32_t>(ioas));
    }
    if (cmd == "vdpa" && argc == 3) {
        return vdpa(parseFd(argv[2], "vhost-vdpa"));
    }
    if (cmd == "qmp" && argc >= 5 && std::string(argv[3]) == "--") {
        char* end = nullptr;
        long seconds = std::strtol(argv[2], &end, 10);
        if (end == argv[2] || *end != '\0' || seconds <= 0 || seconds > 3600) {
            die("arguments", std::string("SECONDS '") + argv[2] + "' is not a number of seconds");
        }
        return qmp(argv + 4, static_cast<int>(seconds));
    }
    usage();
}
