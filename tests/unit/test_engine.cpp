// The context engine against the simulated kernel: two-phase allocation
// with rollback under a fail-nth sweep (every kernel call in turn fails),
// and the engine's rules (who may hold what, PASIDs, quotas, virtual IDs).
#include "open_broker.h"
#include "svad/core/engine.h"
#include "svad/ports/state_store_memory.h"
#include "svad/sim/kernel_sim.h"

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <dirent.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <sys/stat.h>
#include <unistd.h>
#include <vector>

namespace svad::core {
namespace {

using names::Error;
using ports::KernelError;
using ports::Result;
using ports::Status;
using ports::UniqueFd;

// ---- a kernel that fails on demand ----------------------------------------

// Delegates every call to another Kernel; once armed with N, the N-th call
// (counting every method call since arming) fails with the chosen errno
// instead of reaching the delegate. Also records every error the delegate
// itself returned, so that a test can tell whether the engine's own calls
// (its teardown in particular) went through.
class FailingKernel final : public ports::Kernel {
public:
    explicit FailingKernel(ports::Kernel& inner) : inner_(inner) {}

    void arm(int n, int err = EIO) {
        failAt_ = n;
        err_ = err;
        calls_ = 0;
        hit_ = false;
    }
    void disarm() { failAt_ = 0; }
    // Whether the armed failure was injected since arm().
    bool hit() const { return hit_; }
    // Calls since arm() (or since the start).
    int calls() const { return calls_; }
    // Errors the delegate returned (not the injected ones), "<method>: <message>".
    const std::vector<std::string>& innerErrors() const { return innerErrors_; }
    void clearInnerErrors() { innerErrors_.clear(); }
    // The names of the methods called since arm(), in order.
    const std::vector<std::string>& log() const { return log_; }
    void clearLog() { log_.clear(); }

    ports::KernelFeatures probe() override {
        ++calls_;
        log_.push_back("probe");
        return inner_.probe();
    }
    Result<UniqueFd> openIommufd() override {
        return call<Result<UniqueFd>>("openIommufd", [&] { return inner_.openIommufd(); });
    }
    Result<uint32_t> ioasAlloc(int iommufd) override {
        return call<Result<uint32_t>>("ioasAlloc", [&] { return inner_.ioasAlloc(iommufd); });
    }
    Result<std::vector<ports::IovaRange>> ioasIovaRanges(int iommufd, uint32_t ioasId) override {
        return call<Result<std::vector<ports::IovaRange>>>(
            "ioasIovaRanges", [&] { return inner_.ioasIovaRanges(iommufd, ioasId); });
    }
    Status destroy(int iommufd, uint32_t objectId) override {
        return call<Status>("destroy", [&] { return inner_.destroy(iommufd, objectId); });
    }
    Result<ports::HwInfo> hwInfo(int iommufd, uint32_t devId) override {
        return call<Result<ports::HwInfo>>("hwInfo", [&] { return inner_.hwInfo(iommufd, devId); });
    }
    Result<ports::FaultQueue> faultQueueAlloc(int iommufd) override {
        return call<Result<ports::FaultQueue>>("faultQueueAlloc",
                                               [&] { return inner_.faultQueueAlloc(iommufd); });
    }
    Result<UniqueFd> openVfioDevice(const std::string& vfioName) override {
        return call<Result<UniqueFd>>("openVfioDevice",
                                      [&] { return inner_.openVfioDevice(vfioName); });
    }
    Result<uint32_t> vfioBind(int deviceFd, int iommufd) override {
        return call<Result<uint32_t>>("vfioBind",
                                      [&] { return inner_.vfioBind(deviceFd, iommufd); });
    }
    Status vfioAttach(int deviceFd, uint32_t ptId, std::optional<uint32_t> pasid) override {
        return call<Status>("vfioAttach", [&] { return inner_.vfioAttach(deviceFd, ptId, pasid); });
    }
    Status vfioDetach(int deviceFd, std::optional<uint32_t> pasid) override {
        return call<Status>("vfioDetach", [&] { return inner_.vfioDetach(deviceFd, pasid); });
    }
    Result<UniqueFd> openVhostVdpa(const std::string& vhostName) override {
        return call<Result<UniqueFd>>("openVhostVdpa",
                                      [&] { return inner_.openVhostVdpa(vhostName); });
    }
    Result<uint32_t> vdpaGroupNum(int vhostFd) override {
        return call<Result<uint32_t>>("vdpaGroupNum", [&] { return inner_.vdpaGroupNum(vhostFd); });
    }
    Result<uint32_t> vdpaAsNum(int vhostFd) override {
        return call<Result<uint32_t>>("vdpaAsNum", [&] { return inner_.vdpaAsNum(vhostFd); });
    }
    Result<UniqueFd> openWorkQueue(const std::string& wqName) override {
        return call<Result<UniqueFd>>("openWorkQueue",
                                      [&] { return inner_.openWorkQueue(wqName); });
    }
    std::string nodePath(const std::string& node) const override { return inner_.nodePath(node); }
    Status grantNode(const std::string& path, uid_t uid) override {
        return call<Status>("grantNode", [&] { return inner_.grantNode(path, uid); });
    }
    Status revokeNode(const std::string& path, uid_t uid) override {
        return call<Status>("revokeNode", [&] { return inner_.revokeNode(path, uid); });
    }

private:
    template <typename R, typename F> R call(const char* name, F&& f) {
        ++calls_;
        log_.emplace_back(name);
        if (failAt_ != 0 && calls_ == failAt_) {
            hit_ = true;
            return R(KernelError{err_, "injected failure at call " + std::to_string(calls_) + " (" +
                                           name + ")"});
        }
        R r = f();
        if (!r.ok()) {
            innerErrors_.push_back(std::string(name) + ": " + r.error().message);
        }
        return r;
    }

    ports::Kernel& inner_;
    int failAt_ = 0;
    int err_ = EIO;
    int calls_ = 0;
    bool hit_ = false;
    std::vector<std::string> innerErrors_;
    std::vector<std::string> log_;
};

// The entries of /proc/self/fd, without the directory's own fd.
size_t openFdCount() {
    DIR* dir = ::opendir("/proc/self/fd");
    if (dir == nullptr) {
        ADD_FAILURE() << "cannot open /proc/self/fd";
        return 0;
    }
    const int self = ::dirfd(dir);
    size_t n = 0;
    while (const dirent* e = ::readdir(dir)) {
        const std::string_view name(e->d_name);
        int fd = -1;
        auto [p, ec] = std::from_chars(name.data(), name.data() + name.size(), fd);
        if (ec == std::errc() && p == name.data() + name.size() && fd != self) {
            ++n;
        }
    }
    ::closedir(dir);
    return n;
}

// ---- the host --------------------------------------------------------------

// Devices of the test host (see testHost()).
constexpr const char* kNicA = "0000:01:00.0";        // group 1, vfio0, PASID 20, dmar0 (20)
constexpr const char* kNicB = "0000:02:00.0";        // group 2, vfio1, PASID 20, dmar1 (16)
constexpr const char* kPair0 = "0000:03:00.0";       // group 3 (two members), vfio2, no PASID
constexpr const char* kPair1 = "0000:03:00.1";       // group 3, vfio3, no PASID
constexpr const char* kBlocked = "0000:04:00.0";     // group 4, not viable, vfio4
constexpr const char* kBlocker = "0000:04:00.1";     // group 4, bound to snd_hda_intel
constexpr const char* kNoCdev = "0000:05:00.0";      // group 5, bound to ixgbe: no vfioDevice
constexpr const char* kPf = "0000:06:00.0";          // group 6, vfio6, PASID 20, dmar0
constexpr const char* kVf = "0000:06:00.1";          // group 7, vfio7, no PASID cap, physfn kPf
constexpr const char* kTiny = "0000:08:00.0";        // group 8, vfio8, PASID 2, dmar0
constexpr const char* kDsa = "0000:09:00.0";         // idxd, PASID 20: parent of the queues
constexpr const char* kVdpaPf = "0000:0a:00.0";      // mlx5_core, PASID 20: parent of vdpa0
constexpr const char* kNoPasidUnit = "0000:0b:00.0"; // group 11, vfio11, PASID 20, dmar2 (none)

constexpr const char* kVdpa = "vdpa0";          // vhost-vdpa-0
constexpr const char* kVdpaNoVhost = "vdpa1";   // virtio_vdpa: no vhost device
constexpr const char* kQueue = "wq0.0";         // user, enabled
constexpr const char* kKernelQueue = "wq0.1";   // kernel, enabled
constexpr const char* kDisabledQueue = "wq0.2"; // user, disabled

IommuUnit vtdUnit(const std::string& name, bool pasid, uint32_t width) {
    IommuUnit u;
    u.name = name;
    u.kind = UnitKind::IntelVtd;
    VtdCaps caps;
    caps.scalableMode = true;
    caps.pasid = pasid;
    caps.pasidWidth = pasid ? width : 0;
    u.vtd = caps;
    return u;
}

IommuGroup group(uint32_t id, std::vector<std::string> devices, bool viable = true,
                 std::vector<GroupBlocker> blockers = {}) {
    IommuGroup g;
    g.id = id;
    g.type = GroupType::Dma;
    g.typeName = "DMA";
    g.devices = std::move(devices);
    g.viable = viable;
    g.blockers = std::move(blockers);
    return g;
}

PciDevice pci(const std::string& address, uint32_t groupId, const std::string& unit,
              const std::string& driver, const std::string& vfio, uint32_t pasidWidth) {
    PciDevice d;
    d.address = address;
    d.vendor = 0x8086;
    d.device = 0x1234;
    d.driver = driver;
    d.group = groupId;
    d.iommuUnit = unit;
    d.vfioDevice = vfio;
    if (pasidWidth != 0) {
        d.caps.express = true;
        d.caps.pasid.present = true;
        d.caps.pasid.offset = 0x200;
        d.caps.pasid.maxWidth = pasidWidth;
    }
    return d;
}

SiovQueue queue(const std::string& name, QueueType type, QueueState state) {
    SiovQueue q;
    q.name = name;
    q.idxdDevice = "dsa0";
    q.parentDevice = kDsa;
    q.mode = QueueMode::Dedicated;
    q.type = type;
    q.state = state;
    q.size = 16;
    q.charDevice = "dsa/" + name;
    return q;
}

Host testHost() {
    Host h;
    h.units.push_back(vtdUnit("dmar0", true, 20));
    h.units.push_back(vtdUnit("dmar1", true, 16));
    h.units.push_back(vtdUnit("dmar2", false, 0));

    h.groups.push_back(group(1, {kNicA}));
    h.groups.push_back(group(2, {kNicB}));
    h.groups.push_back(group(3, {kPair0, kPair1}));
    h.groups.push_back(
        group(4, {kBlocked, kBlocker}, false, {GroupBlocker{kBlocker, "snd_hda_intel"}}));
    h.groups.push_back(group(5, {kNoCdev}, false, {GroupBlocker{kNoCdev, "ixgbe"}}));
    h.groups.push_back(group(6, {kPf}));
    h.groups.push_back(group(7, {kVf}));
    h.groups.push_back(group(8, {kTiny}));
    h.groups.push_back(group(9, {kDsa}, false, {GroupBlocker{kDsa, "idxd"}}));
    h.groups.push_back(group(10, {kVdpaPf}, false, {GroupBlocker{kVdpaPf, "mlx5_core"}}));
    h.groups.push_back(group(11, {kNoPasidUnit}));

    h.devices.push_back(pci(kNicA, 1, "dmar0", "vfio-pci", "vfio0", 20));
    h.devices.push_back(pci(kNicB, 2, "dmar1", "vfio-pci", "vfio1", 20));
    h.devices.push_back(pci(kPair0, 3, "dmar0", "vfio-pci", "vfio2", 0));
    h.devices.push_back(pci(kPair1, 3, "dmar0", "vfio-pci", "vfio3", 0));
    h.devices.push_back(pci(kBlocked, 4, "dmar0", "vfio-pci", "vfio4", 0));
    h.devices.push_back(pci(kBlocker, 4, "dmar0", "snd_hda_intel", "", 0));
    h.devices.push_back(pci(kNoCdev, 5, "dmar0", "ixgbe", "", 20));
    PciDevice pf = pci(kPf, 6, "dmar0", "vfio-pci", "vfio6", 20);
    pf.virtfns = {kVf};
    pf.sriovTotalVfs = 8;
    pf.sriovNumVfs = 1;
    h.devices.push_back(pf);
    PciDevice vf = pci(kVf, 7, "dmar0", "vfio-pci", "vfio7", 0);
    vf.physfn = kPf;
    h.devices.push_back(vf);
    h.devices.push_back(pci(kTiny, 8, "dmar0", "vfio-pci", "vfio8", 2));
    h.devices.push_back(pci(kDsa, 9, "dmar0", "idxd", "", 20));
    h.devices.push_back(pci(kVdpaPf, 10, "dmar0", "mlx5_core", "", 20));
    h.devices.push_back(pci(kNoPasidUnit, 11, "dmar2", "vfio-pci", "vfio11", 20));
    for (auto& u : h.units) {
        for (const auto& d : h.devices) {
            if (d.iommuUnit == u.name) {
                u.devices.push_back(d.address);
            }
        }
    }

    h.queues.push_back(queue(kQueue, QueueType::User, QueueState::Enabled));
    h.queues.push_back(queue(kKernelQueue, QueueType::Kernel, QueueState::Enabled));
    h.queues.push_back(queue(kDisabledQueue, QueueType::User, QueueState::Disabled));

    VdpaDevice v;
    v.name = kVdpa;
    v.mgmtdev = std::string("pci/") + kVdpaPf;
    v.parentDevice = kVdpaPf;
    v.driver = "vhost_vdpa";
    v.vhostDevice = "vhost-vdpa-0";
    h.vdpa.push_back(v);
    VdpaDevice w;
    w.name = kVdpaNoVhost;
    w.mgmtdev = "vdpasim_net";
    w.driver = "virtio_vdpa";
    h.vdpa.push_back(w);
    return h;
}

std::vector<std::string> allIds(const Host& h) {
    std::vector<std::string> ids;
    for (const auto& d : h.devices) {
        ids.push_back(d.address);
    }
    for (const auto& v : h.vdpa) {
        ids.push_back(v.name);
    }
    for (const auto& q : h.queues) {
        ids.push_back(q.name);
    }
    return ids;
}

const char* modeName(ContextMode m) {
    return m == ContextMode::Attached ? "attached" : "handoff";
}

constexpr uid_t kAlice = 1000;
constexpr uid_t kBob = 1001;

Caller user(uid_t uid) {
    return Caller{uid, static_cast<pid_t>(4000 + uid), ":1.42"};
}
Caller root() {
    return Caller{0, 1, ":1.1"};
}

// ---- the fixture -----------------------------------------------------------

class EngineTest : public ::testing::Test {
protected:
    EngineTest()
        : host_(testHost()), sim_(sim::SimConfig::fromHost(host_, "/dev")), kernel_(sim_),
          broker_(kernel_), engine_(std::make_unique<Engine>(kernel_, pasids_, broker_)) {
        engine_->setHost(host_);
        engine_->setConfig(testing::allowAllConfig());
    }

