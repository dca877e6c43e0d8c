#include "svad/sim/crash_points.h"

#include <csignal>
#include <cstdio>
#include <fstream>
#include <unistd.h>
#include <utility>

namespace svad::sim {

CrashPoints::CrashPoints(const std::string& sysfsRoot) : path_(sysfsRoot + "/.sim/crash_after") {}

void CrashPoints::step(const std::string& what) {
    std::lock_guard lock(mu_);
    if (::access(path_.c_str(), F_OK) != 0) {
        return;
    }
    unsigned long left = 0;
    {
        std::ifstream in(path_);
        if (!(in >> left) || left == 0) {
            return; // not a count: not armed
        }
    }
    if (left > 1) {
        const std::string tmp = path_ + ".tmp";
        {
            std::ofstream out(tmp, std::ios::trunc);
            out << (left - 1) << "\n";
        }
        (void)std::rename(tmp.c_str(), path_.c_str());
        return;
    }
    (void)::unlink(path_.c_str());
    (void)std::fprintf(stderr, "svad: sim crash point: after %s\n", what.c_str());
    (void)std::fflush(stderr);
    (void)::kill(::getpid(), SIGKILL);
    ::pause(); // SIGKILL is on its way
}

namespace {

// Forwards a call and counts it as a step, whatever it returned.
template <typename F> auto counted(CrashPoints& crash, const char* what, F&& call) {
    auto r = std::forward<F>(call)();
    crash.step(what);
    return r;
}

} // namespace

ports::Result<ports::UniqueFd> CrashingKernel::openIommufd() {
    return counted(crash_, "openIommufd", [&] { return inner_.openIommufd(); });
}
ports::Result<uint32_t> CrashingKernel::ioasAlloc(int iommufd) {
    return counted(crash_, "ioasAlloc", [&] { return inner_.ioasAlloc(iommufd); });
}
ports::Result<std::vector<ports::IovaRange>> CrashingKernel::ioasIovaRanges(int iommufd,
                                                                            uint32_t ioasId) {
    return counted(crash_, "ioasIovaRanges",
                   [&] { return inner_.ioasIovaRanges(iommufd, ioasId); });
}
ports::Status CrashingKernel::destroy(int iommufd, uint32_t objectId) {
    return counted(crash_, "destroy", [&] { return inner_.destroy(iommufd, objectId); });
}
ports::Result<ports::HwInfo> CrashingKernel::hwInfo(int iommufd, uint32_t devId) {
    return counted(crash_, "hwInfo", [&] { return inner_.hwInfo(iommufd, devId); });
}
ports::Result<ports::FaultQueue> CrashingKernel::faultQueueAlloc(int iommufd) {
    return counted(crash_, "faultQueueAlloc", [&] { return inner_.faultQueueAlloc(iommufd); });
}
ports::Result<ports::UniqueFd> CrashingKernel::openVfioDevice(const std::string& vfioName) {
    return counted(crash_, "openVfioDevice", [&] { return inner_.openVfioDevice(vfioName); });
}
ports::Result<uint32_t> CrashingKernel::vfioBind(int deviceFd, int iommufd) {
    return counted(crash_, "vfioBind", [&] { return inner_.vfioBind(deviceFd, iommufd); });
}
ports::Status CrashingKernel::vfioAttach(int deviceFd, uint32_t ptId,
                                         std::optional<uint32_t> pasid) {
    return counted(crash_, "vfioAttach", [&] { return inner_.vfioAttach(deviceFd, ptId, pasid); });
}
ports::Status CrashingKernel::vfioDetach(int deviceFd, std::optional<uint32_t> pasid) {
    return counted(crash_, "vfioDetach", [&] { return inner_.vfioDetach(deviceFd, pasid); });
}
ports::Result<ports::UniqueFd> CrashingKernel::openVhostVdpa(const std::string& vhostName) {
    return counted(crash_, "openVhostVdpa", [&] { return inner_.openVhostVdpa(vhostName); });
}
ports::Result<uint32_t> CrashingKernel::vdpaGroupNum(int vhostFd) {
    return counted(crash_, "vdpaGroupNum", [&] { return inner_.vdpaGroupNum(vhostFd); });
}
ports::Result<uint32_t> CrashingKernel::vdpaAsNum(int vhostFd) {
    return counted(crash_, "vdpaAsNum", [&] { return inner_.vdpaAsNum(vhostFd); });
}
ports::Result<ports::UniqueFd> CrashingKernel::openWorkQueue(const std::string& wqName) {
    return counted(crash_, "openWorkQueue", [&] { return inner_.openWorkQueue(wqName); });
}
ports::Status CrashingKernel::grantNode(const std::string& path, uid_t uid) {
    return counted(crash_, "grantNode", [&] { return inner_.grantNode(path, uid); });
}
ports::Status CrashingKernel::revokeNode(const std::string& path, uid_t uid) {
    return counted(crash_, "revokeNode", [&] { return inner_.revokeNode(path, uid); });
}

ports::Result<std::string> CrashingBinder::bind(const std::string& address,
                                                const std::string& driver) {
    return counted(crash_, "bind", [&] { return inner_.bind(address, driver); });
}
ports::Status CrashingBinder::restore(const std::string& address, const std::string& previous,
                                      const std::string& override) {
    return counted(crash_, "restore", [&] { return inner_.restore(address, previous, override); });
}

// A write that throws changed nothing: it is no step.
uint64_t CrashingStateStore::takeContextId() {
    uint64_t id = inner_.takeContextId();
    crash_.step("takeContextId(" + std::to_string(id) + ")");
    return id;
}
void CrashingStateStore::putContext(const ports::StoredContext& ctx) {
    inner_.putContext(ctx);
    crash_.step("putContext(" + std::to_string(ctx.id) + ")");
}
void CrashingStateStore::removeContext(uint64_t id) {
    inner_.removeContext(id);
    crash_.step("removeContext(" + std::to_string(id) + ")");
}
void CrashingStateStore::putPasid(uint64_t context, uint32_t pasid, const std::string& device) {
    inner_.putPasid(context, pasid, device);
    crash_.step("putPasid(" + std::to_string(context) + ")");
}
void CrashingStateStore::removePasid(uint64_t context, uint32_t pasid) {
    inner_.removePasid(context, pasid);
    crash_.step("removePasid(" + std::to_string(context) + ")");
}
void CrashingStateStore::putVirtualId(uint64_t context, const std::string& device,
                                      uint64_t virtId) {
    inner_.putVirtualId(context, device, virtId);
    crash_.step("putVirtualId(" + std::to_string(context) + ")");
}
void CrashingStateStore::putAutoBind(const ports::AutoBindRecord& record) {
    inner_.putAutoBind(record);
    crash_.step("putAutoBind(" + record.address + ")");
}
void CrashingStateStore::removeAutoBind(const std::string& address) {
    inner_.removeAutoBind(address);
    crash_.step("removeAutoBind(" + address + ")");
}
void CrashingStateStore::raiseNextContextId(uint64_t atLeast) {
    inner_.raiseNextContextId(atLeast);
    crash_.step("raiseNextContextId");
}

} // namespace svad::sim
