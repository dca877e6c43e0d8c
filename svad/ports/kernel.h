// The port to the kernel's IOMMU uAPI: iommufd (/dev/iommu), VFIO device
// cdevs, vhost-vdpa, and access to the device nodes a client opens itself
// (idxd work queues). Two implementations: linux (the
// real ioctls, under a dev root) and sim (the same semantics in process,
// handing out memfds named after the object).
//
// Every call returns a Result: a value, or the errno and a message that
// says what failed. Every fd is returned owned (UniqueFd, O_CLOEXEC).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <sys/types.h>
#include <unistd.h>
#include <utility>
#include <variant>
#include <vector>

namespace svad::ports {

// An owned file descriptor.
class UniqueFd {
public:
    UniqueFd() = default;
    explicit UniqueFd(int fd) : fd_(fd) {}
    ~UniqueFd() { reset(); }
    UniqueFd(UniqueFd&& o) noexcept : fd_(o.release()) {}
    UniqueFd& operator=(UniqueFd&& o) noexcept {
        if (this != &o) {
            reset(o.release());
        }
        return *this;
    }
    UniqueFd(const UniqueFd&) = delete;
    UniqueFd& operator=(const UniqueFd&) = delete;

    int get() const { return fd_; }
    bool valid() const { return fd_ >= 0; }
    int release() {
        int fd = fd_;
        fd_ = -1;
        return fd;
    }
    void reset(int fd = -1) {
        if (fd_ >= 0) {
            ::close(fd_);
        }
        fd_ = fd;
    }

private:
    int fd_ = -1;
};

struct KernelError {
    int err = 0;         // errno
    std::string message; // "VFIO_DEVICE_BIND_IOMMUFD on vfio3: Device or resource busy"
};

// A value or a KernelError.
template <typename T> class Result {
public:
    Result(T value) : v_(std::move(value)) {}
    Result(KernelError e) : v_(std::move(e)) {}
    bool ok() const { return std::holds_alternative<T>(v_); }
    explicit operator bool() const { return ok(); }
    T& value() { return std::get<T>(v_); }
    const T& value() const { return std::get<T>(v_); }
    T& operator*() { return value(); }
    T* operator->() { return &value(); }
    const KernelError& error() const { return std::get<KernelError>(v_); }

private:
    std::variant<T, KernelError> v_;
};

struct Unit {}; // the value of a Result that carries none
using Status = Result<Unit>;
inline Status okStatus() {
    return Status(Unit{});
}

// What the running kernel offers, probed once at start-up.
struct KernelFeatures {
    bool iommufd = false;     // /dev/iommu opens
    bool rlimitMode = false;  // IOMMU_OPTION RLIMIT_MODE accepted
    bool hwInfo = false;      // IOMMU_GET_HW_INFO
    bool faultQueue = false;  // IOMMU_FAULT_QUEUE_ALLOC
    bool vfioCdev = false;    // /dev/vfio/devices exists
    bool pasidAttach = false; // VFIO_DEVICE_ATTACH_IOMMUFD_PT with the PASID flag
    bool vhostVdpa = false;   // vhost-vdpa nodes present
    bool idxd = false;        // /dev/dsa present
    // Why a feature is absent, by its name above ("faultQueue": "ENOTTY: kernel 6.1").
    std::vector<std::pair<std::string, std::string>> absentReasons;
};

struct IovaRange {
    uint64_t start = 0;
    uint64_t last = 0;
};

struct HwInfo {
    uint32_t type = 0; // IOMMU_HW_INFO_TYPE_*: 1 Intel VT-d
    uint64_t capabilities = 0;
    uint8_t maxPasidLog2 = 0; // 0: no PASID
};

struct FaultQueue {
    uint32_t id = 0;
    UniqueFd fd;
};

class Kernel {
public:
    virtual ~Kernel() = default;

    virtual KernelFeatures probe() = 0;

    // iommufd. openIommufd opens /dev/iommu and, where the kernel allows it,
    // sets IOMMU_OPTION RLIMIT_MODE right away (before any object exists).
    virtual Result<UniqueFd> openIommufd() = 0;
    virtual Result<uint32_t> ioasAlloc(int iommufd) = 0;
    virtual Result<std::vector<IovaRange>> ioasIovaRanges(int iommufd, uint32_t ioasId) = 0;
    virtual Status destroy(int iommufd, uint32_t objectId) = 0;
    virtual Result<HwInfo> hwInfo(int iommufd, uint32_t devId) = 0;
    virtual Result<FaultQueue> faultQueueAlloc(int iommufd) = 0;

    // VFIO device cdev (vfioN as published under vfio-dev/).
    virtual Result<UniqueFd> openVfioDevice(const std::string& vfioName) = 0;
    // VFIO_DEVICE_BIND_IOMMUFD; returns the dev_id.
    virtual Result<uint32_t> vfioBind(int deviceFd, int iommufd) = 0;
    // VFIO_DEVICE_ATTACH_IOMMUFD_PT / DETACH, with a PASID when given.
    virtual Status vfioAttach(int deviceFd, uint32_t ptId, std::optional<uint32_t> pasid) = 0;
    virtual Status vfioDetach(int deviceFd, std::optional<uint32_t> pasid) = 0;

    // vhost-vdpa (vhost-vdpa-N).
    virtual Result<UniqueFd> openVhostVdpa(const std::string& vhostName) = 0;
    virtual Result<uint32_t> vdpaGroupNum(int vhostFd) = 0;
    virtual Result<uint32_t> vdpaAsNum(int vhostFd) = 0;

    // idxd user work queue (wqX.Y). svad itself never hands such an fd out: the
    // queue binds the address space of the process that opens it (grantNode).
    virtual Result<UniqueFd> openWorkQueue(const std::string& wqName) = 0;

    // Nodes the client opens itself. An idxd work queue opened with user PASIDs
    // binds the opener's address space and refuses mmap, write and poll from
    // any other process (drivers/dma/idxd/cdev.c), so svad lets the context's
    // owner open the node instead of opening it for them.
    // The absolute path of a node under the dev root ("dsa/wq0.1" -> "/dev/dsa/wq0.1").
    virtual std::string nodePath(const std::string& node) const = 0;
    // Lets `uid` open the node at `path` (under the dev root) for reading and
    // writing: the POSIX ACL entry user:UID:rw-, with rw added to the mask so
    // that it is effective; no other entry changes. Idempotent.
    virtual Status grantNode(const std::string& path, uid_t uid) = 0;
    // Removes that entry (and the mask, when no named entry is left). An fd
    // opened meanwhile stays open, as with any permission. Idempotent.
    virtual Status revokeNode(const std::string& path, uid_t uid) = 0;
};

} // namespace svad::ports
