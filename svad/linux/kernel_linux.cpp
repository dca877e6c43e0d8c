#include "svad/linux/kernel_linux.h"

#include "svad/linux/uapi.h"
#include "svad/ports/node_acl.h"

#include <algorithm>
#include <cerrno>
#include <climits>
#include <cstdint>
#include <dirent.h>
#include <fcntl.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/utsname.h>
#include <system_error>
#include <unistd.h>

namespace svad::linux_impl {

using ports::FaultQueue;
using ports::HwInfo;
using ports::IovaRange;
using ports::KernelError;
using ports::KernelFeatures;
using ports::Result;
using ports::Status;
using ports::UniqueFd;

int realIoctl(int fd, unsigned long request, void* arg) {
    return ::ioctl(fd, request, arg);
}

int realOpen(const std::string& path, int flags) {
    return ::openat(AT_FDCWD, path.c_str(), flags);
}

std::string realRelease() {
    struct utsname u {};
    if (::uname(&u) != 0) {
        return {};
    }
    return u.release;
}

namespace {

constexpr int kOpenFlags = O_RDWR | O_CLOEXEC;
constexpr int kMaxEintrRetries = 64;

std::string errnoText(int err) {
    return std::generic_category().message(err);
}

// The symbolic name of the errnos the iommufd and VFIO documentation speaks of.
std::string errnoName(int err) {
    switch (err) {
    case EPERM:
        return "EPERM";
    case ENOENT:
        return "ENOENT";
    case EIO:
        return "EIO";
    case ENXIO:
        return "ENXIO";
    case EBADF:
        return "EBADF";
    case ENOMEM:
        return "ENOMEM";
    case EACCES:
        return "EACCES";
    case EFAULT:
        return "EFAULT";
    case EBUSY:
        return "EBUSY";
    case ENODEV:
        return "ENODEV";
    case ENOTDIR:
        return "ENOTDIR";
    case EINVAL:
        return "EINVAL";
    case ENOTTY:
        return "ENOTTY";
    case E2BIG:
        return "E2BIG";
    case EOPNOTSUPP:
        return "EOPNOTSUPP";
    case EMSGSIZE:
        return "EMSGSIZE";
    case EOVERFLOW:
        return "EOVERFLOW";
    default:
        return "errno " + std::to_string(err);
    }
}

// What an fd refers to, for messages: the last component of its
// /proc/self/fd link ("vfio3", "iommu", "vhost-vdpa-0"), else "fd N".
std::string fdName(int fd) {
    std::string link = "/proc/self/fd/" + std::to_string(fd);
    char buf[PATH_MAX];
    ssize_t n = ::readlink(link.c_str(), buf, sizeof(buf) - 1);
    if (n <= 0) {
        return "fd " + std::to_string(fd);
    }
    std::string target(buf, static_cast<size_t>(n));
    size_t slash = target.rfind('/');
    if (slash != std::string::npos && slash + 1 < target.size()) {
        return target.substr(slash + 1);
    }
    return target;
}

// "<IOCTL> on <object>: <strerror>". ENOTTY is the kernel's answer to an
// ioctl number it does not know; where a call uses a field or flag that
// older kernels refuse with EINVAL, `newer` names it.
KernelError ioctlError(int err, const std::string& name, const std::string& object,
                       const char* newer = nullptr) {
    std::string msg = name + " on " + object + ": " + errnoText(err);
    if (err == ENOTTY) {
        msg += " (the running kernel lacks " + name + ")";
    } else if (err == EINVAL && newer != nullptr) {
        msg += std::string(" (or the running kernel lacks ") + newer + ")";
    }
    return KernelError{err, std::move(msg)};
}

bool allDigits(const std::string& s, size_t from, size_t to) {
    if (from >= to || to - from > 10) {
        return false;
    }
    for (size_t i = from; i < to; ++i) {
        if (s[i] < '0' || s[i] > '9') {
            return false;
        }
    }
    return true;
}

bool hasPrefixAndNumber(const std::string& name, const std::string& prefix) {
    return name.size() > prefix.size() && name.compare(0, prefix.size(), prefix) == 0 &&
           allDigits(name, prefix.size(), name.size());
}

bool isDir(const std::string& path) {
    struct stat st {};
    return ::stat(path.c_str(), &st) == 0 && S_ISDIR(st.st_mode);
}

void setCloexec(int fd) {
    int flags = ::fcntl(fd, F_GETFD);
    if (flags >= 0 && (flags & FD_CLOEXEC) == 0) {
        ::fcntl(fd, F_SETFD, flags | FD_CLOEXEC);
    }
}

void absent(KernelFeatures& f, const char* feature, std::string why) {
    f.absentReasons.emplace_back(feature, std::move(why));
}

// The decimal number at `i` (at most 6 digits), moving `i` past it.
std::optional<unsigned> numberAt(const std::string& s, size_t& i) {
    const size_t start = i;
    unsigned v = 0;
    while (i < s.size() && s[i] >= '0' && s[i] <= '9' && i - start < 6) {
        v = v * 10 + static_cast<unsigned>(s[i] - '0');
        ++i;
    }
    if (i == start) {
        return std::nullopt;
    }
    return v;
}

// Whether a release ("6.15.0", "6.12.117-amd64") is at least major.minor;
// nullopt when it does not start with major.minor.
std::optional<bool> releaseAtLeast(const std::string& release, unsigned major, unsigned minor) {
    size_t i = 0;
    auto maj = numberAt(release, i);
    if (!maj || i >= release.size() || release[i] != '.') {
        return std::nullopt;
    }
    ++i;
    auto min = numberAt(release, i);
    if (!min) {
        return std::nullopt;
    }
    return *maj != major ? *maj > major : *min >= minor;
}

} // namespace

KernelLinux::KernelLinux(std::string devRoot, IoctlFn ioctlFn, OpenFn openFn, ReleaseFn releaseFn)
    : devRoot_(std::move(devRoot)), ioctl_(std::move(ioctlFn)), open_(std::move(openFn)),
      release_(std::move(releaseFn)) {
    while (devRoot_.size() > 1 && devRoot_.back() == '/') {
        devRoot_.pop_back();
    }
    if (!ioctl_) {
        ioctl_ = realIoctl;
    }
    if (!open_) {
        open_ = realOpen;
    }
    if (!release_) {
        release_ = realRelease;
    }
}

bool KernelLinux::validVfioName(const std::string& name) {
    return hasPrefixAndNumber(name, "vfio");
}

bool KernelLinux::validVhostVdpaName(const std::string& name) {
    return hasPrefixAndNumber(name, "vhost-vdpa-");
}

bool KernelLinux::validWorkQueueName(const std::string& name) {
    if (name.size() < 5 || name.compare(0, 2, "wq") != 0) {
        return false;
    }
    size_t dot = name.find('.', 2);
    return dot != std::string::npos && allDigits(name, 2, dot) &&
           allDigits(name, dot + 1, name.size());
}

std::string KernelLinux::path(const std::string& rel) const {
    if (devRoot_ == "/") {
        return "/" + rel;
    }
    return devRoot_ + "/" + rel;
}

std::optional<KernelError> KernelLinux::lastRlimitError() const {
    std::lock_guard<std::mutex> lock(mu_);
    return lastRlimitError_;
}

int KernelLinux::call(int fd, unsigned long request, void* arg) {
    for (int attempt = 0;; ++attempt) {
        errno = 0;
        if (ioctl_(fd, request, arg) >= 0) {
            return 0;
        }
        int err = errno != 0 ? errno : EIO;
        if (err != EINTR || attempt >= kMaxEintrRetries) {
            return err;
        }
    }
}

Result<UniqueFd> KernelLinux::openNode(const std::string& rel, const char* what) {
    std::string p = path(rel);
    for (int attempt = 0;; ++attempt) {
        errno = 0;
        int fd = open_(p, kOpenFlags);
        if (fd >= 0) {
            return UniqueFd(fd);
        }
        int err = errno != 0 ? errno : EIO;
        if (err != EINTR || attempt >= kMaxEintrRetries) {
            return KernelError{err, std::string("open ") + what + " " + p + ": " + errnoText(err)};
        }
    }
}

// ---- iommufd ------------------------------------------------------------------

Status KernelLinux::setRlimitMode(int iommufd) {
    uapi::iommu_option opt{};
    opt.size = sizeof(opt);
    opt.option_id = uapi::kIommuOptionRlimitMode;
    opt.op = uapi::kIommuOptionOpSet;
    opt.object_id = 0;
    opt.val64 = uapi::kRlimitModeProcess;
    if (int err = call(iommufd, uapi::kIommuOption, &opt)) {
        return ioctlError(err, "IOMMU_OPTION", fdName(iommufd) + " (RLIMIT_MODE=process)");
    }
    return ports::okStatus();
}

Result<UniqueFd> KernelLinux::openIommufd() {
    auto fd = openNode("iommu", "iommufd");
    if (!fd) {
        return fd;
    }
    Status rl = setRlimitMode(fd->get());
    std::optional<KernelError> refused;
    if (!rl) {
        int err = rl.error().err;
        // EPERM: no CAP_SYS_RESOURCE. EBUSY: objects exist already (cannot
        // happen on a fresh fd, but is the kernel's word for "too late").
        // EOPNOTSUPP: the kernel does not know the option. The fd works
        // with the default (per-user) accounting in all three cases.
        if (err != EPERM && err != EBUSY && err != EOPNOTSUPP) {
            std::lock_guard<std::mutex> lock(mu_);
            lastRlimitError_ = rl.error();
            return rl.error();
        }
        refused = rl.error();
    }
    std::lock_guard<std::mutex> lock(mu_);
    lastRlimitError_ = refused;
    return fd;
}

Result<uint32_t> KernelLinux::ioasAlloc(int iommufd) {
    uapi::iommu_ioas_alloc cmd{};
    cmd.size = sizeof(cmd);
    cmd.flags = 0;
    if (int err = call(iommufd, uapi::kIommuIoasAlloc, &cmd)) {
        return ioctlError(err, "IOMMU_IOAS_ALLOC", fdName(iommufd));
    }
    return cmd.out_ioas_id;
}

Result<std::vector<IovaRange>> KernelLinux::ioasIovaRanges(int iommufd, uint32_t ioasId) {
    // The kernel writes the total into num_iovas and fails with EMSGSIZE when
    // the array is too small; the ranges can change between calls (a device
    // attaching), so ask again a few times.
    std::vector<uapi::iommu_iova_range> buf(8);
    const std::string object = "ioas " + std::to_string(ioasId);
    for (int attempt = 0; attempt < 8; ++attempt) {
        uapi::iommu_ioas_iova_ranges cmd{};
        cmd.size = sizeof(cmd);
        cmd.ioas_id = ioasId;
        cmd.num_iovas = static_cast<uint32_t>(buf.size());
        cmd.allowed_iovas = reinterpret_cast<uintptr_t>(buf.data());
        int err = call(iommufd, uapi::kIommuIoasIovaRanges, &cmd);
        if (err == EMSGSIZE && cmd.num_iovas > buf.size() && cmd.num_iovas <= 65536) {
            buf.resize(cmd.num_iovas);
            continue;
        }
        if (err != 0) {
            return ioctlError(err, "IOMMU_IOAS_IOVA_RANGES", object);
        }
        std::vector<IovaRange> out;
        size_t n = std::min<size_t>(cmd.num_iovas, buf.size());
        out.reserve(n);
        for (size_t i = 0; i < n; ++i) {
            out.push_back(IovaRange{buf[i].start, buf[i].last});
        }
        return out;
    }
    return ioctlError(EMSGSIZE, "IOMMU_IOAS_IOVA_RANGES", object);
}

Status KernelLinux::destroy(int iommufd, uint32_t objectId) {
    uapi::iommu_destroy cmd{};
    cmd.size = sizeof(cmd);
    cmd.id = objectId;
    if (int err = call(iommufd, uapi::kIommuDestroy, &cmd)) {
        return ioctlError(err, "IOMMU_DESTROY", "object " + std::to_string(objectId));
    }
    return ports::okStatus();
}

Result<HwInfo> KernelLinux::hwInfo(int iommufd, uint32_t devId) {
    uapi::iommu_hw_info cmd{};
    cmd.size = sizeof(cmd);
    cmd.flags = 0;
    cmd.dev_id = devId;
    cmd.data_len = 0; // no type-specific data: "Input @data_len == zero is allowed"
    cmd.data_uptr = 0;
    if (int err = call(iommufd, uapi::kIommuGetHwInfo, &cmd)) {
        return ioctlError(err, "IOMMU_GET_HW_INFO", "dev_id " + std::to_string(devId));
    }
    HwInfo info;
    info.type = cmd.out_data_type;
    info.capabilities = cmd.out_capabilities;
    info.maxPasidLog2 = cmd.out_max_pasid_log2;
    return info;
}

Result<FaultQueue> KernelLinux::faultQueueAlloc(int iommufd) {
    uapi::iommu_fault_alloc cmd{};
    cmd.size = sizeof(cmd);
    cmd.flags = 0;
    if (int err = call(iommufd, uapi::kIommuFaultQueueAlloc, &cmd)) {
        return ioctlError(err, "IOMMU_FAULT_QUEUE_ALLOC", fdName(iommufd));
    }
    FaultQueue q;
    q.id = cmd.out_fault_id;
    q.fd = UniqueFd(static_cast<int>(cmd.out_fault_fd));
    setCloexec(q.fd.get()); // the kernel makes it O_CLOEXEC; make sure
    return q;
}

// ---- VFIO device cdev -------------------------------------------------------------

Result<UniqueFd> KernelLinux::openVfioDevice(const std::string& vfioName) {
    if (!validVfioName(vfioName)) {
        return KernelError{EINVAL,
                           "open VFIO device: \"" + vfioName + "\" is not a vfio<N> cdev name"};
    }
    return openNode("vfio/devices/" + vfioName, "VFIO device");
}

Result<uint32_t> KernelLinux::vfioBind(int deviceFd, int iommufd) {
    uapi::vfio_device_bind_iommufd cmd{};
    cmd.argsz = sizeof(cmd);
    cmd.flags = 0;
    cmd.iommufd = iommufd;
    if (int err = call(deviceFd, uapi::kVfioDeviceBindIommufd, &cmd)) {
        return ioctlError(err, "VFIO_DEVICE_BIND_IOMMUFD", fdName(deviceFd));
    }
    return cmd.out_devid;
}

Status KernelLinux::vfioAttach(int deviceFd, uint32_t ptId, std::optional<uint32_t> pasid) {
    uapi::vfio_device_attach_iommufd_pt cmd{};
    cmd.argsz = sizeof(cmd);
    cmd.flags = pasid ? uapi::kVfioDeviceAttachPasid : 0;
    cmd.pt_id = ptId;
    cmd.pasid = pasid.value_or(0);
    if (int err = call(deviceFd, uapi::kVfioDeviceAttachIommufdPt, &cmd)) {
        std::string object = fdName(deviceFd) + " (pt " + std::to_string(ptId);
        if (pasid) {
            object += ", pasid " + std::to_string(*pasid);
        }
        object += ")";
        return ioctlError(err, "VFIO_DEVICE_ATTACH_IOMMUFD_PT", object,
                          pasid ? "VFIO_DEVICE_ATTACH_PASID, Linux 6.15+" : nullptr);
    }
    return ports::okStatus();
}

Status KernelLinux::vfioDetach(int deviceFd, std::optional<uint32_t> pasid) {
    uapi::vfio_device_detach_iommufd_pt cmd{};
    cmd.argsz = sizeof(cmd);
    cmd.flags = pasid ? uapi::kVfioDeviceDetachPasid : 0;
    cmd.pasid = pasid.value_or(0);
    if (int err = call(deviceFd, uapi::kVfioDeviceDetachIommufdPt, &cmd)) {
        std::string object = fdName(deviceFd);
        if (pasid) {
            object += " (pasid " + std::to_string(*pasid) + ")";
        }
        return ioctlError(err, "VFIO_DEVICE_DETACH_IOMMUFD_PT", object,
                          pasid ? "VFIO_DEVICE_DETACH_PASID, Linux 6.15+" : nullptr);
    }
    return ports::okStatus();
}

// ---- vhost-vdpa ----------------------------------------------------------------------

Result<UniqueFd> KernelLinux::openVhostVdpa(const std::string& vhostName) {
    if (!validVhostVdpaName(vhostName)) {
        return KernelError{EINVAL, "open vhost-vdpa: \"" + vhostName +
                                       "\" is not a vhost-vdpa-<N> node name"};
    }
    return openNode(vhostName, "vhost-vdpa");
}

Result<uint32_t> KernelLinux::vdpaGroupNum(int vhostFd) {
    uint32_t n = 0;
    if (int err = call(vhostFd, uapi::kVhostVdpaGetGroupNum, &n)) {
        return ioctlError(err, "VHOST_VDPA_GET_GROUP_NUM", fdName(vhostFd));
    }
    return n;
}

Result<uint32_t> KernelLinux::vdpaAsNum(int vhostFd) {
    unsigned int n = 0;
    if (int err = call(vhostFd, uapi::kVhostVdpaGetAsNum, &n)) {
        return ioctlError(err, "VHOST_VDPA_GET_AS_NUM", fdName(vhostFd));
    }
    return static_cast<uint32_t>(n);
}

// ---- idxd ------------------------------------------------------------------------------

Result<UniqueFd> KernelLinux::openWorkQueue(const std::string& wqName) {
    if (!validWorkQueueName(wqName)) {
        return KernelError{EINVAL, "open work queue: \"" + wqName + "\" is not a wq<X>.<Y> name"};
    }
    return openNode("dsa/" + wqName, "work queue");
}

// ---- nodes a client opens itself -----------------------------------------------------

std::string KernelLinux::nodePath(const std::string& node) const {
    return node_acl::underRoot(devRoot_, node);
}

Status KernelLinux::grantNode(const std::string& path, uid_t uid) {
    if (!node_acl::lexicallyUnder(devRoot_, path)) {
        return KernelError{EINVAL,
                           "grant access to \"" + path + "\": not a node under " + devRoot_};
    }
    return node_acl::grantUser(path, uid);
}

Status KernelLinux::revokeNode(const std::string& path, uid_t uid) {
    if (!node_acl::lexicallyUnder(devRoot_, path)) {
        return KernelError{EINVAL,
                           "revoke access to \"" + path + "\": not a node under " + devRoot_};
    }
    return node_acl::revokeUser(path, uid);
}

// ---- probe ---------------------------------------------------------------------------------

KernelFeatures KernelLinux::probe() {
    KernelFeatures f;

    // iommufd, and what its ioctls tell of the kernel. One fd, closed at the end.
    bool hwInfoPasidLayout = false;
    std::string pasidLayoutWhy;
    auto iommu = openNode("iommu", "iommufd");
    if (!iommu) {
        std::string why = errnoName(iommu.error().err) + ": " + iommu.error().message +
                          " (iommufd needs CONFIG_IOMMUFD, Linux 6.2+)";
        absent(f, "iommufd", why);
        absent(f, "rlimitMode", "no iommufd");
        absent(f, "hwInfo", "no iommufd");
        absent(f, "faultQueue", "no iommufd");
    } else {
        f.iommufd = true;
        const int fd = iommu->get();

        // RLIMIT_MODE first: the kernel takes it only while no object exists.
        Status rl = setRlimitMode(fd);
        if (rl) {
            f.rlimitMode = true;
        } else {
            int err = rl.error().err;
            std::string why = errnoName(err) + ": " + rl.error().message;
            if (err == EPERM) {
                why += "; svad lacks CAP_SYS_RESOURCE, so pinned memory is charged per user, "
                       "not per VMM process";
            }
            absent(f, "rlimitMode", why);
        }

        // GET_HW_INFO on dev_id 0, which never exists (iommufd IDs start at
        // 1): ENOENT (or EINVAL) says the ioctl is there, ENOTTY that it is not.
        uapi::iommu_hw_info hw{};
        hw.size = sizeof(hw);
        hw.dev_id = 0;
        int err = call(fd, uapi::kIommuGetHwInfo, &hw);
        if (err == 0 || err == ENOENT || err == EINVAL) {
            f.hwInfo = true;
        } else if (err == ENOTTY) {
            absent(f, "hwInfo", "ENOTTY: the running kernel lacks IOMMU_GET_HW_INFO (Linux 6.6+)");
        } else {
            absent(f, "hwInfo",
                   errnoName(err) + ": IOMMU_GET_HW_INFO on dev_id 0: " + errnoText(err));
        }

        // The 6.15 layout of iommu_hw_info. Up to 6.14 the byte that is now
        // out_max_pasid_log2 belonged to a u32 __reserved that the kernel
        // checked for zero before looking up dev_id (EOPNOTSUPP); from 6.15 it
        // is an output that the kernel does not check, so the same call with
        // that byte set fails ENOENT, as above. The PASID uAPI (this field,
        // VFIO_DEVICE_ATTACH_PASID, the pasid in the attach/detach structs)
        // came in one release, so a kernel that takes this layout takes
        // PASID attach too upstream. Some kernels took the field alone,
        // though (Debian's 6.12.117 reports out_max_pasid_log2 and its VFIO
        // has no VFIO_DEVICE_ATTACH_PASID), and VFIO's flag cannot be probed
        // without a bound device: below 6.15 the layout is not enough.
        if (f.hwInfo) {
            uapi::iommu_hw_info probeLayout{};
            probeLayout.size = sizeof(probeLayout);
            probeLayout.dev_id = 0;
            probeLayout.out_max_pasid_log2 = 1;
            int lerr = call(fd, uapi::kIommuGetHwInfo, &probeLayout);
            if (lerr == 0 || lerr == ENOENT || lerr == EINVAL) {
                hwInfoPasidLayout = true;
            } else if (lerr == EOPNOTSUPP) {
                pasidLayoutWhy = "EOPNOTSUPP: the running kernel predates the PASID uAPI "
                                 "(iommu_hw_info.out_max_pasid_log2 and "
                                 "VFIO_DEVICE_ATTACH_PASID, Linux 6.15+)";
            } else {
                pasidLayoutWhy =
                    errnoName(lerr) +
                    ": IOMMU_GET_HW_INFO with out_max_pasid_log2 on dev_id 0: " + errnoText(lerr);
            }
        } else {
            pasidLayoutWhy = "no IOMMU_GET_HW_INFO, so no PASID uAPI (Linux 6.15+)";
        }

        // FAULT_QUEUE_ALLOC: a fault object needs no device. Gone right away.
        uapi::iommu_fault_alloc fq{};
        fq.size = sizeof(fq);
        int ferr = call(fd, uapi::kIommuFaultQueueAlloc, &fq);
        if (ferr == 0) {
            f.faultQueue = true;
            UniqueFd faultFd(static_cast<int>(fq.out_fault_fd));
            uapi::iommu_destroy d{};
            d.size = sizeof(d);
            d.id = fq.out_fault_id;
            call(fd, uapi::kIommuDestroy, &d); // closing the iommufd would do it too
        } else if (ferr == ENOTTY) {
            absent(f, "faultQueue",
                   "ENOTTY: the running kernel lacks IOMMU_FAULT_QUEUE_ALLOC (Linux 6.11+)");
        } else {
            absent(f, "faultQueue",
                   errnoName(ferr) + ": IOMMU_FAULT_QUEUE_ALLOC on " + fdName(fd) + ": " +
                       errnoText(ferr));
        }
    }

    // VFIO device cdevs.
    const std::string vfioDevices = path("vfio/devices");
    if (isDir(vfioDevices)) {
        f.vfioCdev = true;
    } else {
        absent(f, "vfioCdev",
               vfioDevices + " does not exist: no VFIO device cdevs "
                             "(CONFIG_VFIO_DEVICE_CDEV, Linux 6.6+, and vfio-pci bound)");
    }

    // PASID attach: see the GET_HW_INFO layout probe above.
    if (f.vfioCdev && hwInfoPasidLayout) {
        const std::string release = release_();
        const auto recent = releaseAtLeast(release, 6, 15);
        if (recent.value_or(false)) {
            f.pasidAttach = true;
        } else if (recent) {
            absent(f, "pasidAttach",
                   "Linux " + release +
                       " reports iommu_hw_info.out_max_pasid_log2, but VFIO_DEVICE_ATTACH_PASID "
                       "came with Linux 6.15 and cannot be probed without a bound device");
        } else {
            absent(f, "pasidAttach",
                   "the kernel release '" + release +
                       "' is not major.minor: cannot tell whether VFIO_DEVICE_ATTACH_PASID "
                       "(Linux 6.15+) is there");
        }
    } else if (!f.vfioCdev) {
        absent(f, "pasidAttach", "no VFIO device cdevs to attach a PASID of");
    } else if (!f.iommufd) {
        absent(f, "pasidAttach", "no iommufd");
    } else {
        absent(f, "pasidAttach", pasidLayoutWhy);
    }

    // vhost-vdpa nodes.
    if (DIR* dir = ::opendir(devRoot_.c_str())) {
        while (dirent* e = ::readdir(dir)) {
            if (validVhostVdpaName(e->d_name)) {
                f.vhostVdpa = true;
                break;
            }
        }
        ::closedir(dir);
    }
    if (!f.vhostVdpa) {
        absent(f, "vhostVdpa",
               "no vhost-vdpa-<N> node in " + devRoot_ +
                   " (vhost_vdpa not loaded, or no vDPA device bound to it)");
    }

    // idxd user work queues.
    const std::string dsa = path("dsa");
    if (isDir(dsa)) {
        f.idxd = true;
    } else {
        absent(f, "idxd",
               dsa + " does not exist: no idxd user work queue (idxd not loaded, or no "
                     "user wq enabled)");
    }
    return f;
}

} // namespace svad::linux_impl
