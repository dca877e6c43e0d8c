// The linux sysfs reader on generated trees holding what no sysfs attribute
// is: FIFOs, sockets, huge files. Discovery must finish and say what it found.
#include "scratch_dir.h"
#include "svad/core/discovery.h"
#include "svad/hostgen/hostgen.h"
#include "svad/linux/sysfs_reader.h"

#include <atomic>
#include <chrono>
#include <fcntl.h>
#include <filesystem>
#include <fstream>
#include <future>
#include <gtest/gtest.h>
#include <stdexcept>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <thread>
#include <unistd.h>

namespace svad {
namespace {

namespace fs = std::filesystem;

// A scratch directory of this file's tests.
class Dir : public test::ScratchDir {
public:
    Dir() : ScratchDir("svad-reader-test") {}
};

hostgen::HostSpec host() {
    using namespace hostgen;
    HostSpec h;
    h.name = "reader";
    h.units.push_back(UnitSpec{"dmar0", 0x00d2008c40660462ULL, 0xf0ULL, "6:0"});
    h.groups.push_back(GroupSpec{1, "DMA", {}});
    h.groups.push_back(GroupSpec{2, "DMA", {}});
    DeviceSpec gpu;
    gpu.address = "0000:17:00.0";
    gpu.device = 0x2236;
    gpu.driver = "vfio-pci";
    gpu.group = 1;
    gpu.iommu = "dmar0";
    h.devices.push_back(gpu);
    DeviceSpec nvme;
    nvme.address = "0000:5e:00.0";
    nvme.driver = "nvme";
    nvme.group = 2;
    nvme.iommu = "dmar0";
    h.devices.push_back(nvme);
    return h;
}

// The file an attribute path leads to in the generated tree (through its links).
std::string resolved(const std::string& sys, const std::string& rel) {
    return fs::canonical(fs::path(sys) / rel).string();
}

void replaceWithFifo(const std::string& path) {
    fs::remove(path);
    ASSERT_EQ(::mkfifo(path.c_str(), 0644), 0) << path;
}

// Discovery on another thread: a reader that blocks on a FIFO fails the test
// instead of hanging it (the FIFOs are then opened for writing and closed, which
// ends the blocked read).
core::Host discoverWithin(const std::string& sys, const std::vector<std::string>& fifos) {
    std::promise<core::Host> result;
    auto done = result.get_future();
    std::thread t(
        [&sys, &result] { result.set_value(core::discover(linux_impl::SysfsReader(sys))); });
    if (done.wait_for(std::chrono::seconds(10)) != std::future_status::ready) {
        ADD_FAILURE() << "discovery blocked on a FIFO";
        while (done.wait_for(std::chrono::milliseconds(50)) != std::future_status::ready) {
            for (const auto& f : fifos) {
                int fd = ::open(f.c_str(), O_WRONLY | O_NONBLOCK | O_CLOEXEC);
                if (fd >= 0) {
                    ::close(fd);
                }
            }
        }
    }
    t.join();
    return done.get();
}

const core::PciDevice& device(const core::Host& h, const std::string& address) {
    for (const auto& d : h.devices) {
        if (d.address == address) {
            return d;
        }
    }
    throw std::runtime_error("no " + address);
}

bool anyContains(const std::vector<std::string>& v, const std::string& needle) {
    for (const auto& s : v) {
        if (s.find(needle) != std::string::npos) {
            return true;
        }
    }
    return false;
}

TEST(SysfsReader, FifosAndSocketsAreRefusedWithWhatTheyAre) {
    Dir dir;
    hostgen::writeTree(host(), dir.path());
    const std::string sys = dir.path() + "/sys";
    const std::string vendor = resolved(sys, "bus/pci/devices/0000:17:00.0/vendor");
    const std::string config = resolved(sys, "bus/pci/devices/0000:5e:00.0/config");
    replaceWithFifo(vendor);
    replaceWithFifo(config);
    // A socket where the group's type belongs.
    const std::string type = resolved(sys, "kernel/iommu_groups/2/type");
    fs::remove(type);
    int sock = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    ASSERT_GE(sock, 0);
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    ASSERT_LT(type.size(), sizeof(addr.sun_path));
    std::copy(type.begin(), type.end(), addr.sun_path);
    ASSERT_EQ(::bind(sock, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
    ::close(sock);

    const core::Host h = discoverWithin(sys, {vendor, config});
    ASSERT_EQ(h.devices.size(), 2U);
    EXPECT_TRUE(
        anyContains(device(h, "0000:17:00.0").warnings, "vendor: a FIFO, not a regular file"));
    EXPECT_TRUE(
        anyContains(device(h, "0000:5e:00.0").warnings, "config: a FIFO, not a regular file"));
    ASSERT_EQ(h.groups.size(), 2U);
    EXPECT_TRUE(anyContains(h.groups[1].warnings, "type: a socket, not a regular file"));
    // Everything else of the functions was still read.
    EXPECT_EQ(device(h, "0000:17:00.0").device, 0x2236);
    EXPECT_EQ(device(h, "0000:5e:00.0").driver, "nvme");
}

TEST(SysfsReader, AHugeAttributeIsCutWithANoteAndFewWarnings) {
    Dir dir;
    hostgen::writeTree(host(), dir.path());
    const std::string sys = dir.path() + "/sys";
    {
        std::ofstream out(resolved(sys, "kernel/iommu_groups/1/reserved_regions"), std::ios::trunc);
        const std::string line = "garbage line\n";
        for (size_t n = 0; n < (1U << 20); n += line.size()) {
            out << line;
        }
    }
    const auto size = fs::file_size(resolved(sys, "kernel/iommu_groups/1/reserved_regions"));
    const core::Host h = core::discover(linux_impl::SysfsReader(sys));
    ASSERT_EQ(h.groups.size(), 2U);
    const auto& w = h.groups[0].warnings;
    EXPECT_LE(w.size(), 16U);
    EXPECT_TRUE(anyContains(w, "reserved_regions: cut at 65536 bytes of " + std::to_string(size)));
    EXPECT_TRUE(anyContains(w, "more warnings not shown"));
}

TEST(SysfsReader, NothingOutsideTheRootIsReadOrQuoted) {
    Dir dir;
    hostgen::writeTree(host(), dir.path() + "/host");
    const std::string sys = dir.path() + "/host/sys";
    const std::string secret = dir.path() + "/secret-file";
    std::ofstream(secret) << "s3cr3t-bytes\n";
    fs::create_directory(dir.path() + "/secret-dir");
    // An absolute link, a relative one that climbs out, and a group link outside.
    const std::string vendor = resolved(sys, "bus/pci/devices/0000:17:00.0/vendor");
    fs::remove(vendor);
    fs::create_symlink(secret, vendor);
    const std::string deviceId = resolved(sys, "bus/pci/devices/0000:5e:00.0/device");
    fs::remove(deviceId);
    fs::create_symlink(fs::relative(secret, fs::path(deviceId).parent_path()), deviceId);
    const fs::path group = fs::path(resolved(sys, "bus/pci/devices/0000:5e:00.0")) / "iommu_group";
    fs::remove(group);
    fs::create_symlink(dir.path() + "/secret-dir", group);

    const core::Host h = core::discover(linux_impl::SysfsReader(sys));
    EXPECT_TRUE(anyContains(device(h, "0000:17:00.0").warnings,
                            "vendor: a link leading outside the sysfs root: not read"));
    EXPECT_TRUE(anyContains(device(h, "0000:5e:00.0").warnings,
                            "device: a link leading outside the sysfs root: not read"));
    std::vector<std::string> all = h.warnings;
    for (const auto& d : h.devices) {
        all.insert(all.end(), d.warnings.begin(), d.warnings.end());
    }
    for (const auto& g : h.groups) {
        all.insert(all.end(), g.warnings.begin(), g.warnings.end());
    }
    EXPECT_FALSE(anyContains(all, "s3cr3t"));
    EXPECT_FALSE(anyContains(all, "secret"));
}

// A rename anywhere on the host while a path with ".." is walked makes openat2's
// RESOLVE_BENEATH give up with EAGAIN ("retry"): every device link in sysfs
// climbs, so a busy host must not turn that into a missing attribute.
TEST(SysfsReader, RenamesElsewhereOnTheHostDoNotHideAnything) {
    Dir dir;
    hostgen::HostSpec h = host();
    h.devices[0].vfio = 0;
    hostgen::writeTree(h, dir.path() + "/host");
    const std::string sys = dir.path() + "/host/sys";
    const std::string a = dir.path() + "/a";
    const std::string b = dir.path() + "/b";
    std::ofstream(a) << "x";
    std::atomic<bool> stop{false};
    std::thread renamer([&] {
        while (!stop.load()) {
            (void)::rename(a.c_str(), b.c_str());
            (void)::rename(b.c_str(), a.c_str());
        }
    });
    const linux_impl::SysfsReader reader(sys);
    int missing = 0;
    for (int i = 0; i < 20000; ++i) {
        // Through the climbing link each time: list() keeps no directory it could reuse.
        auto v = reader.list("bus/pci/devices/0000:17:00.0/vfio-dev");
        if (!v || v->size() != 1) {
            ++missing;
        }
        if (!reader.readText("bus/pci/devices/0000:5e:00.0/vendor")) {
            ++missing;
        }
    }
    stop = true;
    renamer.join();
    EXPECT_EQ(missing, 0);
}

} // namespace
} // namespace svad
