// The linux Kernel port: the real iommufd, VFIO cdev and vhost-vdpa ioctls,
// on device nodes under a dev root (/dev on a host, a temporary tree in
// tests).
//
//   DEVROOT/iommu                 iommufd
//   DEVROOT/vfio/devices/vfioN    VFIO device cdevs
//   DEVROOT/vhost-vdpa-N          vhost-vdpa
//   DEVROOT/dsa/wqX.Y             idxd user work queues (svad grants the
//                                 client access to the node; see kernel.h)
//
// Every node is opened O_RDWR | O_CLOEXEC. Names handed in (by bus callers)
// must have the node's own shape (vfio<N>, vhost-vdpa-<N>, wq<X>.<Y>), so no
// name can reach outside the dev root.
//
// The ioctl and open calls are injectable, so that tests check the encoding
// of every request without a kernel.
//
// Memory accounting: openIommufd sets IOMMU_OPTION RLIMIT_MODE to 1, process
// based. The VMM that receives the fd does the IOAS_MAPs, so its pinned pages
// count against its own mm->locked_vm and its own RLIMIT_MEMLOCK, as with VFIO
// type1 and as libvirt sets it when it opens /dev/iommu for QEMU: libvirt gives
// each VM its own memlock limit, and with the default (user based) accounting
// every VMM running as the same user would share one counter. Setting it needs
// CAP_SYS_RESOURCE; without it (EPERM), or if the kernel refuses the option,
// the fd is still handed out with the kernel's default accounting, and the
// refusal is kept (lastRlimitError) and reported by probe().
#pragma once

#include "svad/ports/kernel.h"

#include <functional>
#include <mutex>
#include <optional>
#include <string>

namespace svad::linux_impl {

// ioctl(2): returns -1 and sets errno on failure.
using IoctlFn = std::function<int(int fd, unsigned long request, void* arg)>;
// open(2) of a full path: returns the fd, or -1 and sets errno.
using OpenFn = std::function<int(const std::string& path, int flags)>;
// The running kernel's release, as uname(2) says it ("6.12.117-amd64").
using ReleaseFn = std::function<std::string()>;

// The real ones.
int realIoctl(int fd, unsigned long request, void* arg);
int realOpen(const std::string& path, int flags);
std::string realRelease();

class KernelLinux final : public ports::Kernel {
public:
    explicit KernelLinux(std::string devRoot, IoctlFn ioctlFn = realIoctl, OpenFn openFn = realOpen,
                         ReleaseFn releaseFn = realRelease);

    ports::KernelFeatures probe() override;

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

    // POSIX ACLs (libacl) on nodes under the dev root; any other path is EINVAL.
    std::string nodePath(const std::string& node) const override;
    ports::Status grantNode(const std::string& path, uid_t uid) override;
    ports::Status revokeNode(const std::string& path, uid_t uid) override;

    const std::string& devRoot() const { return devRoot_; }
    // Why the last openIommufd could not set RLIMIT_MODE; nullopt when it could
    // (or before the first call).
    std::optional<ports::KernelError> lastRlimitError() const;

    // The shapes of the node names (exposed for the tests and for callers
    // that want to check before asking).
    static bool validVfioName(const std::string& name);
    static bool validVhostVdpaName(const std::string& name);
    static bool validWorkQueueName(const std::string& name);

private:
    std::string path(const std::string& rel) const;
    ports::Result<ports::UniqueFd> openNode(const std::string& rel, const char* what);
    // ioctl with EINTR retried; 0 or the errno.
    int call(int fd, unsigned long request, void* arg);
    // IOMMU_OPTION SET RLIMIT_MODE = process; okStatus or the error.
    ports::Status setRlimitMode(int iommufd);

    std::string devRoot_;
    IoctlFn ioctl_;
    OpenFn open_;
    ReleaseFn release_;
    mutable std::mutex mu_;
    std::optional<ports::KernelError> lastRlimitError_;
};

} // namespace svad::linux_impl
