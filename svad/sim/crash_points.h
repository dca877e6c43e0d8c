// Crash points of the sim backend: svad kills itself with SIGKILL right
// after the k-th state write or kernel call (a driver rebind counts as one),
// so that a test can cut an allocation or a release short at every step in
// turn and check what the next start makes of it.
//
// Armed by the file <sysfs root>/.sim/crash_after holding k (a decimal
// number). Every step counts it down (the file is rewritten with k-1); the
// step that finds 1 removes the file, writes "svad: sim crash point: after
// <step>" to stderr and raises SIGKILL. The file is read at every step, so a
// test arms it while svad runs. Discovery never reads it; a real host has
// none, and the linux backend has no crash points.
//
// The decorators below count the steps of the kernel port, the driver binder
// and the state store they wrap; each forwards every call unchanged.
#pragma once

#include "svad/ports/driver_binder.h"
#include "svad/ports/kernel.h"
#include "svad/ports/state_store.h"

#include <mutex>
#include <string>
#include <vector>

namespace svad::sim {

class CrashPoints {
public:
    explicit CrashPoints(const std::string& sysfsRoot);
    // One step done: counts the armed file down, and dies at its last step.
    void step(const std::string& what);

private:
    std::string path_;
    std::mutex mu_;
};

class CrashingKernel final : public ports::Kernel {
public:
    CrashingKernel(ports::Kernel& inner, CrashPoints& crash) : inner_(inner), crash_(crash) {}
    ports::KernelFeatures probe() override { return inner_.probe(); }
    ports::Result<ports::UniqueFd> openIommufd() override;
    ports::Result<uint32_t> ioasAlloc(int iommufd) override;
    ports::Result<std::vector<ports::IovaRange>> ioasIovaRanges(int iommufd,
                                                                uint32_t ioasId) override;
    ports::Status destroy(int iommufd, uint32_t objectId) override;
    ports::Result<ports::HwInfo> hwInfo(int iommufd, uint32_t devId) override;
    ports::Result<ports::FaultQueue> faultQueueAlloc(int iommufd) override;
    ports::Result<ports::UniqueFd> openVfioDevice(const std::string& vfioName) override;
    ports::Result<uint32_t> vfioBind(int deviceFd, int iommufd) override;
    ports::Status vfioAttach(int deviceFd, uint32_t ptId, std::optional<uint32_t> pasid) override;
    ports::Status vfioDetach(int deviceFd, std::optional<uint32_t> pasid) override;
    ports::Result<ports::UniqueFd> openVhostVdpa(const std::string& vhostName) override;
    ports::Result<uint32_t> vdpaGroupNum(int vhostFd) override;
    ports::Result<uint32_t> vdpaAsNum(int vhostFd) override;
    ports::Result<ports::UniqueFd> openWorkQueue(const std::string& wqName) override;
    std::string nodePath(const std::string& node) const override { return inner_.nodePath(node); }
    ports::Status grantNode(const std::string& path, uid_t uid) override;
    ports::Status revokeNode(const std::string& path, uid_t uid) override;

private:
    ports::Kernel& inner_;
    CrashPoints& crash_;
};

class CrashingBinder final : public ports::DriverBinder {
public:
    CrashingBinder(ports::DriverBinder& inner, CrashPoints& crash) : inner_(inner), crash_(crash) {}
    ports::Result<ports::DriverState> state(const std::string& address) override {
        return inner_.state(address);
    }
    ports::Result<std::string> bind(const std::string& address, const std::string& driver) override;
    ports::Status restore(const std::string& address, const std::string& previous,
                          const std::string& override) override;
    ports::Result<std::string> vfioNode(const std::string& address) override {
        return inner_.vfioNode(address);
    }

private:
    ports::DriverBinder& inner_;
    CrashPoints& crash_;
};

// Counts the writes; reads are no steps.
class CrashingStateStore final : public ports::StateStore {
public:
    CrashingStateStore(ports::StateStore& inner, CrashPoints& crash)
        : inner_(inner), crash_(crash) {}
    uint64_t takeContextId() override;
    void putContext(const ports::StoredContext& ctx) override;
    void removeContext(uint64_t id) override;
    void putPasid(uint64_t context, uint32_t pasid, const std::string& device) override;
    void removePasid(uint64_t context, uint32_t pasid) override;
    void putVirtualId(uint64_t context, const std::string& device, uint64_t virtId) override;
    void putAutoBind(const ports::AutoBindRecord& record) override;
    void removeAutoBind(const std::string& address) override;
    std::vector<ports::StoredContext> contexts() override { return inner_.contexts(); }
    std::vector<ports::AutoBindRecord> autoBinds() override { return inner_.autoBinds(); }
    uint64_t peekNextContextId() override { return inner_.peekNextContextId(); }
    void raiseNextContextId(uint64_t atLeast) override;

private:
    ports::StateStore& inner_;
    CrashPoints& crash_;
};

} // namespace svad::sim
