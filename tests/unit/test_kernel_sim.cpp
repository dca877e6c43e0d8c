// Unit tests of the simulated kernel: every semantic the header promises,
// with real memfds.
#include "../bus/acl_entries.h"
#include "scratch_dir.h"
#include "svad/sim/kernel_sim.h"

#include <cerrno>
#include <dirent.h>
#include <fcntl.h>
#include <filesystem>
#include <fstream>
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <map>
#include <set>
#include <sstream>
#include <string>
#include <sys/mman.h>
#include <sys/stat.h>
#include <thread>
#include <unistd.h>
#include <vector>

namespace {

using svad::ports::UniqueFd;
using svad::sim::KernelSim;
using svad::sim::SimConfig;

SimConfig testConfig() {
    SimConfig c;
    c.vfio = {{"vfio0", 20}, {"vfio1", 0}, {"vfio2", 8}};
    c.vhostVdpa = {{"vhost-vdpa-0", {2, 2}}, {"vhost-vdpa-1", {3, 1}}};
    c.workQueues = {"wq0.0", "wq0.1"};
    return c;
}

std::string fdLink(int fd) {
    char buf[512];
    const std::string path = "/proc/self/fd/" + std::to_string(fd);
    const ssize_t n = ::readlink(path.c_str(), buf, sizeof buf);
    return n > 0 ? std::string(buf, static_cast<size_t>(n)) : std::string();
}

size_t countFds() {
    size_t n = 0;
    DIR* d = ::opendir("/proc/self/fd");
    if (!d) {
        return 0;
    }
    while (const dirent* e = ::readdir(d)) {
        n += e->d_name[0] != '.';
    }
    ::closedir(d);
    return n - 1; // the directory's own fd
}

template <typename R> int errOf(const R& r) {
    return r.ok() ? 0 : r.error().err;
}

// An iommufd with one IOAS and one bound device, the usual starting point.
struct Bound {
    UniqueFd iommufd;
    uint32_t ioas = 0;
    UniqueFd dev;
    uint32_t devId = 0;
};

Bound bind(KernelSim& k, const std::string& name) {
    Bound b;
    auto fd = k.openIommufd();
    EXPECT_TRUE(fd.ok());
    b.iommufd = std::move(fd.value());
    auto ioas = k.ioasAlloc(b.iommufd.get());
    EXPECT_TRUE(ioas.ok());
    b.ioas = *ioas;
    auto dev = k.openVfioDevice(name);
    EXPECT_TRUE(dev.ok()) << dev.error().message;
    b.dev = std::move(dev.value());
    auto id = k.vfioBind(b.dev.get(), b.iommufd.get());
    EXPECT_TRUE(id.ok()) << id.error().message;
    b.devId = id.ok() ? *id : 0;
    return b;
}

// ---- fds ----------------------------------------------------------------------

TEST(KernelSim, FdsAreNamedCloexecMemfds) {
    KernelSim k(testConfig());
    auto iommufd = k.openIommufd();
    ASSERT_TRUE(iommufd.ok());
    const std::string link = fdLink(iommufd->get());
    EXPECT_NE(link.find("svad-sim:"), std::string::npos) << link;
    EXPECT_EQ(link.rfind("/memfd:svad-sim:iommufd:", 0), 0u) << link;
    EXPECT_NE(link.find(" (deleted)"), std::string::npos) << link;
    EXPECT_TRUE(::fcntl(iommufd->get(), F_GETFD) & FD_CLOEXEC);

    auto vfio = k.openVfioDevice("vfio2");
    ASSERT_TRUE(vfio.ok());
    EXPECT_EQ(fdLink(vfio->get()), "/memfd:svad-sim:vfio:vfio2 (deleted)");
    EXPECT_TRUE(::fcntl(vfio->get(), F_GETFD) & FD_CLOEXEC);

    auto vdpa = k.openVhostVdpa("vhost-vdpa-0");
    ASSERT_TRUE(vdpa.ok());
    EXPECT_EQ(fdLink(vdpa->get()), "/memfd:svad-sim:vhost-vdpa:vhost-vdpa-0 (deleted)");

    auto wq = k.openWorkQueue("wq0.1");
    ASSERT_TRUE(wq.ok());
    EXPECT_EQ(fdLink(wq->get()), "/memfd:svad-sim:wq:wq0.1 (deleted)");

    auto fq = k.faultQueueAlloc(iommufd->get());
    ASSERT_TRUE(fq.ok());
    // "svad-sim:fault:<iommufd instance>.<fault id>"
    const std::string prefix = link.substr(0, link.size() - std::string(" (deleted)").size());
    const std::string instance = prefix.substr(prefix.rfind(':') + 1);
    EXPECT_EQ(fdLink(fq->fd.get()),
              "/memfd:svad-sim:fault:" + instance + "." + std::to_string(fq->id) + " (deleted)");
    EXPECT_TRUE(::fcntl(fq->fd.get(), F_GETFD) & FD_CLOEXEC);
}

TEST(KernelSim, IommufdInstancesAreNumbered) {
    KernelSim k(testConfig());
    auto a = k.openIommufd();
    auto b = k.openIommufd();
    ASSERT_TRUE(a.ok() && b.ok());
    EXPECT_EQ(fdLink(a->get()), "/memfd:svad-sim:iommufd:1 (deleted)");
    EXPECT_EQ(fdLink(b->get()), "/memfd:svad-sim:iommufd:2 (deleted)");
}

TEST(KernelSim, ForeignFdsAreEbadf) {
    KernelSim k(testConfig());
    int p[2];
    ASSERT_EQ(::pipe2(p, O_CLOEXEC), 0);
    UniqueFd r(p[0]), w(p[1]);
    EXPECT_EQ(errOf(k.ioasAlloc(r.get())), EBADF);
    EXPECT_EQ(errOf(k.ioasAlloc(-1)), EBADF);
    EXPECT_EQ(errOf(k.ioasAlloc(987654)), EBADF); // not open
    EXPECT_EQ(errOf(k.vdpaGroupNum(r.get())), EBADF);
    EXPECT_EQ(errOf(k.vfioAttach(r.get(), 1, std::nullopt)), EBADF);
    // A memfd that merely looks like ours.
    UniqueFd fake(::memfd_create("svad-sim:iommufd:1", MFD_CLOEXEC));
    ASSERT_TRUE(fake.valid());
    EXPECT_EQ(errOf(k.ioasAlloc(fake.get())), EBADF);
    // Another sim's fds are not this one's.
    KernelSim other(testConfig());
    auto theirs = other.openIommufd();
    ASSERT_TRUE(theirs.ok());
    EXPECT_EQ(errOf(k.ioasAlloc(theirs->get())), EBADF);
    // A closed fd of ours.
    auto mine = k.openIommufd();
    ASSERT_TRUE(mine.ok());
    const int n = mine->get();
    mine->reset();
    EXPECT_EQ(errOf(k.ioasAlloc(n)), EBADF);
    auto vfio = k.openVfioDevice("vfio0");
    ASSERT_TRUE(vfio.ok());
    EXPECT_EQ(errOf(k.vfioBind(vfio->get(), r.get())), EBADF);
}

TEST(KernelSim, WrongKindOfFile) {
    KernelSim k(testConfig());
    auto iommufd = k.openIommufd();
    auto vfio = k.openVfioDevice("vfio0");
    auto vfio2 = k.openVfioDevice("vfio2");
    auto vdpa = k.openVhostVdpa("vhost-vdpa-0");
    ASSERT_TRUE(iommufd.ok() && vfio.ok() && vfio2.ok() && vdpa.ok());
    EXPECT_EQ(errOf(k.ioasAlloc(vfio->get())), ENOTTY);
    EXPECT_EQ(errOf(k.destroy(vdpa->get(), 1)), ENOTTY);
    EXPECT_EQ(errOf(k.vfioBind(iommufd->get(), iommufd->get())), ENOTTY);
    EXPECT_EQ(errOf(k.vfioBind(vfio->get(), vfio2->get())), EBADFD);
    EXPECT_EQ(errOf(k.vdpaGroupNum(vfio->get())), ENOTTY);
    EXPECT_EQ(errOf(k.vdpaAsNum(iommufd->get())), ENOTTY);
    EXPECT_EQ(errOf(k.faultQueueAlloc(vfio->get())), ENOTTY);
    EXPECT_EQ(errOf(k.hwInfo(vfio->get(), 1)), ENOTTY);
}

TEST(KernelSim, ErrorMessagesNameTheCallAndObject) {
    KernelSim k(testConfig());
    Bound b = bind(k, "vfio0");
    auto again = k.vfioBind(b.dev.get(), b.iommufd.get());
    ASSERT_FALSE(again.ok());
    EXPECT_EQ(again.error().message.rfind(
                  "VFIO_DEVICE_BIND_IOMMUFD on vfio0: Device or resource busy", 0),
              0u)
        << again.error().message;
    auto open = k.openVfioDevice("vfio9");
    ASSERT_FALSE(open.ok());
    EXPECT_EQ(open.error().message, "open /dev/vfio/devices/vfio9: No such file or directory");
}

// ---- iommufd objects --------------------------------------------------------------

TEST(KernelSim, ObjectIdsShareOneSpacePerIommufd) {
    KernelSim k(testConfig());
    auto iommufd = k.openIommufd();
    ASSERT_TRUE(iommufd.ok());
    EXPECT_EQ(*k.ioasAlloc(iommufd->get()), 1u);
    auto vfio = k.openVfioDevice("vfio0");
    ASSERT_TRUE(vfio.ok());
    EXPECT_EQ(*k.vfioBind(vfio->get(), iommufd->get()), 2u);
    auto fq = k.faultQueueAlloc(iommufd->get());
    ASSERT_TRUE(fq.ok());
    EXPECT_EQ(fq->id, 3u);
    EXPECT_EQ(*k.ioasAlloc(iommufd->get()), 4u);

    // Another iommufd starts again from 1.
    auto other = k.openIommufd();
    ASSERT_TRUE(other.ok());
    EXPECT_EQ(*k.ioasAlloc(other->get()), 1u);
    // Ids of one iommufd mean nothing in another.
    EXPECT_EQ(errOf(k.destroy(other->get(), 4)), ENOENT);
    EXPECT_EQ(errOf(k.hwInfo(other->get(), 2)), ENOENT);

    // A destroyed id is reused, lowest first (the kernel's xarray).
    ASSERT_TRUE(k.destroy(iommufd->get(), 1).ok());
    EXPECT_EQ(*k.ioasAlloc(iommufd->get()), 1u);
    EXPECT_EQ(*k.ioasAlloc(iommufd->get()), 5u);
}

TEST(KernelSim, DestroySemantics) {
    KernelSim k(testConfig());
    Bound b = bind(k, "vfio0");
    EXPECT_EQ(errOf(k.destroy(b.iommufd.get(), 77)), ENOENT);
    EXPECT_EQ(errOf(k.destroy(b.iommufd.get(), 0)), ENOENT);

    ASSERT_TRUE(k.vfioAttach(b.dev.get(), b.ioas, std::nullopt).ok());
    EXPECT_EQ(errOf(k.destroy(b.iommufd.get(), b.ioas)), EBUSY);
    // A PASID attachment keeps it busy too.
    ASSERT_TRUE(k.vfioAttach(b.dev.get(), b.ioas, 5u).ok());
    ASSERT_TRUE(k.vfioDetach(b.dev.get(), std::nullopt).ok());
    EXPECT_EQ(errOf(k.destroy(b.iommufd.get(), b.ioas)), EBUSY);
    ASSERT_TRUE(k.vfioDetach(b.dev.get(), 5u).ok());

    // A device object belongs to its binding.
    EXPECT_EQ(errOf(k.destroy(b.iommufd.get(), b.devId)), EBUSY);

    EXPECT_TRUE(k.destroy(b.iommufd.get(), b.ioas).ok());
    EXPECT_EQ(errOf(k.destroy(b.iommufd.get(), b.ioas)), ENOENT);
}

TEST(KernelSim, ClosingTheDeviceFdUnbindsAndDetaches) {
    KernelSim k(testConfig());
    Bound b = bind(k, "vfio0");
    ASSERT_TRUE(k.vfioAttach(b.dev.get(), b.ioas, std::nullopt).ok());
    ASSERT_TRUE(k.vfioAttach(b.dev.get(), b.ioas, 9u).ok());
    EXPECT_EQ(errOf(k.destroy(b.iommufd.get(), b.ioas)), EBUSY);
    b.dev.reset();
    // As on the kernel, the close alone ended the binding and its attachments.
    EXPECT_TRUE(k.destroy(b.iommufd.get(), b.ioas).ok());
    EXPECT_EQ(errOf(k.hwInfo(b.iommufd.get(), b.devId)), ENOENT);
    EXPECT_EQ(errOf(k.destroy(b.iommufd.get(), b.devId)), ENOENT);
}

TEST(KernelSim, HwInfoOfAClosedDeviceIsGone) {
    KernelSim k(testConfig());
    Bound b = bind(k, "vfio2");
    ASSERT_TRUE(k.hwInfo(b.iommufd.get(), b.devId).ok());
    b.dev.reset();
    EXPECT_EQ(errOf(k.hwInfo(b.iommufd.get(), b.devId)), ENOENT);
}

TEST(KernelSim, FaultQueues) {
    KernelSim k(testConfig());
    auto iommufd = k.openIommufd();
    ASSERT_TRUE(iommufd.ok());
    auto fq = k.faultQueueAlloc(iommufd->get());
    ASSERT_TRUE(fq.ok());
    EXPECT_EQ(fq->id, 1u);
    EXPECT_TRUE(fq->fd.valid());
    // The fd holds the object.
    EXPECT_EQ(errOf(k.destroy(iommufd->get(), fq->id)), EBUSY);
    // A fault queue is no page table.
    auto dev = k.openVfioDevice("vfio0");
    ASSERT_TRUE(dev.ok());
    ASSERT_TRUE(k.vfioBind(dev->get(), iommufd->get()).ok());
    EXPECT_EQ(errOf(k.vfioAttach(dev->get(), fq->id, std::nullopt)), EINVAL);
    EXPECT_EQ(errOf(k.ioasIovaRanges(iommufd->get(), fq->id)), ENOENT);
    fq->fd.reset();
    EXPECT_TRUE(k.destroy(iommufd->get(), fq->id).ok());
    EXPECT_EQ(errOf(k.destroy(iommufd->get(), fq->id)), ENOENT);
}

TEST(KernelSim, IovaRangesSkipTheMsiWindow) {
    KernelSim k(testConfig());
    auto iommufd = k.openIommufd();
    ASSERT_TRUE(iommufd.ok());
    const uint32_t ioas = *k.ioasAlloc(iommufd->get());
    auto r = k.ioasIovaRanges(iommufd->get(), ioas);
    ASSERT_TRUE(r.ok());
    ASSERT_EQ(r->size(), 2u);
    EXPECT_EQ((*r)[0].start, 0u);
    EXPECT_EQ((*r)[0].last, 0xfedfffffu);
    EXPECT_EQ((*r)[1].start, 0xfef00000u);
    EXPECT_EQ((*r)[1].last, (uint64_t{1} << 48) - 1);
    EXPECT_EQ(errOf(k.ioasIovaRanges(iommufd->get(), ioas + 1)), ENOENT);
}

TEST(KernelSim, HwInfo) {
    KernelSim k(testConfig());
    for (const auto& [name, log2] : testConfig().vfio) {
        Bound b = bind(k, name);
        auto info = k.hwInfo(b.iommufd.get(), b.devId);
        ASSERT_TRUE(info.ok()) << name;
        EXPECT_EQ(info->type, 1u);
        EXPECT_EQ(info->maxPasidLog2, log2) << name;
        EXPECT_EQ(errOf(k.hwInfo(b.iommufd.get(), b.devId + 100)), ENOENT);
        EXPECT_EQ(errOf(k.hwInfo(b.iommufd.get(), b.ioas)), ENOENT); // not a device
    }
}

// ---- VFIO binding --------------------------------------------------------------------

TEST(KernelSim, BindTwiceOnOneFdIsBusy) {
    KernelSim k(testConfig());
    Bound b = bind(k, "vfio0");
    EXPECT_EQ(errOf(k.vfioBind(b.dev.get(), b.iommufd.get())), EBUSY);
    auto other = k.openIommufd();
    ASSERT_TRUE(other.ok());
    EXPECT_EQ(errOf(k.vfioBind(b.dev.get(), other->get())), EBUSY);
}

TEST(KernelSim, BindThroughASecondFdIsBusyUntilTheFirstCloses) {
    KernelSim k(testConfig());
    Bound b = bind(k, "vfio0");
    auto second = k.openVfioDevice("vfio0"); // opening again is fine
    ASSERT_TRUE(second.ok());
    auto iommufd2 = k.openIommufd();
    ASSERT_TRUE(iommufd2.ok());
    EXPECT_EQ(errOf(k.vfioBind(second->get(), iommufd2->get())), EBUSY);
    EXPECT_EQ(errOf(k.vfioBind(second->get(), b.iommufd.get())), EBUSY);

    // Closing the first binding's iommufd does not unbind: the device fd
    // keeps the context, as the kernel's file reference does.
    b.iommufd.reset();
    EXPECT_EQ(errOf(k.vfioBind(second->get(), iommufd2->get())), EBUSY);
    EXPECT_TRUE(k.vfioAttach(b.dev.get(), b.ioas, std::nullopt).ok());
    EXPECT_TRUE(k.vfioDetach(b.dev.get(), std::nullopt).ok());

    // Closing its device fd does.
    b.dev.reset();
    auto id = k.vfioBind(second->get(), iommufd2->get());
    ASSERT_TRUE(id.ok()) << id.error().message;
    EXPECT_EQ(*id, 1u);
    k.collect();
    EXPECT_EQ(k.stats().contexts, 1u); // the first context went with its device
}

TEST(KernelSim, DifferentDevicesBindTogether) {
    KernelSim k(testConfig());
    auto iommufd = k.openIommufd();
    ASSERT_TRUE(iommufd.ok());
    auto a = k.openVfioDevice("vfio0");
    auto b = k.openVfioDevice("vfio2");
    ASSERT_TRUE(a.ok() && b.ok());
    auto ia = k.vfioBind(a->get(), iommufd->get());
    auto ib = k.vfioBind(b->get(), iommufd->get());
    ASSERT_TRUE(ia.ok() && ib.ok());
    EXPECT_NE(*ia, *ib);
}

TEST(KernelSim, CallsBeforeBindAreEinval) {
    KernelSim k(testConfig());
    auto iommufd = k.openIommufd();
    ASSERT_TRUE(iommufd.ok());
    const uint32_t ioas = *k.ioasAlloc(iommufd->get());
    auto dev = k.openVfioDevice("vfio0");
    ASSERT_TRUE(dev.ok());
    EXPECT_EQ(errOf(k.vfioAttach(dev->get(), ioas, std::nullopt)), EINVAL);
    EXPECT_EQ(errOf(k.vfioDetach(dev->get(), std::nullopt)), EINVAL);
}

// ---- attach / detach --------------------------------------------------------------------

TEST(KernelSim, AttachAndDetach) {
    KernelSim k(testConfig());
    Bound b = bind(k, "vfio2"); // PASID log2 8
    EXPECT_EQ(errOf(k.vfioAttach(b.dev.get(), 99, std::nullopt)), ENOENT);
    EXPECT_EQ(errOf(k.vfioAttach(b.dev.get(), 99, 1u)), ENOENT);
    EXPECT_EQ(errOf(k.vfioAttach(b.dev.get(), b.devId, std::nullopt)), EINVAL); // not an IOAS
    EXPECT_EQ(errOf(k.vfioDetach(b.dev.get(), std::nullopt)), EINVAL);
    EXPECT_EQ(errOf(k.vfioDetach(b.dev.get(), 3u)), EINVAL);

    EXPECT_TRUE(k.vfioAttach(b.dev.get(), b.ioas, std::nullopt).ok());
    EXPECT_TRUE(k.vfioAttach(b.dev.get(), b.ioas, 1u).ok());
    EXPECT_TRUE(k.vfioAttach(b.dev.get(), b.ioas, 255u).ok()); // 2^8 - 1
    EXPECT_EQ(errOf(k.vfioAttach(b.dev.get(), b.ioas, 256u)), EINVAL);
    EXPECT_EQ(errOf(k.vfioAttach(b.dev.get(), b.ioas, 0u)), EINVAL); // the RID's
    EXPECT_EQ(k.stats().attachments, 3u);

    EXPECT_TRUE(k.vfioDetach(b.dev.get(), 1u).ok());
    EXPECT_EQ(errOf(k.vfioDetach(b.dev.get(), 1u)), EINVAL);
    EXPECT_TRUE(k.vfioDetach(b.dev.get(), std::nullopt).ok());
    EXPECT_EQ(errOf(k.vfioDetach(b.dev.get(), std::nullopt)), EINVAL);
    EXPECT_TRUE(k.vfioDetach(b.dev.get(), 255u).ok());
    EXPECT_EQ(k.stats().attachments, 0u);
    EXPECT_TRUE(k.destroy(b.iommufd.get(), b.ioas).ok());
}

TEST(KernelSim, AttachReplaces) {
    KernelSim k(testConfig());
    Bound b = bind(k, "vfio0");
    const uint32_t ioas2 = *k.ioasAlloc(b.iommufd.get());
    ASSERT_TRUE(k.vfioAttach(b.dev.get(), b.ioas, std::nullopt).ok());
    ASSERT_TRUE(k.vfioAttach(b.dev.get(), ioas2, std::nullopt).ok());
    EXPECT_TRUE(k.destroy(b.iommufd.get(), b.ioas).ok()); // no longer attached
    EXPECT_EQ(errOf(k.destroy(b.iommufd.get(), ioas2)), EBUSY);
    EXPECT_EQ(k.stats().attachments, 1u);
}

TEST(KernelSim, PasidOnADeviceWithoutPasid) {
    KernelSim k(testConfig());
    Bound b = bind(k, "vfio1"); // PASID log2 0
    EXPECT_EQ(errOf(k.vfioAttach(b.dev.get(), b.ioas, 1u)), EOPNOTSUPP);
    EXPECT_EQ(errOf(k.vfioDetach(b.dev.get(), 1u)), EOPNOTSUPP);
    EXPECT_TRUE(k.vfioAttach(b.dev.get(), b.ioas, std::nullopt).ok());
}

TEST(KernelSim, PasidWidthTwenty) {
    KernelSim k(testConfig());
    Bound b = bind(k, "vfio0");
    EXPECT_TRUE(k.vfioAttach(b.dev.get(), b.ioas, 0xFFFFFu).ok());
    EXPECT_EQ(errOf(k.vfioAttach(b.dev.get(), b.ioas, 0x100000u)), EINVAL);
}

// ---- vhost-vdpa, work queues, unknown names ------------------------------------------------

TEST(KernelSim, VhostVdpaCounts) {
    KernelSim k(testConfig());
    auto a = k.openVhostVdpa("vhost-vdpa-0");
    auto b = k.openVhostVdpa("vhost-vdpa-1");
    ASSERT_TRUE(a.ok() && b.ok());
    EXPECT_EQ(*k.vdpaGroupNum(a->get()), 2u);
    EXPECT_EQ(*k.vdpaAsNum(a->get()), 2u);
    EXPECT_EQ(*k.vdpaGroupNum(b->get()), 3u);
    EXPECT_EQ(*k.vdpaAsNum(b->get()), 1u);
}

TEST(KernelSim, UnknownNamesAreEnoent) {
    KernelSim k(testConfig());
    EXPECT_EQ(errOf(k.openVfioDevice("vfio7")), ENOENT);
    EXPECT_EQ(errOf(k.openVfioDevice("")), ENOENT);
    EXPECT_EQ(errOf(k.openVhostVdpa("vhost-vdpa-9")), ENOENT);
    EXPECT_EQ(errOf(k.openWorkQueue("wq9.9")), ENOENT);
    EXPECT_TRUE(k.openWorkQueue("wq0.0").ok());
}

// ---- features ----------------------------------------------------------------------------------

TEST(KernelSim, ProbeReportsAllByDefault) {
    KernelSim k(testConfig());
    auto f = k.probe();
    EXPECT_TRUE(f.iommufd && f.rlimitMode && f.hwInfo && f.faultQueue && f.vfioCdev &&
                f.pasidAttach && f.vhostVdpa && f.idxd);
    EXPECT_TRUE(f.absentReasons.empty());
}

TEST(KernelSim, ProbeReportsAbsentFeaturesWithReasons) {
    SimConfig c = testConfig();
    c.features.faultQueue = false;
    c.features.pasidAttach = false;
    c.features.idxd = false;
    KernelSim k(c);
    auto f = k.probe();
    EXPECT_TRUE(f.iommufd);
    EXPECT_FALSE(f.faultQueue);
    EXPECT_FALSE(f.pasidAttach);
    EXPECT_FALSE(f.idxd);
    EXPECT_TRUE(f.vhostVdpa);
    ASSERT_EQ(f.absentReasons.size(), 3u);
    EXPECT_EQ(f.absentReasons[0].first, "faultQueue");
    EXPECT_EQ(f.absentReasons[0].second, "simulated kernel built without faultQueue");
    EXPECT_EQ(f.absentReasons[1].first, "pasidAttach");
    EXPECT_EQ(f.absentReasons[2].first, "idxd");
}

TEST(KernelSim, WithoutIommufd) {
    SimConfig c = testConfig();
    EXPECT_TRUE(c.features.set("iommufd", false));
    EXPECT_FALSE(c.features.set("warpDrive", false));
    KernelSim k(c);
    auto f = k.probe();
    EXPECT_FALSE(f.iommufd);
    EXPECT_FALSE(f.hwInfo);
    EXPECT_FALSE(f.faultQueue);
    EXPECT_FALSE(f.pasidAttach);
    EXPECT_FALSE(f.rlimitMode);
    EXPECT_TRUE(f.vfioCdev);
    for (const auto& [name, reason] : f.absentReasons) {
        EXPECT_EQ(reason, "simulated kernel built without iommufd") << name;
    }
    auto fd = k.openIommufd();
    ASSERT_FALSE(fd.ok());
    EXPECT_EQ(fd.error().err, ENOENT);
    EXPECT_NE(fd.error().message.find("/dev/iommu"), std::string::npos);
    EXPECT_TRUE(k.openVfioDevice("vfio0").ok());
}

TEST(KernelSim, WithoutFaultQueueHwInfoPasidAttach) {
    SimConfig c = testConfig();
    c.features.faultQueue = false;
    c.features.hwInfo = false;
    c.features.pasidAttach = false;
    KernelSim k(c);
    Bound b = bind(k, "vfio0");
    EXPECT_EQ(errOf(k.faultQueueAlloc(b.iommufd.get())), ENOTTY);
    EXPECT_EQ(errOf(k.hwInfo(b.iommufd.get(), b.devId)), ENOTTY);
    EXPECT_EQ(errOf(k.vfioAttach(b.dev.get(), b.ioas, 1u)), EINVAL);
    EXPECT_EQ(errOf(k.vfioDetach(b.dev.get(), 1u)), EINVAL);
    EXPECT_TRUE(k.vfioAttach(b.dev.get(), b.ioas, std::nullopt).ok());
}

TEST(KernelSim, WithoutPasidAttachHwInfoReportsNoPasid) {
    SimConfig c = testConfig();
    c.features.pasidAttach = false;
    KernelSim k(c);
    Bound b = bind(k, "vfio0");
    auto info = k.hwInfo(b.iommufd.get(), b.devId);
    ASSERT_TRUE(info.ok());
    EXPECT_EQ(info->maxPasidLog2, 0u);
}

TEST(KernelSim, WithoutNodes) {
    SimConfig c = testConfig();
    c.features.vfioCdev = false;
    c.features.vhostVdpa = false;
    c.features.idxd = false;
    KernelSim k(c);
    EXPECT_EQ(errOf(k.openVfioDevice("vfio0")), ENOENT);
    EXPECT_EQ(errOf(k.openVhostVdpa("vhost-vdpa-0")), ENOENT);
    EXPECT_EQ(errOf(k.openWorkQueue("wq0.0")), ENOENT);
    EXPECT_FALSE(k.probe().pasidAttach);
}

// ---- fromHost ----------------------------------------------------------------------------

TEST(KernelSim, FromHost) {
    namespace core = svad::core;
    core::Host h;
    core::IommuUnit wide, narrow, amd;
    wide.name = "dmar0";
    wide.vtd = core::VtdCaps{};
    wide.vtd->pasid = true;
    wide.vtd->pasidWidth = 20;
    narrow.name = "dmar1";
    narrow.vtd = core::VtdCaps{};
    narrow.vtd->pasid = true;
    narrow.vtd->pasidWidth = 10;
    amd.name = "ivhd0"; // no VtdCaps
    h.units = {wide, narrow, amd};

    auto pci = [](const std::string& addr, const std::string& vfio, const std::string& unit,
                  std::optional<uint32_t> pasidWidth) {
        core::PciDevice d;
        d.address = addr;
        d.vfioDevice = vfio;
        d.iommuUnit = unit;
        if (pasidWidth) {
            d.caps.pasid.present = true;
            d.caps.pasid.maxWidth = *pasidWidth;
        }
        return d;
    };
    h.devices = {
        pci("0000:00:01.0", "vfio0", "dmar0", 20), // 20
        pci("0000:00:02.0", "vfio1", "dmar1", 20), // unit limits: 10
        pci("0000:00:03.0", "vfio2", "dmar0", 8),  // device limits: 8
        pci("0000:00:04.0", "vfio3", "dmar0", {}), // no PASID: 0
        pci("0000:00:05.0", "vfio4", "ivhd0", 16), // unit without VtdCaps: 16
        pci("0000:00:06.0", "", "dmar0", 20),      // no cdev: not in the sim
    };
    core::VdpaDevice v0, v1;
    v0.name = "vdpa0";
    v0.vhostDevice = "vhost-vdpa-0";
    v1.name = "vdpa1"; // virtio_vdpa, no vhost node
    h.vdpa = {v0, v1};
    core::SiovQueue q0, q1;
    q0.name = "wq0.0";
    q0.charDevice = "dsa/wq0.0";
    q1.name = "wq0.1"; // kernel queue, no char device
    h.queues = {q0, q1};

    const SimConfig c = SimConfig::fromHost(h, "/tmp/devroot");
    EXPECT_EQ(c.vfio,
              (std::map<std::string, uint8_t>{
                  {"vfio0", 20}, {"vfio1", 10}, {"vfio2", 8}, {"vfio3", 0}, {"vfio4", 16}}));
    ASSERT_EQ(c.vhostVdpa.size(), 1u);
    EXPECT_EQ(c.vhostVdpa.at("vhost-vdpa-0").groups, 2u);
    EXPECT_EQ(c.vhostVdpa.at("vhost-vdpa-0").addressSpaces, 2u);
    EXPECT_EQ(c.workQueues, (std::set<std::string>{"wq0.0"}));
    EXPECT_EQ(c.devRoot, "/tmp/devroot");
    EXPECT_TRUE(c.features.iommufd && c.features.faultQueue && c.features.pasidAttach);

    KernelSim k(c);
    auto missing = k.openVfioDevice("vfio5");
    ASSERT_FALSE(missing.ok());
    EXPECT_EQ(missing.error().message,
              "open /tmp/devroot/vfio/devices/vfio5: No such file or directory");
    Bound b = bind(k, "vfio1");
    EXPECT_EQ(k.hwInfo(b.iommufd.get(), b.devId)->maxPasidLog2, 10u);
}

// ---- lifetimes and leaks ---------------------------------------------------------------------

TEST(KernelSim, ContextOutlivesItsIommufdWhileADeviceIsBound) {
    KernelSim k(testConfig());
    Bound b = bind(k, "vfio0");
    auto fq = k.faultQueueAlloc(b.iommufd.get());
    ASSERT_TRUE(fq.ok());
    b.iommufd.reset();
    k.collect();
    EXPECT_EQ(k.stats().contexts, 1u);
    EXPECT_TRUE(k.vfioAttach(b.dev.get(), b.ioas, std::nullopt).ok());
    b.dev.reset();
    k.collect();
    EXPECT_EQ(k.stats().contexts, 1u); // the fault queue fd still holds it
    fq->fd.reset();
    k.collect();
    EXPECT_EQ(k.stats().contexts, 0u);
    EXPECT_EQ(k.stats().files, 0u);
}

TEST(KernelSim, NoFdLeaks) {
    const size_t before = countFds();
    {
        KernelSim k(testConfig());
        for (int round = 0; round < 3; ++round) {
            Bound b = bind(k, "vfio0");
            ASSERT_TRUE(k.vfioAttach(b.dev.get(), b.ioas, std::nullopt).ok());
            ASSERT_TRUE(k.vfioAttach(b.dev.get(), b.ioas, 7u).ok());
            auto fq = k.faultQueueAlloc(b.iommufd.get());
            ASSERT_TRUE(fq.ok());
            auto vdpa = k.openVhostVdpa("vhost-vdpa-0");
            ASSERT_TRUE(vdpa.ok());
            ASSERT_TRUE(k.vdpaGroupNum(vdpa->get()).ok());
            auto wq = k.openWorkQueue("wq0.0");
            ASSERT_TRUE(wq.ok());
            ASSERT_TRUE(k.hwInfo(b.iommufd.get(), b.devId).ok());
            ASSERT_TRUE(k.ioasIovaRanges(b.iommufd.get(), b.ioas).ok());
            EXPECT_EQ(countFds(), before + 5);
            // Failures must not leak either.
            EXPECT_FALSE(k.openVfioDevice("nope").ok());
            EXPECT_FALSE(k.vfioBind(b.dev.get(), b.iommufd.get()).ok());
            EXPECT_FALSE(k.destroy(b.iommufd.get(), fq->id).ok()); // scans /proc/self/fd
            // The engine's order: PASIDs, RID, close devices, fault queue, IOAS.
            ASSERT_TRUE(k.vfioDetach(b.dev.get(), 7u).ok());
            ASSERT_TRUE(k.vfioDetach(b.dev.get(), std::nullopt).ok());
            b.dev.reset();
            fq->fd.reset();
            ASSERT_TRUE(k.destroy(b.iommufd.get(), fq->id).ok());
            ASSERT_TRUE(k.destroy(b.iommufd.get(), b.ioas).ok());
        }
        EXPECT_EQ(countFds(), before);
        k.collect();
        const auto s = k.stats();
        EXPECT_EQ(s.files, 0u);
        EXPECT_EQ(s.contexts, 0u);
        EXPECT_EQ(s.objects, 0u);
        EXPECT_EQ(s.bindings, 0u);
    }
    EXPECT_EQ(countFds(), before);
}

TEST(KernelSim, ClosedFilesDoNotAccumulate) {
    KernelSim k(testConfig());
    for (int i = 0; i < 2000; ++i) {
        Bound b = bind(k, "vfio2");
        ASSERT_TRUE(k.vfioAttach(b.dev.get(), b.ioas, 3u).ok());
    }                                  // everything closed without a detach or destroy
    EXPECT_LT(k.stats().files, 1000u); // lazily swept along the way
    k.collect();
    EXPECT_EQ(k.stats().files, 0u);
    EXPECT_EQ(k.stats().contexts, 0u);
}

TEST(KernelSim, ConcurrentUse) {
    SimConfig c;
    for (int i = 0; i < 4; ++i) {
        c.vfio["vfio" + std::to_string(i)] = 20;
    }
    KernelSim k(c);
    std::vector<std::thread> threads;
    threads.reserve(4);
    std::vector<int> failures(4, 0);
    for (int t = 0; t < 4; ++t) {
        threads.emplace_back([&k, &failures, t] {
            for (int i = 0; i < 200; ++i) {
                auto iommufd = k.openIommufd();
                auto dev = k.openVfioDevice("vfio" + std::to_string(t));
                if (!iommufd.ok() || !dev.ok()) {
                    ++failures[t];
                    continue;
                }
                auto ioas = k.ioasAlloc(iommufd->get());
                auto id = k.vfioBind(dev->get(), iommufd->get());
                if (!ioas.ok() || !id.ok() ||
                    !k.vfioAttach(dev->get(), *ioas, uint32_t(i % 100 + 1)).ok() ||
                    !k.vfioDetach(dev->get(), uint32_t(i % 100 + 1)).ok()) {
                    ++failures[t];
                }
            }
        });
    }
    for (auto& th : threads) {
        th.join();
    }
    EXPECT_EQ(failures, std::vector<int>(4, 0));
    k.collect();
    EXPECT_EQ(k.stats().files, 0u);
}

// ---- persistence ---------------------------------------------------------------------------

std::string readText(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    std::ostringstream s;
    s << in.rdbuf();
    return s.str();
}

void writeText(const std::string& path, const std::string& text) {
    std::ofstream out(path, std::ios::binary | std::ios::trunc);
    out << text;
}

// The inode of `path`: every write of the state file renames a new one over it.
ino_t inodeOf(const std::string& path) {
    struct stat st {};
    return ::stat(path.c_str(), &st) == 0 ? st.st_ino : 0;
}

// What a restarted svad has: the fds of the previous process, the sim gone.
struct Kept {
    Bound b;
    svad::ports::FaultQueue fq;
};

Kept keepAfterRun(const std::string& stateFile) {
    KernelSim a(testConfig());
    EXPECT_TRUE(a.persistIn(stateFile)) << a.lastLoadError();
    Kept k;
    k.b = bind(a, "vfio0");
    EXPECT_TRUE(a.vfioAttach(k.b.dev.get(), k.b.ioas, std::nullopt).ok());
    auto fq = a.faultQueueAlloc(k.b.iommufd.get());
    EXPECT_TRUE(fq.ok());
    if (fq.ok()) {
        k.fq = std::move(fq.value());
    }
    EXPECT_EQ(a.lastSaveError(), "");
    return k;
}

TEST(KernelSim, PersistedObjectsSurviveARestart) {
    svad::test::ScratchDir dir;
    const std::string state = dir.path() + "/kernel.state";
    Kept k = keepAfterRun(state);
    EXPECT_EQ(fdLink(k.b.iommufd.get()), "/memfd:svad-sim:iommufd:1 (deleted)");

    KernelSim b(testConfig());
    ASSERT_TRUE(b.persistIn(state)) << b.lastLoadError();
    EXPECT_EQ(b.lastLoadError(), "");
    const auto s = b.stats();
    EXPECT_EQ(s.files, 3u);
    EXPECT_EQ(s.contexts, 1u);
    EXPECT_EQ(s.objects, 3u); // IOAS, device, fault queue
    EXPECT_EQ(s.bindings, 1u);
    EXPECT_EQ(s.attachments, 1u);

    // The new process works on the old fds as the kernel would.
    EXPECT_EQ(errOf(b.vfioBind(k.b.dev.get(), k.b.iommufd.get())), EBUSY); // still bound
    ASSERT_TRUE(b.vfioAttach(k.b.dev.get(), k.b.ioas, 5u).ok());
    auto info = b.hwInfo(k.b.iommufd.get(), k.b.devId);
    ASSERT_TRUE(info.ok()) << info.error().message;
    EXPECT_EQ(info->maxPasidLog2, 20u);
    EXPECT_EQ(errOf(b.destroy(k.b.iommufd.get(), k.b.devId)), EBUSY);
    EXPECT_EQ(errOf(b.destroy(k.b.iommufd.get(), k.fq.id)), EBUSY);  // its fd is open
    EXPECT_EQ(errOf(b.destroy(k.b.iommufd.get(), k.b.ioas)), EBUSY); // RID and PASID 5
    ASSERT_TRUE(b.vfioDetach(k.b.dev.get(), 5u).ok());
    EXPECT_EQ(errOf(b.vfioDetach(k.b.dev.get(), 5u)), EINVAL);
    EXPECT_EQ(errOf(b.destroy(k.b.iommufd.get(), k.b.ioas)), EBUSY); // the RID
    ASSERT_TRUE(b.vfioDetach(k.b.dev.get(), std::nullopt).ok());
    EXPECT_TRUE(b.destroy(k.b.iommufd.get(), k.b.ioas).ok());
    k.fq.fd.reset();
    EXPECT_TRUE(b.destroy(k.b.iommufd.get(), k.fq.id).ok());
    // Ids continue in the old context: the lowest free one.
    EXPECT_EQ(*b.ioasAlloc(k.b.iommufd.get()), 1u);

    // A new iommufd does not take the number of the one still open.
    auto next = b.openIommufd();
    ASSERT_TRUE(next.ok());
    EXPECT_EQ(fdLink(next->get()), "/memfd:svad-sim:iommufd:2 (deleted)");
    EXPECT_EQ(b.lastSaveError(), "");
}

TEST(KernelSim, PersistedStateFollowsEveryChange) {
    svad::test::ScratchDir dir;
    const std::string state = dir.path() + "/kernel.state";
    Bound kept;
    {
        KernelSim a(testConfig());
        ASSERT_TRUE(a.persistIn(state));
        EXPECT_EQ(readText(state), "svad-kernel-sim 1\nnext 1\nend\n");
        kept = bind(a, "vfio2");
        const ino_t before = inodeOf(state);
        ASSERT_TRUE(a.ioasIovaRanges(kept.iommufd.get(), kept.ioas).ok()); // no change
        EXPECT_EQ(inodeOf(state), before);
        ASSERT_TRUE(a.vfioAttach(kept.dev.get(), kept.ioas, 3u).ok());
        EXPECT_NE(inodeOf(state), before);
        EXPECT_FALSE(std::filesystem::exists(state + ".tmp"));
    }
    // A second restart sees what the first one changed.
    {
        KernelSim b(testConfig());
        ASSERT_TRUE(b.persistIn(state)) << b.lastLoadError();
        ASSERT_TRUE(b.vfioAttach(kept.dev.get(), kept.ioas, 4u).ok());
    }
    KernelSim c(testConfig());
    ASSERT_TRUE(c.persistIn(state)) << c.lastLoadError();
    EXPECT_EQ(c.stats().attachments, 2u);
    ASSERT_TRUE(c.vfioDetach(kept.dev.get(), 3u).ok());
    ASSERT_TRUE(c.vfioDetach(kept.dev.get(), 4u).ok());
    EXPECT_TRUE(c.destroy(kept.iommufd.get(), kept.ioas).ok());
}

TEST(KernelSim, FilesClosedBeforeTheRestartAreGone) {
    svad::test::ScratchDir dir;
    const std::string state = dir.path() + "/kernel.state";
    Kept k = keepAfterRun(state);
    {
        // Another context whose files all close while no svad runs.
        KernelSim a(testConfig());
        ASSERT_TRUE(a.persistIn(state)) << a.lastLoadError();
        auto other = a.openIommufd();
        ASSERT_TRUE(other.ok());
        EXPECT_EQ(fdLink(other->get()), "/memfd:svad-sim:iommufd:2 (deleted)");
        ASSERT_TRUE(a.faultQueueAlloc(other->get()).ok());
    }
    k.b.dev.reset();
    k.fq.fd.reset();
    // A memfd that looks like the device is not it.
    UniqueFd lookalike(::memfd_create("svad-sim:vfio:vfio0", MFD_CLOEXEC));
    ASSERT_TRUE(lookalike.valid());

    KernelSim b(testConfig());
    ASSERT_TRUE(b.persistIn(state)) << b.lastLoadError();
    const auto s = b.stats();
    EXPECT_EQ(s.files, 1u); // the iommufd
    EXPECT_EQ(s.contexts, 1u);
    EXPECT_EQ(s.bindings, 0u);
    EXPECT_EQ(s.attachments, 0u);
    EXPECT_EQ(errOf(b.vfioAttach(lookalike.get(), k.b.ioas, 5u)), EBADF);
    // The close ended the binding: nothing is attached to the IOAS any more.
    EXPECT_EQ(errOf(b.hwInfo(k.b.iommufd.get(), k.b.devId)), ENOENT);
    EXPECT_TRUE(b.destroy(k.b.iommufd.get(), k.b.ioas).ok());
    // The fault queue's fd is closed: the object can go.
    EXPECT_TRUE(b.destroy(k.b.iommufd.get(), k.fq.id).ok());
    // The device binds again through a new fd.
    auto dev = b.openVfioDevice("vfio0");
    ASSERT_TRUE(dev.ok());
    EXPECT_TRUE(b.vfioBind(dev->get(), k.b.iommufd.get()).ok());
    // Numbers continue past the context that went.
    auto next = b.openIommufd();
    ASSERT_TRUE(next.ok());
    EXPECT_EQ(fdLink(next->get()), "/memfd:svad-sim:iommufd:3 (deleted)");
}

TEST(KernelSim, MalformedStateStartsAFreshKernel) {
    using ::testing::HasSubstr;
    svad::test::ScratchDir dir;
    const std::string state = dir.path() + "/kernel.state";
    Kept k = keepAfterRun(state);
    const std::string good = readText(state);
    ASSERT_THAT(good, HasSubstr("\nbound "));
    const std::string body = good.substr(0, good.size() - std::string("end\n").size());

    const std::vector<std::pair<std::string, std::string>> cases = {
        {"", "truncated"},
        {body, "truncated"},
        {good.substr(0, good.size() - 1), "truncated"},
        {"svad-kernel-sim 2" + good.substr(good.find('\n')), "line 1"},
        {body + "object 1 9 table\nend\n", "bad object kind"},
        {body + "pasid 1 2 3 4\nend\n", "no such VFIO file"},
        {body + "context 1\nend\n", "twice"},
        {body + "context 99\nend\n", "bad instance number"},
        {body + "end\nend\n", "after"},
        {body + "end \n", "empty word"},
        {body + "object 1 0x9 ioas\nend\n", "bad object"},
    };
    for (const auto& [text, why] : cases) {
        writeText(state, text);
        KernelSim b(testConfig());
        EXPECT_FALSE(b.persistIn(state)) << text;
        EXPECT_THAT(b.lastLoadError(), HasSubstr(why)) << text;
        // Nothing of the file was taken, though its fds are open.
        EXPECT_EQ(b.stats().files, 0u) << text;
        EXPECT_EQ(errOf(b.vfioAttach(k.b.dev.get(), k.b.ioas, 5u)), EBADF) << text;
        auto fresh = b.openIommufd();
        ASSERT_TRUE(fresh.ok());
        EXPECT_EQ(fdLink(fresh->get()), "/memfd:svad-sim:iommufd:1 (deleted)") << text;
    }
    // The bad file was replaced by the fresh kernel's state.
    KernelSim c(testConfig());
    EXPECT_TRUE(c.persistIn(state));
    EXPECT_EQ(c.lastLoadError(), "");

    // A state file that can't be read at all.
    const std::string unreadable = dir.path() + "/a-directory";
    ASSERT_TRUE(std::filesystem::create_directory(unreadable));
    KernelSim d(testConfig());
    EXPECT_FALSE(d.persistIn(unreadable));
    EXPECT_THAT(d.lastLoadError(), HasSubstr("read "));
    EXPECT_EQ(d.stats().files, 0u);
    // And nowhere to write: reported, not fatal.
    EXPECT_TRUE(d.openIommufd().ok());
    EXPECT_NE(d.lastSaveError(), "");
}

TEST(KernelSim, WithoutPersistInNothingIsWritten) {
    svad::test::ScratchDir dir;
    const std::string state = dir.path() + "/kernel.state";
    KernelSim persisted(testConfig());
    ASSERT_TRUE(persisted.persistIn(state));
    const std::string written = readText(state);
    const ino_t inode = inodeOf(state);

    KernelSim plain(testConfig());
    Bound b = bind(plain, "vfio0");
    ASSERT_TRUE(plain.vfioAttach(b.dev.get(), b.ioas, 1u).ok());
    plain.collect();
    EXPECT_EQ(plain.lastSaveError(), "");
    EXPECT_EQ(plain.lastLoadError(), "");
    EXPECT_EQ(inodeOf(state), inode);
    EXPECT_EQ(readText(state), written);
    size_t entries = 0;
    for ([[maybe_unused]] const auto& e : std::filesystem::directory_iterator(dir.path())) {
        ++entries;
    }
    EXPECT_EQ(entries, 1u);
}

} // namespace

