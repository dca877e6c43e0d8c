// Hostile sysfs trees: every kind of entry where an attribute belongs (a
// character device, a socket, a 1 GiB sparse file, a link loop, a link out of
// the root, a 10,000-deep directory chain, numbers that overflow), and a tree
// that changes while it is scanned. svad must become ready, publish the rest,
// warn about each bad entry, and stop on SIGTERM within 2 s.
#include "fixture.h"

#include <atomic>
#include <chrono>
#include <csignal>
#include <fcntl.h>
#include <filesystem>
#include <fstream>
#include <gtest/gtest.h>
#include <map>
#include <string>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/un.h>
#include <thread>
#include <unistd.h>
#include <vector>

namespace svad::test {
namespace {

namespace fs = std::filesystem;
using Objects =
    std::map<sdbus::ObjectPath, std::map<std::string, std::map<std::string, sdbus::Variant>>>;

constexpr const char* kRoot = "/org/svad/Svad1";
constexpr const char* kManager = "org.svad.Svad1.Manager";
constexpr const char* kDevice = "org.svad.Svad1.Device";
constexpr int kDeep = 10000;

fs::path real(const std::string& sys, const std::string& rel) {
    return fs::canonical(fs::path(sys) / rel);
}

void writeFile(const fs::path& p, const std::string& bytes) {
    std::ofstream(p, std::ios::trunc | std::ios::binary) << bytes;
}

// A chain of `depth` directories named "d" under `dir`, made (and removed) with
// *at() calls: its path is longer than PATH_MAX.
void makeDeep(const fs::path& dir, int depth) {
    int fd = ::open(dir.c_str(), O_DIRECTORY | O_RDONLY | O_CLOEXEC);
    for (int i = 0; i < depth && fd >= 0; ++i) {
        (void)::mkdirat(fd, "d", 0755);
        const int next = ::openat(fd, "d", O_DIRECTORY | O_RDONLY | O_CLOEXEC);
        ::close(fd);
        fd = next;
    }
    if (fd >= 0) {
        ::close(fd);
    }
}

void removeDeep(const fs::path& dir) {
    // Walk down, then remove bottom-up, one level at a time.
    std::vector<int> fds;
    int fd = ::open(dir.c_str(), O_DIRECTORY | O_RDONLY | O_CLOEXEC);
    while (fd >= 0) {
        fds.push_back(fd);
        fd = ::openat(fd, "d", O_DIRECTORY | O_RDONLY | O_CLOEXEC);
    }
    for (auto it = fds.rbegin(); it != fds.rend(); ++it) {
        (void)::unlinkat(*it, "d", AT_REMOVEDIR);
        ::close(*it);
    }
}

// Every bad entry, each where svad reads an attribute of the bus tests' host.
void poison(const std::string& sys) {
    // A character device (/dev/null's numbers) for the GPU's vendor.
    const fs::path vendor = real(sys, "bus/pci/devices/0000:17:00.0/vendor");
    fs::remove(vendor);
    if (::mknod(vendor.c_str(), S_IFCHR | 0644, makedev(1, 3)) != 0) {
        throw std::runtime_error("mknod " + vendor.string() + " (the tests run as root)");
    }
    // A socket for the audio function's class.
    const fs::path cls = real(sys, "bus/pci/devices/0000:17:00.1/class");
    fs::remove(cls);
    // (Bound at a short path, sun_path being short, then moved into place.)
    char tmpl[] = "/tmp/svad-sock.XXXXXX";
    if (::mkdtemp(tmpl) == nullptr) {
        throw std::runtime_error("mkdtemp failed");
    }
    const std::string sock = std::string(tmpl) + "/s";
    const int s = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_un sa {};
    sa.sun_family = AF_UNIX;
    (void)std::snprintf(sa.sun_path, sizeof sa.sun_path, "%s", sock.c_str());
    const bool bound = ::bind(s, reinterpret_cast<struct sockaddr*>(&sa), sizeof sa) == 0;
    ::close(s);
    std::error_code ec;
    if (bound) {
        fs::rename(sock, cls, ec);
    }
    fs::remove_all(tmpl);
    if (!bound || ec) {
        throw std::runtime_error("cannot put a socket at " + cls.string());
    }
    // A 1 GiB sparse config space and reserved_regions.
    for (const char* attr :
         {"bus/pci/devices/0000:5e:00.0/config", "kernel/iommu_groups/1/reserved_regions"}) {
        const fs::path p = real(sys, attr);
        const int fd = ::open(p.c_str(), O_WRONLY | O_TRUNC | O_CLOEXEC);
        if (fd < 0 || ::ftruncate(fd, off_t{1} << 30) != 0) {
            throw std::runtime_error("cannot make " + p.string() + " sparse");
        }
        ::close(fd);
    }
    // A link loop for a driver, one out of the root for a group.
    const fs::path nvme = real(sys, "bus/pci/devices/0000:5e:00.0");
    fs::remove(nvme / "driver");
    fs::create_symlink("driver2", nvme / "driver");
    fs::create_symlink("driver", nvme / "driver2");
    fs::remove(nvme / "numa_node");
    fs::create_symlink("numa_node", nvme / "numa_node"); // loops on itself
    const fs::path audio = real(sys, "bus/pci/devices/0000:17:00.1");
    fs::remove(audio / "iommu_group");
    fs::create_symlink("/proc/self", audio / "iommu_group");
    // Numbers that overflow.
    writeFile(real(sys, "bus/pci/devices/0000:3b:00.0/sriov_numvfs"), "99999999999999999999999\n");
    writeFile(real(sys, "bus/pci/devices/0000:3b:00.0/numa_node"), "-9223372036854775809\n");
    writeFile(real(sys, "bus/pci/devices/0000:3b:00.0/device"), "0x1ffffffffffffffff\n");
    // A 10,000-deep directory beside the GPU's attributes.
    makeDeep(real(sys, "bus/pci/devices/0000:17:00.0"), kDeep);
}

bool anyWarning(const std::vector<std::string>& warnings, const std::string& needle) {
    for (const auto& w : warnings) {
        if (w.find(needle) != std::string::npos) {
            return true;
        }
    }
    return false;
}

std::vector<std::string> warningsOf(SvadFixture& f, const std::string& address) {
    std::string path = std::string(kRoot) + "/device/" + address;
    for (char& c : path) {
        c = (c == ':' || c == '.') ? '_' : c;
    }
    return f.property(path, kDevice, "Warnings").get<std::vector<std::string>>();
}

// SIGTERM, and how long svad took to exit (-1 ms: it did not within 10 s).
std::chrono::milliseconds stopTime(SvadFixture& f) {
    const auto start = std::chrono::steady_clock::now();
    f.svad().signal(SIGTERM);
    if (f.svad().wait(10000) == -1) {
        return std::chrono::milliseconds(-1);
    }
    return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() -
                                                                 start);
}

TEST(HostileTrees, EveryBadEntryIsAWarningAndTheRestIsPublished) {
    std::string sys;
    auto poisoned = [&sys](const std::string& root) {
        sys = root;
        poison(root);
    };
    SvadFixture f(testHost(), {}, {}, {}, poisoned);
    // Ready and answering, with every function published.
    EXPECT_EQ(f.property(kRoot, kManager, "DeviceCount").get<uint32_t>(), 7U) << f.svad().log();

    const auto gpu = warningsOf(f, "0000:17:00.0");
    EXPECT_TRUE(anyWarning(gpu, "vendor: a character device, not a regular file"))
        << ::testing::PrintToString(gpu);
    const auto audio = warningsOf(f, "0000:17:00.1");
    EXPECT_TRUE(anyWarning(audio, "class: a socket, not a regular file"))
        << ::testing::PrintToString(audio);
    EXPECT_TRUE(anyWarning(audio, "iommu_group")) << ::testing::PrintToString(audio);
    const auto nvme = warningsOf(f, "0000:5e:00.0");
    EXPECT_TRUE(anyWarning(nvme, "config: cut at 4096 bytes of 1073741824"))
        << ::testing::PrintToString(nvme);
    EXPECT_TRUE(anyWarning(nvme, "numa_node")) << ::testing::PrintToString(nvme);
    EXPECT_TRUE(anyWarning(nvme, "driver: the link does not lead into a drivers/ directory"))
        << ::testing::PrintToString(nvme);
    const auto nic = warningsOf(f, "0000:3b:00.0");
    EXPECT_TRUE(anyWarning(nic, "sriov_numvfs")) << ::testing::PrintToString(nic);
    EXPECT_TRUE(anyWarning(nic, "numa_node")) << ::testing::PrintToString(nic);
    EXPECT_TRUE(anyWarning(nic, "device")) << ::testing::PrintToString(nic);
    auto group = f.property("/org/svad/Svad1/group/1", "org.svad.Svad1.Group", "Warnings")
                     .get<std::vector<std::string>>();
    EXPECT_TRUE(anyWarning(group, "reserved_regions: cut at")) << ::testing::PrintToString(group);
    // A driver behind a link loop is no driver, and the good functions still go out.
    EXPECT_EQ(
        f.property("/org/svad/Svad1/device/0000_5e_00_0", kDevice, "Driver").get<std::string>(),
        "");
    auto a = allocateContext(*f.proxy(kRoot), "vm1", {"0000:3b:10.0"});
    f.proxy(kRoot)->callMethod("ReleaseContext").onInterface(kManager).withArguments(a.path);
    // A rescan reads it all again the same way.
    f.proxy(kRoot)->callMethod("Rescan").onInterface(kManager);
    EXPECT_TRUE(f.svad().running()) << f.svad().log();

    const auto took = stopTime(f);
    EXPECT_GE(took.count(), 0) << "svad did not stop on SIGTERM";
    EXPECT_LT(took.count(), 2000) << "svad took " << took.count() << " ms to stop";
    removeDeep(real(sys, "bus/pci/devices/0000:17:00.0"));
}

// Functions removed and put back in a loop while svad rescans again and again:
// each scan sees some state of the tree; svad keeps answering and ends with
// the tree as it is.
TEST(HostileTrees, ATreeThatChangesWhileItIsScanned) {
    SvadFixture f(testHost());
    const fs::path devices = fs::path(f.sysfs()) / "bus/pci/devices";
    const fs::path nvme = fs::canonical(devices / "0000:5e:00.0");
    const fs::path audio = fs::canonical(devices / "0000:17:00.1");
    const fs::path away = fs::path(f.root()) / "away";
    fs::create_directories(away);
    std::atomic<bool> stop{false};
    std::atomic<int> flips{0};
    std::thread churn([&] {
        while (!stop.load()) {
            for (const fs::path& dir : {nvme, audio}) {
                std::error_code ec;
                // Out of the tree and back, link and all, as a remove and an add would.
                fs::rename(dir, away / dir.filename(), ec);
                fs::rename(away / dir.filename(), dir, ec);
            }
            ++flips;
        }
    });
    int answered = 0;
    for (int i = 0; i < 40; ++i) {
        try {
            f.proxy(kRoot)->callMethod("Rescan").onInterface(kManager);
            ++answered;
        } catch (const sdbus::Error& e) {
            ADD_FAILURE() << "Rescan " << i << ": " << e.getMessage();
        }
    }
    stop = true;
    churn.join();
    EXPECT_EQ(answered, 40);
    EXPECT_GT(flips.load(), 0);
    EXPECT_TRUE(f.svad().running()) << f.svad().log();
    // Once the tree holds still, svad sees it whole.
    f.proxy(kRoot)->callMethod("Rescan").onInterface(kManager);
    EXPECT_EQ(f.property(kRoot, kManager, "DeviceCount").get<uint32_t>(), 7U);
    EXPECT_EQ(
        f.property("/org/svad/Svad1/device/0000_5e_00_0", kDevice, "Driver").get<std::string>(),
        "nvme");
    const auto took = stopTime(f);
    EXPECT_GE(took.count(), 0) << "svad did not stop on SIGTERM";
    EXPECT_LT(took.count(), 2000) << "svad took " << took.count() << " ms to stop";
}

} // namespace
} // namespace svad::test