    // A new engine on the same kernel, as after svad restarted, recording in
    // `store` and keeping fds in `fds`; `pasids` is the new run's pool.
    void restartEngine(PasidAllocator& pasids, ports::StateStore* store,
                       ports::FdStore* fds = nullptr) {
        engine_.reset();
        engine_ = std::make_unique<Engine>(kernel_, pasids, broker_);
        engine_->setHost(host_);
        engine_->setConfig(testing::allowAllConfig());
        engine_->setStateStore(store, {});
        engine_->setFdStore(fds);
    }

    AllocateRequest request(std::vector<std::string> devices,
                            ContextMode mode = ContextMode::Handoff, bool faultQueue = false,
                            Caller caller = user(kAlice), const std::string& vm = "vm-1") {
        AllocateRequest r;
        r.vm = vm;
        r.devices = std::move(devices);
        r.mode = mode;
        r.faultQueue = faultQueue;
        r.caller = std::move(caller);
        return r;
    }

    // Allocates and expects success; the context's id.
    uint64_t allocOk(const AllocateRequest& r) {
        auto out = engine_->allocate(r, 1234);
        EXPECT_TRUE(out.ok()) << (out.ok() ? "" : out.failure().message);
        return out.ok() ? out.value()->id : 0;
    }

    // Allocates and expects the failure `e`; its message.
    std::string allocFails(const AllocateRequest& r, Error e) {
        auto out = engine_->allocate(r, 1234);
        if (out.ok()) {
            ADD_FAILURE() << "allocation succeeded, expected " << names::errorInfo(e).dbusName;
            return {};
        }
        EXPECT_EQ(out.failure().error, e) << out.failure().message;
        return out.failure().message;
    }

    // Nothing held anywhere: no context, no device, no PASID, no simulated
    // kernel object (after the sim noticed the closes).
    void expectNothingHeld(const std::string& where) {
        SCOPED_TRACE(where);
        EXPECT_TRUE(engine_->contexts().empty());
        for (const auto& id : allIds(host_)) {
            EXPECT_EQ(engine_->holderOf(id), 0u) << id;
        }
        EXPECT_EQ(pasids_.inUse(), 0u);
        EXPECT_EQ(engine_->pasidCount(), 0u);
        sim_.collect();
        const sim::SimStats s = sim_.stats();
        EXPECT_EQ(s.files, 0u);
        EXPECT_EQ(s.contexts, 0u);
        EXPECT_EQ(s.objects, 0u);
        EXPECT_EQ(s.bindings, 0u);
        EXPECT_EQ(s.attachments, 0u);
    }