// ---- nodes a client opens itself --------------------------------------------------------

namespace {

// Without nodeAcls the sim only records the grants, for nodes of its work queues.
TEST(KernelSimNodes, GrantsAreRecordedForKnownQueues) {
    KernelSim sim(testConfig());
    const std::string node = sim.nodePath("dsa/wq0.1");
    EXPECT_EQ(node, "/dev/dsa/wq0.1");
    ASSERT_TRUE(sim.grantNode(node, 1000).ok());
    ASSERT_TRUE(sim.grantNode(node, 1001).ok());
    EXPECT_EQ(sim.grants().at(node), (std::set<uid_t>{1000, 1001}));
    ASSERT_TRUE(sim.revokeNode(node, 1000).ok());
    ASSERT_TRUE(sim.revokeNode(node, 1001).ok());
    EXPECT_TRUE(sim.grants().empty());
    EXPECT_EQ(errOf(sim.grantNode("/dev/dsa/wq9.9", 1000)), ENOENT);
    EXPECT_EQ(errOf(sim.grantNode("/dev/dsa/../iommu", 1000)), EINVAL);
    EXPECT_EQ(errOf(sim.grantNode("/etc/passwd", 1000)), EINVAL);
}

// With nodeAcls it sets the real ACL on the node file under its dev root.
TEST(KernelSimNodes, WithNodeAclsTheNodeFileGetsTheEntry) {
    svad::test::ScratchDir dir;
    std::filesystem::create_directories(dir.path() + "/dsa");
    std::ofstream(dir.path() + "/dsa/wq0.0").put('\0');
    SimConfig c = testConfig();
    c.devRoot = dir.path();
    c.nodeAcls = true;
    KernelSim sim(c);
    const std::string node = sim.nodePath("dsa/wq0.0");
    ASSERT_TRUE(sim.grantNode(node, 4321).ok());
    svad::test::AclEntries acl = svad::test::aclOf(node);
    EXPECT_EQ(acl.users, (std::map<uid_t, std::string>{{4321, "rw-"}})) << acl.text;
    EXPECT_EQ(acl.mask, "rw-") << acl.text;
    ASSERT_TRUE(sim.revokeNode(node, 4321).ok());
    EXPECT_TRUE(svad::test::aclOf(node).users.empty()) << svad::test::aclOf(node).text;
    EXPECT_EQ(errOf(sim.grantNode(sim.nodePath("dsa/wq0.1"), 4321)), ENOENT); // no such file
}

} // namespace