    Host host_;
    sim::KernelSim sim_;
    FailingKernel kernel_;
    PasidAllocator pasids_;
    testing::OpenBroker broker_;
    std::unique_ptr<Engine> engine_;
};

// ---- fail-nth sweeps ---------------------------------------------------------

Error expectedError(int err) {
    switch (err) {
    case EIO:
        return Error::KernelError;
    case EBUSY:
        return Error::Busy;
    case ENOTTY:
        return Error::NotSupported;
    default:
        return names::errorFromErrno(err);
    }
}

constexpr int kMaxCalls = 64; // far more kernel calls than one allocation makes

TEST_F(EngineTest, FailNthAllocateRollsBackEverything) {
    const std::vector<std::string> devices = {kNicA, kNicB, kVdpa, kQueue};
    for (ContextMode mode : {ContextMode::Handoff, ContextMode::Attached}) {
        for (bool faultQueue : {false, true}) {
            for (int err : {EIO, EBUSY, ENOTTY}) {
                bool succeeded = false;
                int injected = 0;
                for (int n = 1; n <= kMaxCalls && !succeeded; ++n) {
                    SCOPED_TRACE(std::string(modeName(mode)) + (faultQueue ? " +fault" : "") +
                                 " errno " + std::to_string(err) + " N=" + std::to_string(n));
                    const size_t fdsBefore = openFdCount();
                    kernel_.clearInnerErrors();
                    broker_.decided.clear();
                    broker_.prepared.clear();
                    broker_.released.clear();
                    kernel_.arm(n, err);
                    auto out = engine_->allocate(request(devices, mode, faultQueue), 1);
                    const bool hit = kernel_.hit();
                    kernel_.disarm();
                    if (!hit) {
                        // Every call went through: a complete context.
                        ASSERT_TRUE(out.ok()) << out.failure().message;
                        succeeded = true;
                        Context* ctx = out.value();
                        EXPECT_EQ(ctx->devices.size(), devices.size());
                        EXPECT_EQ(ctx->faultQueueFd.valid(), faultQueue);
                        EXPECT_EQ(ctx->ioasId != 0, mode == ContextMode::Attached);
                        for (const auto& d : devices) {
                            EXPECT_EQ(engine_->holderOf(d), ctx->id) << d;
                        }
                        EXPECT_GT(openFdCount(), fdsBefore);
                        EXPECT_TRUE(engine_->release(ctx->id, user(kAlice)).ok());
                    } else {
                        ++injected;
                        ASSERT_FALSE(out.ok()) << "the injected failure was ignored";
                        EXPECT_EQ(out.failure().error, expectedError(err)) << out.failure().message;
                        EXPECT_NE(out.failure().message.find("injected failure at call " +
                                                             std::to_string(n)),
                                  std::string::npos)
                            << out.failure().message;
                    }
                    EXPECT_EQ(openFdCount(), fdsBefore) << "fds leaked";
                    // Every device was decided on before anything was prepared, and
                    // whatever the broker prepared it was told to release.
                    EXPECT_EQ(broker_.decided, devices);
                    auto prepared = broker_.prepared;
                    auto released = broker_.released;
                    std::sort(prepared.begin(), prepared.end());
                    std::sort(released.begin(), released.end());
                    EXPECT_EQ(prepared, released);
                    if (!hit) {
                        EXPECT_EQ(broker_.prepared, devices);
                    }
                    // The rollback's (or the release's) own kernel calls all succeed.
                    EXPECT_TRUE(kernel_.innerErrors().empty())
                        << ::testing::PrintToString(kernel_.innerErrors());
                    expectNothingHeld("after N=" + std::to_string(n));
                }
                EXPECT_TRUE(succeeded)
                    << "no allocation succeeded within " << kMaxCalls << " calls";
                // Every kernel call of a complete allocation was failed once (the
                // queue's: the grant of its node).
                const int expectedCalls = 1 + (mode == ContextMode::Attached ? 2 : 0) +
                                          2 * (mode == ContextMode::Attached ? 3 : 1) + 3 + 1 +
                                          (faultQueue ? 1 : 0);
                EXPECT_EQ(injected, expectedCalls)
                    << modeName(mode) << (faultQueue ? " +fault" : "");
            }
        }
    }
}

TEST_F(EngineTest, FailNthAllocatePasidAttachedReleasesThePasid) {
    for (int err : {EIO, EBUSY, ENOTTY}) {
        SCOPED_TRACE("errno " + std::to_string(err));
        const size_t fdsBefore = openFdCount();
        const uint64_t id = allocOk(request({kNicA, kVdpa, kQueue}, ContextMode::Attached, true));
        ASSERT_NE(id, 0u);
        bool succeeded = false;
        for (int n = 1; n <= kMaxCalls && !succeeded; ++n) {
            SCOPED_TRACE("N=" + std::to_string(n));
            const size_t fdsHeld = openFdCount();
            kernel_.arm(n, err);
            auto out = engine_->allocatePasid(id, kNicA, user(kAlice));
            const bool hit = kernel_.hit();
            kernel_.disarm();
            if (!hit) {
                ASSERT_TRUE(out.ok()) << out.failure().message;
                succeeded = true;
                EXPECT_EQ(out.value(), PasidAllocator::kLast); // from the top of 20 bits
                EXPECT_EQ(pasids_.inUse(), 1u);
                EXPECT_EQ(pasids_.holder(PasidAllocator::kLast), "vm-1");
                EXPECT_EQ(engine_->find(id)->pasids.count(PasidAllocator::kLast), 1u);
                sim_.collect();
                EXPECT_EQ(sim_.stats().attachments, 2u); // the RID and the PASID
            } else {
                ASSERT_FALSE(out.ok());
                EXPECT_EQ(out.failure().error, expectedError(err)) << out.failure().message;
                EXPECT_EQ(pasids_.inUse(), 0u) << "the PASID was not given back";
                EXPECT_EQ(engine_->pasidCount(), 0u);
                sim_.collect();
                EXPECT_EQ(sim_.stats().attachments, 1u); // the RID only
            }
            EXPECT_EQ(openFdCount(), fdsHeld);
        }
        EXPECT_TRUE(succeeded);
        kernel_.clearInnerErrors();
        EXPECT_TRUE(engine_->release(id, user(kAlice)).ok());
        EXPECT_TRUE(kernel_.innerErrors().empty())
            << ::testing::PrintToString(kernel_.innerErrors());
        EXPECT_EQ(openFdCount(), fdsBefore);
        expectNothingHeld("after release");
    }
}

// A kernel call of the teardown failing (a detach, a destroy) must not keep
// anything alive: closing the fds is what really ends the kernel's objects.
TEST_F(EngineTest, FailNthReleaseStillReleasesEverything) {
    for (bool faultQueue : {false, true}) {
        bool clean = false;
        for (int n = 1; n <= kMaxCalls && !clean; ++n) {
            SCOPED_TRACE(std::string(faultQueue ? "+fault" : "") + " N=" + std::to_string(n));
            const size_t fdsBefore = openFdCount();
            const uint64_t id =
                allocOk(request({kNicA, kNicB, kVdpa, kQueue}, ContextMode::Attached, faultQueue));
            ASSERT_NE(id, 0u);
            ASSERT_TRUE(engine_->allocatePasid(id, kNicA, user(kAlice)).ok());
            ASSERT_TRUE(engine_->allocatePasid(id, kNicB, user(kAlice)).ok());
            kernel_.arm(n, EIO);
            EXPECT_TRUE(engine_->release(id, user(kAlice)).ok());
            clean = !kernel_.hit();
            kernel_.disarm();
            EXPECT_EQ(openFdCount(), fdsBefore) << "fds leaked";
            expectNothingHeld("after release");
        }
        EXPECT_TRUE(clean);
    }
}

// ---- engine semantics ----------------------------------------------------------

// A queue's node is granted per uid: each uid's entry goes with its last
// context on the queue; a failed grant leaves no context and nothing granted.
TEST_F(EngineTest, QueueNodesAreGrantedPerUidUntilItsLastContextEnds) {
    Host shared = host_;
    for (auto& q : shared.queues) {
        q.mode = q.name == kQueue ? QueueMode::Shared : q.mode;
    }
    engine_->setHost(shared);
    const std::string node = "/dev/dsa/" + std::string(kQueue);
    const uint64_t a1 = allocOk(request({kQueue}));
    const uint64_t a2 =
        allocOk(request({kQueue}, ContextMode::Handoff, false, user(kAlice), "vm-2"));
    const uint64_t b = allocOk(request({kQueue}, ContextMode::Handoff, false, user(kBob), "vm-3"));
    EXPECT_EQ(engine_->find(a1)->devices.at(0).node, node);
    EXPECT_EQ(sim_.grants().at(node), (std::set<uid_t>{kAlice, kBob}));
    ASSERT_TRUE(engine_->release(a1, user(kAlice)).ok());
    EXPECT_EQ(sim_.grants().at(node), (std::set<uid_t>{kAlice, kBob})); // a2 is alice's too
    ASSERT_TRUE(engine_->release(b, user(kBob)).ok());
    EXPECT_EQ(sim_.grants().at(node), (std::set<uid_t>{kAlice}));
    ASSERT_TRUE(engine_->release(a2, user(kAlice)).ok());
    EXPECT_EQ(sim_.grants().count(node), 0u);

    // The grant fails (the node is gone from the kernel): a named error, nothing left.
    sim::SimConfig none = sim_.config();
    none.workQueues.clear();
    sim_.setDevices(none);
    const std::string why = allocFails(request({kNicA, kQueue}), Error::NotFound);
    EXPECT_NE(why.find(node), std::string::npos) << why;
    EXPECT_TRUE(sim_.grants().empty());
    expectNothingHeld("after a failed grant");
}

TEST_F(EngineTest, HandoffAndAttachedContexts) {
    const uint64_t h = allocOk(request({kNicA, kVdpa, kQueue}));
    const Context* hc = engine_->find(h);
    ASSERT_NE(hc, nullptr);
    EXPECT_EQ(hc->vm, "vm-1");
    EXPECT_EQ(hc->ownerUid, kAlice);
    EXPECT_EQ(hc->ownerPid, user(kAlice).pid);
    EXPECT_EQ(hc->ownerBusName, ":1.42");
    EXPECT_EQ(hc->mode, ContextMode::Handoff);
    EXPECT_EQ(hc->state, ContextState::Active);
    EXPECT_EQ(hc->createdUsec, 1234u);
    EXPECT_TRUE(hc->iommufd.valid());
    EXPECT_EQ(hc->ioasId, 0u);
    EXPECT_FALSE(hc->faultQueueFd.valid());
    ASSERT_EQ(hc->devices.size(), 3u);
    EXPECT_EQ(hc->devices[0].kind, HeldKind::Vfio);
    EXPECT_FALSE(hc->devices[0].attached);
    EXPECT_EQ(hc->devices[1].kind, HeldKind::Vdpa);
    EXPECT_EQ(hc->devices[1].vdpaGroups, 2u);
    EXPECT_EQ(hc->devices[1].vdpaAddressSpaces, 2u);
    EXPECT_EQ(hc->devices[2].kind, HeldKind::Queue);
    for (const auto& d : hc->devices) {
        EXPECT_EQ(d.fd.valid(), d.kind != HeldKind::Queue) << d.id; // a queue: its node
        EXPECT_EQ(d.node.empty(), d.kind != HeldKind::Queue) << d.id;
        EXPECT_EQ(d.pasidWidth, 20u) << d.id; // parents on dmar0 with PASID 20
    }

    const uint64_t a =
        allocOk(request({kNicB, kPf}, ContextMode::Attached, true, user(kBob), "vm-2"));
    const Context* ac = engine_->find(a);
    ASSERT_NE(ac, nullptr);
    EXPECT_NE(a, h);
    EXPECT_EQ(ac->mode, ContextMode::Attached);
    EXPECT_NE(ac->ioasId, 0u);
    EXPECT_FALSE(ac->iovaRanges.empty());
    EXPECT_NE(ac->faultQueueId, 0u);
    EXPECT_TRUE(ac->faultQueueFd.valid());
    for (const auto& d : ac->devices) {
        EXPECT_TRUE(d.attached) << d.id;
        EXPECT_NE(d.devId, 0u) << d.id;
    }
    EXPECT_EQ(ac->device(kNicB)->pasidWidth, 16u); // min(device 20, dmar1 16)
    EXPECT_EQ(ac->device(kNicA), nullptr);
    EXPECT_EQ(engine_->contexts().size(), 2u);
}

// A device the broker refuses stops the request before anything is prepared.
TEST_F(EngineTest, ABrokerDenialPreparesNothing) {
    broker_.deny = {kVdpa};
    const size_t fdsBefore = openFdCount();
    allocFails(request({kNicA, kVdpa, kQueue}), Error::PolicyDenied);
    EXPECT_NE(std::find(broker_.decided.begin(), broker_.decided.end(), kVdpa),
              broker_.decided.end());
    EXPECT_TRUE(broker_.prepared.empty()) << ::testing::PrintToString(broker_.prepared);
    EXPECT_TRUE(broker_.released.empty()) << ::testing::PrintToString(broker_.released);
    EXPECT_EQ(openFdCount(), fdsBefore);
    expectNothingHeld("after the denial");
    broker_.deny.clear();
    EXPECT_NE(allocOk(request({kNicA, kVdpa, kQueue})), 0u);
    EXPECT_EQ(broker_.prepared, (std::vector<std::string>{kNicA, kVdpa, kQueue}));
}

TEST_F(EngineTest, ValidationFailsBeforeAnyKernelCall) {
    kernel_.arm(0);
    EXPECT_NE(allocFails(request({kNicA, kNicB, kNicA}), Error::InvalidArgument).find("twice"),
              std::string::npos);
    EXPECT_NE(allocFails(request({kNicA, "0000:99:00.0"}), Error::NotFound).find("0000:99:00.0"),
              std::string::npos);
    allocFails(request({kNicA, "vdpa9"}), Error::NotFound);
    allocFails(request({kNicA, "wq9.9"}), Error::NotFound);
    allocFails(request({}), Error::InvalidArgument);
    allocFails(request({kNicA}, ContextMode::Unknown), Error::InvalidArgument);
    EXPECT_EQ(kernel_.calls(), 0) << ::testing::PrintToString(kernel_.log());
    expectNothingHeld("after the failures");
}

TEST_F(EngineTest, VmNameIsValidated) {
    allocFails(request({kNicA}, ContextMode::Handoff, false, user(kAlice), ""),
               Error::InvalidArgument);
    allocFails(request({kNicA}, ContextMode::Handoff, false, user(kAlice), "my vm"),
               Error::InvalidArgument);
    allocFails(request({kNicA}, ContextMode::Handoff, false, user(kAlice), "vm/1"),
               Error::InvalidArgument);
    allocFails(request({kNicA}, ContextMode::Handoff, false, user(kAlice), "vm\n"),
               Error::InvalidArgument);
    allocFails(request({kNicA}, ContextMode::Handoff, false, user(kAlice), std::string(129, 'a')),
               Error::InvalidArgument);
    expectNothingHeld("after the failures");
    const uint64_t id =
        allocOk(request({kNicA}, ContextMode::Handoff, false, user(kAlice), std::string(128, 'a')));
    EXPECT_TRUE(engine_->release(id, user(kAlice)).ok());
    allocOk(request({kNicA}, ContextMode::Handoff, false, user(kAlice), "vm-1_a.b:c@d"));
}

TEST_F(EngineTest, NonViableGroupIsBusyAndNamesTheBlocker) {
    const std::string m = allocFails(request({kBlocked}), Error::Busy);
    EXPECT_NE(m.find(kBlocker), std::string::npos) << m;
    EXPECT_NE(m.find("group 4"), std::string::npos) << m;
    expectNothingHeld("after the failure");
}

TEST_F(EngineTest, HeldDeviceAndGroupMembersAreBusy) {
    const uint64_t id = allocOk(request({kPair0, kNicA}));
    EXPECT_EQ(engine_->holderOf(kPair0), id);
    EXPECT_EQ(engine_->holderOf(kPair1), 0u);

    // The same device, by the same or another user.
    std::string m = allocFails(request({kNicA}), Error::Busy);
    EXPECT_NE(m.find(kNicA), std::string::npos) << m;
    allocFails(request({kNicB, kNicA}, ContextMode::Handoff, false, user(kBob), "vm-2"),
               Error::Busy);
    // Another member of the same IOMMU group.
    m = allocFails(request({kPair1}, ContextMode::Handoff, false, user(kBob), "vm-2"), Error::Busy);
    EXPECT_NE(m.find(kPair0), std::string::npos) << m;
    // Nothing of the failed requests is held.
    EXPECT_EQ(engine_->holderOf(kNicB), 0u);
    EXPECT_EQ(engine_->holderOf(kPair1), 0u);
    EXPECT_EQ(engine_->contexts().size(), 1u);

    // Both members in one context are fine.
    ASSERT_TRUE(engine_->release(id, user(kAlice)).ok());
    const uint64_t both = allocOk(request({kPair0, kPair1}));
    EXPECT_EQ(engine_->holderOf(kPair0), both);
    EXPECT_EQ(engine_->holderOf(kPair1), both);
}

// A function handed out whole and a vDPA device or work queue on it (or on a
// function it governs: its IOMMU group, a PF's VFs) are refused together in one
// request exactly as they are across two contexts; functions that govern one
// another go together only in one context.
TEST_F(EngineTest, RelativesAreRefusedWithinARequestAsAcrossContexts) {
    Host h = testHost();
    h.vdpa[0].parentDevice = kVf;      // a vDPA device on the VF
    h.queues[0].parentDevice = kPair1; // a work queue on the other function of group 3
    engine_->setHost(h);

    const std::vector<std::pair<std::string, std::string>> exclusive{
        {kVf, kVdpa}, {kPf, kVdpa}, {kPair1, kQueue}, {kPair0, kQueue}};
    for (const auto& [function, child] : exclusive) {
        SCOPED_TRACE(::testing::Message() << function << " and " << child);
        for (const auto& devices : {std::vector<std::string>{function, child},
                                    std::vector<std::string>{child, function}}) {
            const std::string m = allocFails(request(devices), Error::Busy);
            EXPECT_NE(m.find(child), std::string::npos) << m;
            EXPECT_NE(m.find("also in this request"), std::string::npos) << m;
            expectNothingHeld("after a refused request");
        }
        for (const auto& [first, second] :
             {std::pair{function, child}, std::pair{child, function}}) {
            const uint64_t id = allocOk(request({first}));
            const std::string m = allocFails(
                request({second}, ContextMode::Handoff, false, user(kBob), "vm-2"), Error::Busy);
            EXPECT_NE(m.find("held by context " + std::to_string(id)), std::string::npos) << m;
            ASSERT_TRUE(engine_->release(id, user(kAlice)).ok());
            expectNothingHeld("after the release");
        }
    }

    // A PF and its VF, or both functions of a group: one context, not two.
    for (const auto& [a, b] : {std::pair{kPf, kVf}, std::pair{kPair0, kPair1}}) {
        SCOPED_TRACE(std::string(a) + " and " + b);
        const uint64_t both = allocOk(request({a, b}));
        ASSERT_TRUE(engine_->release(both, user(kAlice)).ok());
        for (const auto& [first, second] : {std::pair{a, b}, std::pair{b, a}}) {
            const uint64_t id = allocOk(request({first}));
            const std::string m = allocFails(
                request({second}, ContextMode::Handoff, false, user(kBob), "vm-2"), Error::Busy);
            EXPECT_NE(m.find(first), std::string::npos) << m;
            ASSERT_TRUE(engine_->release(id, user(kAlice)).ok());
        }
    }
    expectNothingHeld("at the end");

    // Siblings are not relatives: a VF's vDPA device and the PF's other things.
    const uint64_t siblings = allocOk(request({kVdpa, kNicA}));
    EXPECT_NE(siblings, 0u);
}

TEST_F(EngineTest, DevicesWithoutAUsableNodeAreNotSupported) {
    std::string m = allocFails(request({kNoCdev}), Error::NotSupported);
    EXPECT_NE(m.find("ixgbe"), std::string::npos) << m;
    m = allocFails(request({kVdpaNoVhost}), Error::NotSupported);
    EXPECT_NE(m.find("virtio_vdpa"), std::string::npos) << m;
    allocFails(request({kKernelQueue}), Error::NotSupported);
    allocFails(request({kDisabledQueue}), Error::NotSupported);
    // A user queue that is enabled but has no char device.
    Host h = testHost();
    h.queues[0].charDevice.clear();
    engine_->setHost(h);
    allocFails(request({kQueue}), Error::NotSupported);
    expectNothingHeld("after the failures");
}

TEST_F(EngineTest, OwnerPidIsRootOnly) {
    auto r = request({kNicA});
    r.ownerPid = 777;
    allocFails(r, Error::PermissionDenied);
    expectNothingHeld("after the failure");
    r.caller = root();
    const uint64_t id = allocOk(r);
    ASSERT_NE(id, 0u);
    EXPECT_EQ(engine_->find(id)->ownerPid, 777);
    EXPECT_EQ(engine_->find(id)->ownerUid, 0u);
}

// A reservation's owner: only root hands it to another user's process, and
// either all of a VM's reservations move or none.
TEST_F(EngineTest, OnlyRootHandsAReservationToAnotherUser) {
    const uint64_t a = allocOk(request({kNicA}, ContextMode::Reserved));
    const uint64_t b = allocOk(request({kQueue}, ContextMode::Reserved));
    ASSERT_NE(a, 0u);
    ASSERT_NE(b, 0u);
    EXPECT_EQ(engine_->find(a)->ownerPid, 0);
    // Alice may name a process of her own, not Bob's.
    auto refused = engine_->setVmOwner("vm-1", 4242, kBob, user(kAlice));
    ASSERT_FALSE(refused.ok());
    EXPECT_EQ(refused.failure().error, Error::PermissionDenied);
    EXPECT_EQ(engine_->find(a)->ownerPid, 0);
    EXPECT_EQ(engine_->find(b)->ownerUid, kAlice);
    // Bob may not move Alice's reservations at all.
    EXPECT_EQ(engine_->setVmOwner("vm-1", 4243, kBob, user(kBob)).failure().error,
              Error::PermissionDenied);
    auto mine = engine_->setVmOwner("vm-1", 4244, kAlice, user(kAlice));
    ASSERT_TRUE(mine.ok()) << mine.failure().message;
    EXPECT_EQ(mine.value(), (std::vector<uint64_t>{a, b}));
    EXPECT_EQ(engine_->find(a)->ownerPid, 4244);
    EXPECT_EQ(engine_->find(b)->ownerPid, 4244);
    // Root may hand them to Bob's process.
    ASSERT_TRUE(engine_->setVmOwner("vm-1", 4245, kBob, root()).ok());
    EXPECT_EQ(engine_->find(a)->ownerUid, kBob);
    EXPECT_EQ(engine_->setVmOwner("vm-none", 1, 0, root()).failure().error, Error::NotFound);
}

TEST_F(EngineTest, OnlyTheOwnerOrRootActsOnAContext) {
    const uint64_t id = allocOk(request({kNicA, kNicB}));
    ASSERT_NE(id, 0u);
    const uint64_t other = allocOk(request({kPf}, ContextMode::Handoff, false, user(kBob), "vm-2"));
    ASSERT_NE(other, 0u);

    EXPECT_TRUE(engine_->checkAccess(id, user(kAlice)).ok());
    EXPECT_TRUE(engine_->checkAccess(id, root()).ok());
    EXPECT_EQ(engine_->checkAccess(id, user(kBob)).failure().error, Error::PermissionDenied);
    EXPECT_EQ(engine_->checkAccess(999, root()).failure().error, Error::NotFound);

    // Bob may do nothing to Alice's context.
    EXPECT_EQ(engine_->release(id, user(kBob)).failure().error, Error::PermissionDenied);
    auto p = engine_->allocatePasid(id, kNicA, user(kBob));
    ASSERT_FALSE(p.ok());
    EXPECT_EQ(p.failure().error, Error::PermissionDenied);
    EXPECT_EQ(pasids_.inUse(), 0u);
    EXPECT_EQ(engine_->setVirtualId(id, kNicA, 5, user(kBob)).failure().error,
              Error::PermissionDenied);
    EXPECT_TRUE(engine_->find(id)->virtualIds.empty());
    auto mine = engine_->allocatePasid(id, kNicA, user(kAlice));
    ASSERT_TRUE(mine.ok());
    EXPECT_EQ(engine_->releasePasid(id, mine.value(), user(kBob)).failure().error,
              Error::PermissionDenied);
    EXPECT_EQ(engine_->find(id)->pasids.count(mine.value()), 1u);
    EXPECT_NE(engine_->find(id), nullptr);

    // Root may do everything.
    auto rp = engine_->allocatePasid(id, kNicB, root());
    ASSERT_TRUE(rp.ok()) << rp.failure().message;
    EXPECT_EQ(pasids_.holder(rp.value()), "vm-1"); // held for the context's VM
    EXPECT_TRUE(engine_->releasePasid(id, mine.value(), root()).ok());
    EXPECT_TRUE(engine_->setVirtualId(id, kNicA, 5, root()).ok());
    EXPECT_TRUE(engine_->release(id, root()).ok());
    EXPECT_EQ(engine_->find(id), nullptr);

    // Unknown contexts.
    EXPECT_EQ(engine_->release(id, root()).failure().error, Error::NotFound);
    EXPECT_EQ(engine_->allocatePasid(id, kNicA, root()).failure().error, Error::NotFound);
    EXPECT_EQ(engine_->releasePasid(id, 1, root()).failure().error, Error::NotFound);
    EXPECT_EQ(engine_->setVirtualId(id, kNicA, 1, root()).failure().error, Error::NotFound);
    EXPECT_NE(engine_->find(other), nullptr);
}

TEST_F(EngineTest, ReleaseTwiceIsNotFound) {
    const uint64_t id = allocOk(request({kNicA}));
    EXPECT_TRUE(engine_->release(id, user(kAlice)).ok());
    auto again = engine_->release(id, user(kAlice));
    ASSERT_FALSE(again.ok());
    EXPECT_EQ(again.failure().error, Error::NotFound);
    engine_->releaseUnchecked(id); // a no-op
    expectNothingHeld("after the releases");
}

TEST_F(EngineTest, ReleasedDevicesCanBeAllocatedAgain) {
    for (ContextMode mode : {ContextMode::Handoff, ContextMode::Attached}) {
        SCOPED_TRACE(modeName(mode));
        const size_t fdsBefore = openFdCount();
        for (int round = 0; round < 3; ++round) {
            const uint64_t id = allocOk(request({kNicA, kNicB, kVdpa, kQueue}, mode, true));
            ASSERT_NE(id, 0u);
            ASSERT_TRUE(engine_->allocatePasid(id, kNicA, user(kAlice)).ok());
            EXPECT_EQ(engine_->holderOf(kNicA), id);
            EXPECT_TRUE(engine_->release(id, user(kAlice)).ok());
            EXPECT_EQ(engine_->holderOf(kNicA), 0u);
        }
        // By another user too, once free.
        const uint64_t id = allocOk(request({kNicA, kVdpa}, mode, false, user(kBob), "vm-2"));
        engine_->releaseUnchecked(id);
        EXPECT_EQ(openFdCount(), fdsBefore);
        expectNothingHeld("after the rounds");
    }
}

TEST_F(EngineTest, ContextIdsAreNotReused) {
    const uint64_t a = allocOk(request({kNicA}));
    EXPECT_TRUE(engine_->release(a, user(kAlice)).ok());
    const uint64_t b = allocOk(request({kNicA}));
    EXPECT_GT(b, a);
}

// ---- PASIDs ------------------------------------------------------------------------

TEST_F(EngineTest, PasidWidthIsTheSmallerOfDeviceAndUnit) {
    for (ContextMode mode : {ContextMode::Handoff, ContextMode::Attached}) {
        SCOPED_TRACE(modeName(mode));
        PasidAllocator& pool = pasids_;
        const uint64_t id = allocOk(request({kNicA, kNicB}, mode));
        ASSERT_NE(id, 0u);
        EXPECT_EQ(engine_->find(id)->device(kNicA)->pasidWidth, 20u);
        EXPECT_EQ(engine_->find(id)->device(kNicB)->pasidWidth, 16u);
        // Another VM holds every PASID below 2^16.
        for (uint32_t i = 1; i < (uint32_t{1} << 16); ++i) {
            ASSERT_TRUE(pool.allocate(16, "filler").ok()) << i;
        }
        auto narrow = engine_->allocatePasid(id, kNicB, user(kAlice));
        ASSERT_FALSE(narrow.ok());
        EXPECT_EQ(narrow.failure().error, Error::Busy) << narrow.failure().message;
        auto wide = engine_->allocatePasid(id, kNicA, user(kAlice));
        ASSERT_TRUE(wide.ok()) << wide.failure().message;
        EXPECT_EQ(wide.value(), PasidAllocator::kLast);
        // Once one below 2^16 is free, the narrow device gets it.
        ASSERT_TRUE(pool.release(77, "filler"));
        auto got = engine_->allocatePasid(id, kNicB, user(kAlice));
        ASSERT_TRUE(got.ok()) << got.failure().message;
        EXPECT_EQ(got.value(), 77u);
        EXPECT_TRUE(engine_->release(id, user(kAlice)).ok());
        EXPECT_EQ(pool.releaseAll("filler"), (uint32_t{1} << 16) - 2);
        expectNothingHeld("after release");
    }
}

TEST_F(EngineTest, TinyPasidWidthGivesExactlyThreePasids) {
    for (ContextMode mode : {ContextMode::Handoff, ContextMode::Attached}) {
        SCOPED_TRACE(modeName(mode));
        const uint64_t id = allocOk(request({kTiny, kNicA}, mode));
        ASSERT_NE(id, 0u);
        EXPECT_EQ(engine_->find(id)->device(kTiny)->pasidWidth, 2u);
        for (uint32_t want = 3; want >= 1; --want) { // from the top of its range
            auto p = engine_->allocatePasid(id, kTiny, user(kAlice));
            ASSERT_TRUE(p.ok()) << p.failure().message;
            EXPECT_EQ(p.value(), want);
        }
        auto full = engine_->allocatePasid(id, kTiny, user(kAlice));
        ASSERT_FALSE(full.ok());
        EXPECT_EQ(full.failure().error, Error::Busy);
        EXPECT_NE(full.failure().message.find(kTiny), std::string::npos);
        EXPECT_EQ(pasids_.inUse(), 3u);
        // A wider device in the same context still gets one.
        auto wide = engine_->allocatePasid(id, kNicA, user(kAlice));
        ASSERT_TRUE(wide.ok());
        EXPECT_EQ(wide.value(), PasidAllocator::kLast);
        // Releasing one makes room again.
        EXPECT_TRUE(engine_->releasePasid(id, 2, user(kAlice)).ok());
        EXPECT_EQ(engine_->releasePasid(id, 2, user(kAlice)).failure().error, Error::NotFound);
        auto again = engine_->allocatePasid(id, kTiny, user(kAlice));
        ASSERT_TRUE(again.ok());
        EXPECT_EQ(again.value(), 2u);
        if (mode == ContextMode::Attached) {
            sim_.collect();
            EXPECT_EQ(sim_.stats().attachments, 2u + 4u); // two RIDs, four PASIDs
        }
        kernel_.clearInnerErrors();
        EXPECT_TRUE(engine_->release(id, user(kAlice)).ok());
        EXPECT_TRUE(kernel_.innerErrors().empty())
            << ::testing::PrintToString(kernel_.innerErrors());
        expectNothingHeld("after release");
    }
}

TEST_F(EngineTest, VfUsesItsPfPasidCapability) {
    const uint64_t id = allocOk(request({kVf}));
    ASSERT_NE(id, 0u);
    EXPECT_EQ(engine_->find(id)->device(kVf)->pasidWidth, 20u);
    auto p = engine_->allocatePasid(id, kVf, user(kAlice));
    ASSERT_TRUE(p.ok()) << p.failure().message;
    EXPECT_EQ(p.value(), PasidAllocator::kLast);

    // Without a PASID capability on the PF either, the VF has none.
    Host h = testHost();
    for (auto& d : h.devices) {
        if (d.address == kPf) {
            d.caps.pasid = PasidCap{};
        }
    }
    engine_->setHost(h);
    ASSERT_TRUE(engine_->release(id, user(kAlice)).ok()); // a PF and its VF go to one owner
    const uint64_t none = allocOk(request({kPf}, ContextMode::Handoff, false, user(kBob), "vm-2"));
    EXPECT_EQ(engine_->find(none)->device(kPf)->pasidWidth, 0u);
}

// The sim gives a VF the PASID log2 of its own (absent) capability, not its
// PF's: SimConfig::fromHost ignores physfn. An attached VF therefore can't
// attach a PASID the engine hands out. Enable once the sim follows the PF.
TEST_F(EngineTest, VfPasidAttachesInAttachedMode) {
    const uint64_t id = allocOk(request({kVf}, ContextMode::Attached));
    ASSERT_NE(id, 0u);
    auto p = engine_->allocatePasid(id, kVf, user(kAlice));
    ASSERT_TRUE(p.ok()) << p.failure().message;
}

TEST_F(EngineTest, DevicesWithoutPasidAreNotSupported) {
    const uint64_t id = allocOk(request({kPair0, kNoPasidUnit, kNicA}));
    ASSERT_NE(id, 0u);
    EXPECT_EQ(engine_->find(id)->device(kPair0)->pasidWidth, 0u);
    EXPECT_EQ(engine_->find(id)->device(kNoPasidUnit)->pasidWidth, 0u); // its unit has none
    for (const char* dev : {kPair0, kNoPasidUnit}) {
        auto p = engine_->allocatePasid(id, dev, user(kAlice));
        ASSERT_FALSE(p.ok()) << dev;
        EXPECT_EQ(p.failure().error, Error::NotSupported) << dev;
    }
    // A device that is not in the context.
    auto p = engine_->allocatePasid(id, kNicB, user(kAlice));
    ASSERT_FALSE(p.ok());
    EXPECT_EQ(p.failure().error, Error::InvalidArgument);
    EXPECT_EQ(pasids_.inUse(), 0u);
    EXPECT_EQ(engine_->releasePasid(id, 1, user(kAlice)).failure().error, Error::NotFound);
}

TEST_F(EngineTest, PasidQuotaPerVm) {
    pasids_.setDefaultQuota(2);
    const uint64_t id = allocOk(request({kNicA, kNicB}));
    ASSERT_TRUE(engine_->allocatePasid(id, kNicA, user(kAlice)).ok());
    ASSERT_TRUE(engine_->allocatePasid(id, kNicB, user(kAlice)).ok());
    auto third = engine_->allocatePasid(id, kNicA, user(kAlice));
    ASSERT_FALSE(third.ok());
    EXPECT_EQ(third.failure().error, Error::QuotaExceeded);
    EXPECT_NE(third.failure().message.find("vm-1"), std::string::npos);
    EXPECT_EQ(pasids_.inUse(), 2u);
    EXPECT_EQ(engine_->pasidCount(), 2u);
    // Another VM has a quota of its own.
    const uint64_t other = allocOk(request({kPf}, ContextMode::Handoff, false, user(kBob), "vm-2"));
    auto p = engine_->allocatePasid(other, kPf, user(kBob));
    ASSERT_TRUE(p.ok());
    EXPECT_EQ(p.value(), PasidAllocator::kLast - 1); // kNicA took the top, kNicB 2^16 - 1
}

TEST_F(EngineTest, ReleasingAContextReturnsItsPasids) {
    const uint64_t id = allocOk(request({kNicA, kNicB}, ContextMode::Attached));
    for (int i = 0; i < 5; ++i) {
        ASSERT_TRUE(engine_->allocatePasid(id, i % 2 ? kNicA : kNicB, user(kAlice)).ok());
    }
    EXPECT_EQ(pasids_.inUse(), 5u);
    EXPECT_EQ(pasids_.count("vm-1"), 5u);
    EXPECT_EQ(engine_->pasidCount(), 5u);
    ASSERT_TRUE(engine_->release(id, user(kAlice)).ok());
    EXPECT_EQ(pasids_.inUse(), 0u);
    EXPECT_EQ(pasids_.count("vm-1"), 0u);
    EXPECT_EQ(engine_->pasidCount(), 0u);
    // The pool is whole again: the next one is the top.
    const uint64_t next = allocOk(request({kPf}, ContextMode::Handoff, false, user(kBob), "vm-2"));
    auto p = engine_->allocatePasid(next, kPf, user(kBob));
    ASSERT_TRUE(p.ok());
    EXPECT_EQ(p.value(), PasidAllocator::kLast);
}

TEST_F(EngineTest, EngineDestructorReleasesEverything) {
    const size_t fdsBefore = openFdCount();
    const uint64_t a = allocOk(request({kNicA, kVdpa}, ContextMode::Attached, true));
    allocOk(request({kNicB, kQueue}, ContextMode::Handoff, true, user(kBob), "vm-2"));
    ASSERT_TRUE(engine_->allocatePasid(a, kNicA, user(kAlice)).ok());
    kernel_.clearInnerErrors();
    engine_.reset();
    EXPECT_TRUE(kernel_.innerErrors().empty()) << ::testing::PrintToString(kernel_.innerErrors());
    EXPECT_EQ(pasids_.inUse(), 0u);
    EXPECT_EQ(openFdCount(), fdsBefore);
    sim_.collect();
    EXPECT_EQ(sim_.stats().files, 0u);
    EXPECT_EQ(sim_.stats().contexts, 0u);
    engine_ = std::make_unique<Engine>(kernel_, pasids_, broker_);
    engine_->setConfig(testing::allowAllConfig());
}

// ---- virtual IDs ---------------------------------------------------------------------

TEST_F(EngineTest, VirtualIds) {
    const uint64_t id = allocOk(request({kNicA, kNicB, kVdpa}));
    ASSERT_TRUE(engine_->setVirtualId(id, kNicA, 0x10, user(kAlice)).ok());
    EXPECT_EQ(engine_->find(id)->virtualIds.at(kNicA), 0x10u);
    // The same again, and a new one for the same device, are fine.
    EXPECT_TRUE(engine_->setVirtualId(id, kNicA, 0x10, user(kAlice)).ok());
    ASSERT_TRUE(engine_->setVirtualId(id, kNicA, 0x11, user(kAlice)).ok());
    EXPECT_EQ(engine_->find(id)->virtualIds.at(kNicA), 0x11u);
    // Another device may not take it.
    auto dup = engine_->setVirtualId(id, kNicB, 0x11, user(kAlice));
    ASSERT_FALSE(dup.ok());
    EXPECT_EQ(dup.failure().error, Error::Busy);
    EXPECT_NE(dup.failure().message.find(kNicA), std::string::npos) << dup.failure().message;
    EXPECT_EQ(engine_->find(id)->virtualIds.count(kNicB), 0u);
    // The ID kNicA gave up is free.
    ASSERT_TRUE(engine_->setVirtualId(id, kVdpa, 0x10, user(kAlice)).ok());
    EXPECT_EQ(engine_->find(id)->virtualIds.size(), 2u);
    // A device not in the context.
    EXPECT_EQ(engine_->setVirtualId(id, kPf, 0x20, user(kAlice)).failure().error,
              Error::InvalidArgument);
    // Another VM may use the same virtual ID.
    const uint64_t other = allocOk(request({kPf}, ContextMode::Handoff, false, user(kBob), "vm-2"));
    EXPECT_TRUE(engine_->setVirtualId(other, kPf, 0x11, user(kBob)).ok());
}

// "Unique in the VM": a second context of the same VM may not take an ID that
// the first gave to one of its devices, and gets it once that context is gone.
TEST_F(EngineTest, VirtualIdsAreUniquePerVmAcrossContexts) {
    const uint64_t first = allocOk(request({kNicA}));
    const uint64_t second = allocOk(request({kNicB}));
    ASSERT_TRUE(engine_->setVirtualId(first, kNicA, 0x20, user(kAlice)).ok());
    auto dup = engine_->setVirtualId(second, kNicB, 0x20, user(kAlice));
    ASSERT_FALSE(dup.ok());
    EXPECT_EQ(dup.failure().error, Error::Busy);
    EXPECT_NE(dup.failure().message.find(kNicA), std::string::npos) << dup.failure().message;
    EXPECT_NE(dup.failure().message.find("context " + std::to_string(first)), std::string::npos)
        << dup.failure().message;
    EXPECT_EQ(engine_->find(second)->virtualIds.count(kNicB), 0u);
    // Another ID is fine, and so is this one once kNicA moved on.
    EXPECT_TRUE(engine_->setVirtualId(second, kNicB, 0x21, user(kAlice)).ok());
    ASSERT_TRUE(engine_->setVirtualId(first, kNicA, 0x22, user(kAlice)).ok());
    EXPECT_TRUE(engine_->setVirtualId(second, kNicB, 0x20, user(kAlice)).ok());
    // A released context gives its IDs back.
    EXPECT_FALSE(engine_->setVirtualId(second, kNicB, 0x22, user(kAlice)).ok());
    ASSERT_TRUE(engine_->release(first, user(kAlice)).ok());
    EXPECT_TRUE(engine_->setVirtualId(second, kNicB, 0x22, user(kAlice)).ok());
}

// ---- rescans -------------------------------------------------------------------------------

TEST_F(EngineTest, MarkDegradedFollowsTheHost) {
    const uint64_t a = allocOk(request({kNicA, kVdpa}));
    const uint64_t b =
        allocOk(request({kNicB, kQueue}, ContextMode::Handoff, false, user(kBob), "vm-2"));
    EXPECT_TRUE(engine_->markDegraded().empty());

    Host gone = testHost();
    std::erase_if(gone.devices, [](const PciDevice& d) { return d.address == kNicA; });
    engine_->setHost(gone);
    EXPECT_EQ(engine_->markDegraded(), std::vector<uint64_t>{a});
    EXPECT_EQ(engine_->find(a)->state, ContextState::Degraded);
    EXPECT_EQ(engine_->find(b)->state, ContextState::Active);
    EXPECT_TRUE(engine_->markDegraded().empty()); // no change, no report
    // A degraded context still holds its devices and can be released.
    EXPECT_EQ(engine_->holderOf(kNicA), a);

    // A queue going away degrades the other one too.
    std::erase_if(gone.queues, [](const SiovQueue& q) { return q.name == kQueue; });
    engine_->setHost(gone);
    EXPECT_EQ(engine_->markDegraded(), std::vector<uint64_t>{b});
    EXPECT_EQ(engine_->find(b)->state, ContextState::Degraded);

    engine_->setHost(testHost());
    EXPECT_EQ(engine_->markDegraded(), (std::vector<uint64_t>{a, b}));
    EXPECT_EQ(engine_->find(a)->state, ContextState::Active);
    EXPECT_EQ(engine_->find(b)->state, ContextState::Active);

    // A vDPA device going away.
    Host noVdpa = testHost();
    noVdpa.vdpa.clear();
    engine_->setHost(noVdpa);
    EXPECT_EQ(engine_->markDegraded(), std::vector<uint64_t>{a});
    EXPECT_TRUE(engine_->release(a, user(kAlice)).ok());
    EXPECT_TRUE(engine_->markDegraded().empty());
}

TEST_F(EngineTest, RequestsResolveAgainstTheHostSetLast) {
    // kNicA and the queue gone, kPf's PASID width 8, vdpa0's parent without PASID.
    Host next = testHost();
    std::erase_if(next.devices, [](const PciDevice& d) { return d.address == kNicA; });
    std::erase_if(next.queues, [](const SiovQueue& q) { return q.name == kQueue; });
    for (auto& d : next.devices) {
        if (d.address == kPf) {
            d.caps.pasid.maxWidth = 8;
        }
        if (d.address == kVdpaPf) {
            d.caps.pasid.present = false;
        }
    }
    engine_->setHost(next);
    next = Host{}; // the engine keeps its own
    std::string m = allocFails(request({kNicA}), Error::NotFound);
    EXPECT_NE(m.find(kNicA), std::string::npos) << m;
    m = allocFails(request({kQueue}), Error::NotFound);
    EXPECT_NE(m.find(kQueue), std::string::npos) << m;
    const uint64_t vf = allocOk(request({kVf}));
    const uint64_t v = allocOk(request({kVdpa}, ContextMode::Handoff, false, user(kBob), "vm-2"));
    ASSERT_NE(vf, 0u);
    ASSERT_NE(v, 0u);
    EXPECT_EQ(engine_->find(vf)->device(kVf)->pasidWidth, 8u); // its PF's on this host
    EXPECT_EQ(engine_->find(v)->device(kVdpa)->pasidWidth, 0u);
    EXPECT_EQ(engine_->hostIndex().pci(kNicA), nullptr);
    EXPECT_EQ(engine_->hostIndex().pci(kPf), &engine_->host().devices[6]);

    // The first host again: what it has is found again, with its own widths.
    EXPECT_TRUE(engine_->release(vf, user(kAlice)).ok());
    EXPECT_TRUE(engine_->release(v, user(kBob)).ok());
    engine_->setHost(testHost());
    const uint64_t a = allocOk(request({kNicA, kQueue, kVf}));
    ASSERT_NE(a, 0u);
    EXPECT_EQ(engine_->find(a)->device(kNicA)->pasidWidth, 20u);
    EXPECT_EQ(engine_->find(a)->device(kQueue)->pasidWidth, 20u); // kDsa's
    EXPECT_EQ(engine_->find(a)->device(kVf)->pasidWidth, 20u);
    const uint64_t b = allocOk(request({kVdpa}, ContextMode::Handoff, false, user(kBob), "vm-2"));
    ASSERT_NE(b, 0u);
    EXPECT_EQ(engine_->find(b)->device(kVdpa)->pasidWidth, 20u);
    EXPECT_TRUE(engine_->release(a, user(kAlice)).ok());
    EXPECT_TRUE(engine_->release(b, user(kBob)).ok());
    expectNothingHeld("after both hosts");
}

TEST_F(EngineTest, RelativesAreFoundOnTheHostSetLast) {
    // A held queue on kNicB's function keeps kNicB from being handed out whole,
    // on the host where it lives there and only there.
    Host moved = testHost();
    for (auto& wq : moved.queues) {
        wq.parentDevice = kNicB;
    }
    engine_->setHost(moved);
    EXPECT_TRUE(engine_->hostIndex().childrenOf(kDsa).empty());
    EXPECT_EQ(engine_->hostIndex().childrenOf(kNicB).size(), 3u);
    const uint64_t q = allocOk(request({kQueue}));
    std::string m =
        allocFails(request({kNicB}, ContextMode::Handoff, false, user(kBob), "vm-2"), Error::Busy);
    EXPECT_NE(m.find(kQueue), std::string::npos) << m;

    engine_->setHost(testHost()); // the queue back on kDsa
    EXPECT_TRUE(engine_->hostIndex().childrenOf(kNicB).empty());
    const uint64_t nic = allocOk(request({kNicB}, ContextMode::Handoff, false, user(kBob), "vm-2"));
    EXPECT_NE(nic, 0u);
    EXPECT_TRUE(engine_->release(nic, user(kBob)).ok());
    EXPECT_TRUE(engine_->release(q, user(kAlice)).ok());

    // The other way: kNicB held, then a host on which the queue is on it.
    const uint64_t whole = allocOk(request({kNicB}));
    engine_->setHost(moved);
    m = allocFails(request({kQueue}, ContextMode::Handoff, false, user(kBob), "vm-2"), Error::Busy);
    EXPECT_NE(m.find(kNicB), std::string::npos) << m;
    EXPECT_TRUE(engine_->release(whole, user(kAlice)).ok());
    expectNothingHeld("at the end");
}

} // namespace
} // namespace svad::core

// ---- one owner: observers, reservations, the admission table -------------------

namespace svad::core {
namespace {

// Records what the engine tells its observers.
struct Recorder final : ContextObserver {
    std::vector<std::string> events;
    void contextCreated(const Context& ctx) override {
        events.push_back("created " + std::to_string(ctx.id));
    }
    void contextStateChanged(const Context& ctx, const std::string& reason) override {
        events.push_back("state " + std::to_string(ctx.id) + " " + reason);
    }
    void contextReleased(const Context& ctx, const std::string& reason) override {
        events.push_back("released " + std::to_string(ctx.id) + " " + reason);
    }
};

// Set while a HeldOffload runs the work it held (svad's worker side).
bool onWorker = false;

// Holds the work it is given until the test lets it run: an allocation or a
// release stays "in flight", as on svad's workers.
struct HeldOffload final : Offload {
    std::vector<std::pair<std::function<void()>, std::function<void()>>> queued;
    void run(std::function<void()> work, std::function<void()> then) override {
        queued.emplace_back(std::move(work), std::move(then));
    }
    void finishAll() {
        auto all = std::move(queued);
        queued.clear();
        for (auto& [work, then] : all) {
            onWorker = true;
            work();
            onWorker = false;
            then();
        }
    }
};

TEST_F(EngineTest, EveryCreatedContextIsReleasedOnceAndObserversHearOfBoth) {
    Recorder rec;
    engine_->addObserver(&rec);
    const uint64_t a = allocOk(request({kNicA}));
    const uint64_t b = allocOk(request({kQueue}, ContextMode::Handoff, false, user(kBob), "vm-2"));
    EXPECT_TRUE(engine_->release(a, user(kAlice)).ok());
    engine_->releaseUnchecked(b, "owner process exited");
    engine_->releaseUnchecked(b, "again"); // gone already: nothing more is said
    EXPECT_EQ(rec.events, (std::vector<std::string>{
                              "created " + std::to_string(a), "created " + std::to_string(b),
                              "released " + std::to_string(a) + " released by the owner",
                              "released " + std::to_string(b) + " owner process exited"}));
    // A refused request is never announced.
    broker_.deny = {kNicB};
    allocFails(request({kNicB}), Error::PolicyDenied);
    EXPECT_EQ(rec.events.size(), 4u);
    engine_->removeObserver(&rec);
    expectNothingHeld("after the releases");
}

TEST_F(EngineTest, DevicesStayReservedWhileAnAllocationOrAReleaseIsInFlight) {
    HeldOffload offload;
    engine_->setOffload(&offload);
    Recorder rec;
    engine_->addObserver(&rec);

    std::optional<Outcome<const Context*>> got;
    engine_->allocate(request({kNicA}), 1, [&got](Outcome<const Context*> o) { got = o; });
    EXPECT_FALSE(got.has_value()) << "answered before its build ran";
    EXPECT_EQ(engine_->inFlight(), 1u);
    EXPECT_TRUE(rec.events.empty());
    // While it is being built, the device is refused to anyone else, and so is its PF.
    std::string m =
        allocFails(request({kNicA}, ContextMode::Handoff, false, user(kBob), "vm-2"), Error::Busy);
    EXPECT_NE(m.find("being handed to vm vm-1"), std::string::npos) << m;
    EXPECT_TRUE(broker_.decided.empty()) << "a plugin was asked before the build ran";

    offload.finishAll();
    ASSERT_TRUE(got.has_value());
    ASSERT_TRUE(got->ok()) << got->failure().message;
    const uint64_t id = got->value()->id;
    EXPECT_EQ(engine_->holderOf(kNicA), id);
    EXPECT_EQ(engine_->inFlight(), 0u);

    // A release in flight: the context stays, held and readable but refusing every call,
    // until its teardown has run; only then is it gone and its device free.
    bool released = false;
    engine_->releaseAsync(id, "released by the owner", [&released] { released = true; });
    EXPECT_NE(engine_->find(id), nullptr);
    EXPECT_EQ(engine_->holderOf(kNicA), id);
    EXPECT_FALSE(released);
    EXPECT_EQ(engine_->checkAccess(id, user(kAlice)).failure().error, Error::NotFound);
    EXPECT_EQ(engine_->allocatePasid(id, kNicA, user(kAlice)).failure().error, Error::NotFound);
    m = allocFails(request({kNicA}), Error::Busy);
    EXPECT_NE(m.find("being released from context " + std::to_string(id)), std::string::npos) << m;
    // A second release of the same context waits for the first.
    bool again = false;
    engine_->releaseAsync(id, "owner process exited", [&again] { again = true; });
    EXPECT_EQ(offload.queued.size(), 1u);
    EXPECT_TRUE(broker_.released.empty()) << "torn down before the offload ran";
    EXPECT_EQ(rec.events.size(), 1u) << "the release was announced before its teardown";
    offload.finishAll();
    EXPECT_TRUE(released);
    EXPECT_TRUE(again);
    EXPECT_EQ(engine_->find(id), nullptr);
    EXPECT_EQ(engine_->holderOf(kNicA), 0u);
    EXPECT_EQ(broker_.released, (std::vector<std::string>{kNicA}));
    EXPECT_EQ(rec.events, (std::vector<std::string>{"created " + std::to_string(id),
                                                    "released " + std::to_string(id) +
                                                        " released by the owner"}));
    engine_->removeObserver(&rec);
    engine_->setOffload(nullptr);
    expectNothingHeld("after the release");
    EXPECT_NE(allocOk(request({kNicA})), 0u);
}

// Which side wrote each record: the worker (HeldOffload's work) or the loop.
struct WhereStore final : ports::MemoryStateStore {
    std::vector<std::string> writes;
    void putContext(const ports::StoredContext& ctx) override {
        writes.push_back(std::string("put ") + (onWorker ? "worker" : "loop"));
        MemoryStateStore::putContext(ctx);
    }
    void removeContext(uint64_t id) override {
        writes.push_back(std::string("remove ") + (onWorker ? "worker" : "loop"));
        MemoryStateStore::removeContext(id);
    }
};

// The state store may sit on a slow disk: a release forgets its context on the
// worker, after the teardown, not on the loop. A context with a queue node is
// the exception: its record goes only after the loop has revoked the owner's
// access to the node. An allocation's record is written on the loop, at
// commit: one written on the worker could outlive an allocation that svad's
// stop cut off before its reply.
TEST_F(EngineTest, AReleaseForgetsItsRecordOnTheWorker) {
    HeldOffload offload;
    engine_->setOffload(&offload);
    WhereStore store;
    engine_->setStateStore(&store, [](pid_t) { return 5U; });
    auto allocate = [&](const AllocateRequest& r) {
        std::optional<Outcome<const Context*>> got;
        engine_->allocate(r, 1, [&got](const Outcome<const Context*>& o) { got = o; });
        offload.finishAll();
        EXPECT_TRUE(got.has_value() && got->ok());
        return got.has_value() && got->ok() ? got->value()->id : 0;
    };
    const uint64_t nic = allocate(request({kNicA}));
    const uint64_t queue =
        allocate(request({kQueue}, ContextMode::Handoff, false, user(kBob), "vm-2"));
    EXPECT_EQ(store.writes, (std::vector<std::string>{"put loop", "put loop"}));
    EXPECT_EQ(store.contexts().size(), 2u);
    store.writes.clear();
    engine_->releaseAsync(nic, "released by the owner", {});
    offload.finishAll();
    engine_->releaseAsync(queue, "released by the owner", {});
    offload.finishAll();
    EXPECT_EQ(store.writes, (std::vector<std::string>{"remove worker", "remove loop"}));
    EXPECT_TRUE(store.contexts().empty());
    engine_->setOffload(nullptr);
    engine_->setStateStore(nullptr, {});
    expectNothingHeld("after the releases");
}

TEST_F(EngineTest, AnAllocationInFlightIsBuiltOnTheHostItWasAdmittedOn) {
    HeldOffload offload;
    engine_->setOffload(&offload);
    std::optional<Outcome<const Context*>> got;
    engine_->allocate(request({kVf, kVdpa}), 1,
                      [&got](const Outcome<const Context*>& o) { got = o; });
    // The host changes under the build: kVf and its PF leave, and every other
    // object the admission resolved is replaced by one of the new host.
    Host next = testHost();
    std::erase_if(next.devices, [](const PciDevice& d) { return d.address == kVf; });
    std::erase_if(next.devices, [](const PciDevice& d) { return d.address == kPf; });
    engine_->setHost(next);
    engine_->setHost(next); // twice: a host freed too early would have its memory taken again
    offload.finishAll();
    ASSERT_TRUE(got.has_value());
    ASSERT_TRUE(got->ok()) << got->failure().message;
    const Context* ctx = got->value();
    // Built from the admitted host's objects: the VF's PF's width, its VFIO cdev.
    EXPECT_EQ(ctx->device(kVf)->pasidWidth, 20u);
    EXPECT_TRUE(ctx->device(kVf)->fd.valid());
    EXPECT_EQ(ctx->device(kVdpa)->pasidWidth, 20u);
    // And degraded at once: kVf is not on the host the engine has now.
    EXPECT_EQ(ctx->state, ContextState::Degraded);
    engine_->setOffload(nullptr);
    EXPECT_TRUE(engine_->release(ctx->id, user(kAlice)).ok());
    expectNothingHeld("after the release");
}

TEST_F(EngineTest, ContextsComeBackFromTheStateStoreWithoutTheirFds) {
    ports::MemoryStateStore store;
    engine_->setStateStore(&store, [](pid_t pid) { return 1000U + static_cast<uint64_t>(pid); });
    const uint64_t a = allocOk(request({kNicA}));
    const uint64_t b = allocOk(request({kQueue}, ContextMode::Handoff, false, user(kBob), "vm-2"));
    auto pasid = engine_->allocatePasid(a, kNicA, user(kAlice));
    ASSERT_TRUE(pasid.ok()) << pasid.failure().message;
    ASSERT_TRUE(engine_->setVirtualId(a, kNicA, 7, user(kAlice)).ok());
    ASSERT_EQ(store.contexts().size(), 2u);
    EXPECT_EQ(store.contexts()[0].ownerStartTime, 1000U + 4000U + kAlice);
    EXPECT_EQ(store.contexts()[0].pasids.size(), 1u);

    // svad goes away (no teardown: the VMMs keep their fds) and comes back.
    PasidAllocator pasids;
    restartEngine(pasids, &store);
    Recorder rec;
    engine_->addObserver(&rec);
    // Alice's process is the same one; Bob's pid now belongs to another process.
    const auto restored = engine_->restore([](pid_t pid, uint64_t start) {
        return pid == 4000 + static_cast<pid_t>(kAlice) && start == 1000U + 4000U + kAlice;
    });
    EXPECT_EQ(restored.kept, 0u);
    EXPECT_EQ(restored.reserved, 1u);
    EXPECT_EQ(restored.released, 1u);
    EXPECT_EQ(rec.events,
              (std::vector<std::string>{
                  "created " + std::to_string(a), "created " + std::to_string(b),
                  "released " + std::to_string(b) + " owner exited while svad was down"}));
    const Context* back = engine_->find(a);
    ASSERT_NE(back, nullptr);
    EXPECT_FALSE(back->fdsHeld);
    EXPECT_EQ(back->device(kNicA)->id, kNicA);
    EXPECT_EQ(back->pasids.count(pasid.value()), 1u);
    EXPECT_EQ(back->virtualIds.at(kNicA), 7u);
    EXPECT_EQ(pasids.holder(pasid.value()), "vm-1") << "the PASID is not free for another";
    EXPECT_EQ(engine_->holderOf(kNicA), a);
    EXPECT_EQ(engine_->holderOf(kQueue), 0u);
    allocFails(request({kNicA}, ContextMode::Handoff, false, user(kBob), "vm-3"), Error::Busy);
    // Ids go on from the store's: never one handed out before.
    const uint64_t c = allocOk(request({kQueue}, ContextMode::Handoff, false, user(kBob), "vm-2"));
    EXPECT_GT(c, b);
    // The owner lets go: the record goes, and the PASID is free again.
    EXPECT_TRUE(engine_->release(a, user(kAlice)).ok());
    EXPECT_EQ(store.contexts().size(), 1u);
    EXPECT_FALSE(pasids.holder(pasid.value()).has_value());
    engine_->removeObserver(&rec);
    engine_->releaseUnchecked(c);
    engine_.reset();
}

// Plays the service manager's fd store: keeps duplicates by name.
struct MemoryFdStore final : ports::FdStore {
    std::map<std::string, ports::UniqueFd> fds;
    std::vector<std::string> dropped;
    ports::Status keep(const std::string& name, int fd) override {
        fds[name] = ports::UniqueFd(::fcntl(fd, F_DUPFD_CLOEXEC, 3));
        return ports::okStatus();
    }
    void drop(const std::string& name) override {
        fds.erase(name);
        dropped.push_back(name);
    }
    // What a restart passes back: duplicates, as systemd's LISTEN_FDS would be.
    std::vector<ports::StoredFd> passed() const {
        std::vector<ports::StoredFd> out;
        for (const auto& [name, fd] : fds) {
            out.push_back({name, ports::UniqueFd(::fcntl(fd.get(), F_DUPFD_CLOEXEC, 3))});
        }
        return out;
    }
};

ino_t inodeOf(int fd) {
    struct stat st {};
    return ::fstat(fd, &st) == 0 ? st.st_ino : 0;
}

TEST_F(EngineTest, ContextsComeBackWithTheFdsTheStoreKept) {
    ports::MemoryStateStore store;
    MemoryFdStore fdStore;
    engine_->setStateStore(&store, [](pid_t pid) { return 77U + static_cast<uint64_t>(pid); });
    engine_->setFdStore(&fdStore);
    const uint64_t a = allocOk(request({kNicA, kQueue}, ContextMode::Attached, true));
    const uint64_t b = allocOk(request({kNicB}, ContextMode::Handoff, false, user(kBob), "vm-2"));
    const Context* ctx = engine_->find(a);
    ASSERT_NE(ctx, nullptr);
    const ino_t iommufd = inodeOf(ctx->iommufd.get());
    const ino_t nic = inodeOf(ctx->devices[0].fd.get());
    EXPECT_EQ(fdStore.fds.size(), 5u) << "iommufd, the NIC (a queue has no fd) and the fault "
                                         "queue; iommufd and a device for the second";
    EXPECT_EQ(fdStore.fds.count("ctx" + std::to_string(a) + "-dev1"), 0u);
    EXPECT_EQ(fdStore.fds.count("ctx" + std::to_string(a) + "-fault"), 1u);

    auto passed = fdStore.passed();
    passed.push_back({"ctx999-iommufd", ports::UniqueFd(::fcntl(0, F_DUPFD_CLOEXEC, 3))});
    PasidAllocator pasids;
    restartEngine(pasids, &store, &fdStore);
    ASSERT_TRUE(sim_.revokeNode("/dev/dsa/wq0.0", kAlice).ok()); // lost while svad was down
    // Both owners live; the second's device fd did not come back.
    passed.erase(std::remove_if(passed.begin(), passed.end(),
                                [&b](const ports::StoredFd& f) {
                                    return f.name == "ctx" + std::to_string(b) + "-dev0";
                                }),
                 passed.end());
    const auto restored = engine_->restore([](pid_t, uint64_t) { return true; }, std::move(passed));
    EXPECT_EQ(restored.kept, 1u);
    EXPECT_EQ(restored.reserved, 1u);
    EXPECT_EQ(restored.fdsClosed, 1u) << "the fd of no context";
    const Context* back = engine_->find(a);
    ASSERT_NE(back, nullptr);
    EXPECT_TRUE(back->fdsHeld);
    EXPECT_EQ(inodeOf(back->iommufd.get()), iommufd);
    EXPECT_EQ(inodeOf(back->devices[0].fd.get()), nic);
    EXPECT_TRUE(back->faultQueueFd.valid());
    // Its queue has no fd to take back: the owner's access to its node comes back.
    EXPECT_FALSE(back->devices[1].fd.valid());
    EXPECT_EQ(back->devices[1].node, "/dev/dsa/wq0.0");
    EXPECT_EQ(sim_.grants().at("/dev/dsa/wq0.0"), (std::set<uid_t>{kAlice}));
    const Context* half = engine_->find(b);
    ASSERT_NE(half, nullptr);
    EXPECT_FALSE(half->fdsHeld);
    EXPECT_FALSE(half->iommufd.valid()) << "a context missing one fd keeps none";
    EXPECT_NE(std::find(fdStore.dropped.begin(), fdStore.dropped.end(), "ctx999-iommufd"),
              fdStore.dropped.end());
    // A release drops its fds from the store.
    engine_->releaseUnchecked(a);
    for (const auto& [name, fd] : fdStore.fds) {
        EXPECT_NE(name.rfind("ctx" + std::to_string(a) + "-", 0), 0u) << name;
    }
    engine_->releaseUnchecked(b);
    engine_.reset();
}

// A passed fd is taken only when fstat says it is what the context kept under
// that name; and the ids it names are never handed out again, even when the
// database no longer knows them.
TEST_F(EngineTest, AStoredFdThatIsNotWhatItsContextKeptIsClosed) {
    ports::MemoryStateStore store;
    MemoryFdStore fdStore;
    engine_->setStateStore(&store, [](pid_t) { return 5U; });
    engine_->setFdStore(&fdStore);
    const uint64_t a = allocOk(request({kNicA}));
    auto passed = fdStore.passed();
    int pipeFds[2];
    ASSERT_EQ(::pipe2(pipeFds, O_CLOEXEC), 0);
    ::close(pipeFds[1]);
    for (auto& p : passed) {
        if (p.name == "ctx" + std::to_string(a) + "-dev0") {
            p.fd = ports::UniqueFd(pipeFds[0]); // a FIFO where a device was kept
        }
    }
    PasidAllocator pasids;
    restartEngine(pasids, &store, &fdStore);
    const auto restored = engine_->restore([](pid_t, uint64_t) { return true; }, std::move(passed));
    EXPECT_EQ(restored.kept, 0u);
    EXPECT_EQ(restored.reserved, 1u);
    EXPECT_EQ(restored.fdsClosed, 1u);
    ASSERT_NE(engine_->find(a), nullptr);
    EXPECT_FALSE(engine_->find(a)->fdsHeld);
    EXPECT_NE(std::find(fdStore.dropped.begin(), fdStore.dropped.end(),
                        "ctx" + std::to_string(a) + "-dev0"),
              fdStore.dropped.end());
    engine_->releaseUnchecked(a);

    // A fresh database (the old one was moved aside) with fds of context 41 in the store.
    ports::MemoryStateStore fresh;
    restartEngine(pasids, &fresh);
    std::vector<ports::StoredFd> stale;
    stale.push_back({"ctx41-iommufd", ports::UniqueFd(::fcntl(0, F_DUPFD_CLOEXEC, 3))});
    const auto again = engine_->restore([](pid_t, uint64_t) { return true; }, std::move(stale));
    EXPECT_EQ(again.fdsClosed, 1u);
    EXPECT_EQ(fresh.peekNextContextId(), 42u);
    EXPECT_EQ(allocOk(request({kNicB})), 42u);
    engine_.reset();
}

TEST(Admission, TheTableIsOrderedAndNamed) {
    std::vector<std::string> names;
    for (const auto& c : admissionChecks()) {
        names.emplace_back(c.name);
    }
    EXPECT_EQ(names, (std::vector<std::string>{"vm-name", "devices-given", "owner-pid", "mode",
                                               "devices-known", "not-held", "config-rule",
                                               "rule-mode", "rule-contexts", "vfio-cdev",
                                               "iommu-group", "auto-bind", "group-viable",
                                               "vhost-vdpa", "queue-usable", "relatives"}));
    // Request checks come before any device check.
    bool seenDevice = false;
    for (const auto& c : admissionChecks()) {
        EXPECT_FALSE(seenDevice && !c.perDevice) << c.name;
        seenDevice = seenDevice || c.perDevice;
    }
    EXPECT_EQ(contextModeFromName("handoff"), ContextMode::Handoff);
    EXPECT_EQ(contextModeFromName("attached"), ContextMode::Attached);
    EXPECT_EQ(contextModeFromName("Attached"), ContextMode::Unknown);
}

} // namespace
} // namespace svad::core
