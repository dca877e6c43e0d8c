// The kernel uAPI that svad speaks, declared here because the build host's
// kernel headers (Debian bookworm: Linux 6.1) have no linux/iommufd.h and a
// vfio.h without the cdev ioctls.
//
// Written from the documented ABI in include/uapi/linux/iommufd.h, vfio.h and
// vhost.h (Linux 6.8 to 6.17). Every struct size and every request number is
// pinned by a static_assert below: they are ABI and must never move.
//
// Names: constants are kCamelCase (the kernel's names are macros on systems
// whose headers have them, and a macro would rewrite a declaration of the same
// name); structs keep the kernel's names, without the leading underscores of
// its reserved fields. Each declaration says which kernel name it stands for.
//
// Versions that matter to probe():
//   IOMMU_GET_HW_INFO, VFIO cdev (vfio/devices), VFIO_DEVICE_BIND_IOMMUFD,
//     VFIO_DEVICE_[AT|DE]TACH_IOMMUFD_PT ........................ Linux 6.6
//   IOMMU_FAULT_QUEUE_ALLOC .................................... Linux 6.11
//   iommu_hw_info.out_max_pasid_log2, VFIO_DEVICE_ATTACH_PASID,
//     the pasid fields of the attach/detach structs ............ Linux 6.15
#pragma once

#include <asm/ioctl.h> // _IOC_* : how this architecture encodes a request number
#include <cstddef>
#include <cstdint>

namespace svad::linux_impl::uapi {

// ---- request-number encoding (_IOC of asm/ioctl.h) -------------------------

constexpr unsigned long ioc(unsigned long dir, unsigned long type, unsigned long nr,
                            unsigned long size) {
    return (dir << _IOC_DIRSHIFT) | (type << _IOC_TYPESHIFT) | (nr << _IOC_NRSHIFT) |
           (size << _IOC_SIZESHIFT);
}
// _IO(type, nr)
constexpr unsigned long io(unsigned long type, unsigned long nr) {
    return ioc(_IOC_NONE, type, nr, 0);
}
// _IOR(type, nr, T), with sizeof(T) given
constexpr unsigned long ior(unsigned long type, unsigned long nr, unsigned long size) {
    return ioc(_IOC_READ, type, nr, size);
}

// ---- iommufd (/dev/iommu) ----------------------------------------------------
// Every iommufd ioctl is _IO(IOMMUFD_TYPE, cmd): the size travels in the
// struct's first u32, and the kernel requires any bytes past what it knows
// to be zero (E2BIG otherwise). Common errnos (the header's own list):
// ENOTTY the ioctl number is unknown; E2BIG non-zero bytes the kernel does not
// understand; EOPNOTSUPP a known field has an unsupported value; EINVAL a
// field is wrong; ENOENT an ID does not exist.

inline constexpr unsigned long kIommufdType = ';'; // IOMMUFD_TYPE

// enum { IOMMUFD_CMD_* }
inline constexpr unsigned long kIommufdCmdBase = 0x80;               // IOMMUFD_CMD_BASE
inline constexpr unsigned long kIommufdCmdDestroy = kIommufdCmdBase; // IOMMUFD_CMD_DESTROY
inline constexpr unsigned long kIommufdCmdIoasAlloc = 0x81;          // IOMMUFD_CMD_IOAS_ALLOC
inline constexpr unsigned long kIommufdCmdIoasAllowIovas = 0x82;     // ..._IOAS_ALLOW_IOVAS
inline constexpr unsigned long kIommufdCmdIoasCopy = 0x83;           // ..._IOAS_COPY
inline constexpr unsigned long kIommufdCmdIoasIovaRanges = 0x84;     // ..._IOAS_IOVA_RANGES
inline constexpr unsigned long kIommufdCmdIoasMap = 0x85;            // ..._IOAS_MAP
inline constexpr unsigned long kIommufdCmdIoasUnmap = 0x86;          // ..._IOAS_UNMAP
inline constexpr unsigned long kIommufdCmdOption = 0x87;             // ..._OPTION
inline constexpr unsigned long kIommufdCmdVfioIoas = 0x88;           // ..._VFIO_IOAS
inline constexpr unsigned long kIommufdCmdHwptAlloc = 0x89;          // ..._HWPT_ALLOC
inline constexpr unsigned long kIommufdCmdGetHwInfo = 0x8a;          // ..._GET_HW_INFO
inline constexpr unsigned long kIommufdCmdHwptSetDirty = 0x8b;       // ..._HWPT_SET_DIRTY_TRACKING
inline constexpr unsigned long kIommufdCmdHwptGetDirty = 0x8c;       // ..._HWPT_GET_DIRTY_BITMAP
inline constexpr unsigned long kIommufdCmdHwptInvalidate = 0x8d;     // ..._HWPT_INVALIDATE
inline constexpr unsigned long kIommufdCmdFaultQueueAlloc = 0x8e;    // ..._FAULT_QUEUE_ALLOC

// struct iommu_destroy - IOMMU_DESTROY: destroy any destroyable object by ID.
struct iommu_destroy {
    uint32_t size; // sizeof(struct iommu_destroy)
    uint32_t id;
};
inline constexpr unsigned long kIommuDestroy = io(kIommufdType, kIommufdCmdDestroy);

// struct iommu_ioas_alloc - IOMMU_IOAS_ALLOC
struct iommu_ioas_alloc {
    uint32_t size;  // sizeof(struct iommu_ioas_alloc)
    uint32_t flags; // must be 0
    uint32_t out_ioas_id;
};
inline constexpr unsigned long kIommuIoasAlloc = io(kIommufdType, kIommufdCmdIoasAlloc);

// struct iommu_iova_range - an interval of IOVA space, last inclusive.
struct iommu_iova_range {
    alignas(8) uint64_t start;
    alignas(8) uint64_t last;
};

// struct iommu_ioas_iova_ranges - IOMMU_IOAS_IOVA_RANGES. num_iovas is the
// capacity of allowed_iovas on input and the total on output; the kernel
// fails with EMSGSIZE (having written num_iovas) when the array is too small.
struct iommu_ioas_iova_ranges {
    uint32_t size; // sizeof(struct iommu_ioas_iova_ranges)
    uint32_t ioas_id;
    uint32_t num_iovas;
    uint32_t reserved;                 // __reserved, must be 0
    alignas(8) uint64_t allowed_iovas; // user pointer to struct iommu_iova_range[]
    alignas(8) uint64_t out_iova_alignment;
};
inline constexpr unsigned long kIommuIoasIovaRanges = io(kIommufdType, kIommufdCmdIoasIovaRanges);

// enum iommufd_ioas_map_flags
inline constexpr uint32_t kIommuIoasMapFixedIova = 1u << 0; // IOMMU_IOAS_MAP_FIXED_IOVA
inline constexpr uint32_t kIommuIoasMapWriteable = 1u << 1; // IOMMU_IOAS_MAP_WRITEABLE
inline constexpr uint32_t kIommuIoasMapReadable = 1u << 2;  // IOMMU_IOAS_MAP_READABLE

// struct iommu_ioas_map - IOMMU_IOAS_MAP (used by the kernel-tier test client).
struct iommu_ioas_map {
    uint32_t size;  // sizeof(struct iommu_ioas_map)
    uint32_t flags; // kIommuIoasMap*
    uint32_t ioas_id;
    uint32_t reserved; // __reserved, must be 0
    alignas(8) uint64_t user_va;
    alignas(8) uint64_t length;
    alignas(8) uint64_t iova; // input with FIXED_IOVA, output otherwise
};
inline constexpr unsigned long kIommuIoasMap = io(kIommufdType, kIommufdCmdIoasMap);

// enum iommufd_option.
// RLIMIT_MODE: how RLIMIT_MEMLOCK accounting works. "Value 0 (default) is user
// based accounting, 1 uses process based accounting." Global: object_id 0.
// Setting it needs CAP_SYS_RESOURCE (EPERM) and an iommufd that holds no
// object yet (EBUSY).
inline constexpr uint32_t kIommuOptionRlimitMode = 0; // IOMMU_OPTION_RLIMIT_MODE
inline constexpr uint32_t kIommuOptionHugePages = 1;  // IOMMU_OPTION_HUGE_PAGES
inline constexpr uint64_t kRlimitModeUser = 0;        // charged to the user (default)
inline constexpr uint64_t kRlimitModeProcess = 1;     // charged to the mapping process's mm
// enum iommufd_option_ops
inline constexpr uint16_t kIommuOptionOpSet = 0; // IOMMU_OPTION_OP_SET
inline constexpr uint16_t kIommuOptionOpGet = 1; // IOMMU_OPTION_OP_GET

// struct iommu_option - IOMMU_OPTION
struct iommu_option {
    uint32_t size;      // sizeof(struct iommu_option)
    uint32_t option_id; // enum iommufd_option
    uint16_t op;        // enum iommufd_option_ops
    uint16_t reserved;  // __reserved, must be 0
    uint32_t object_id;
    alignas(8) uint64_t val64;
};
inline constexpr unsigned long kIommuOption = io(kIommufdType, kIommufdCmdOption);

// enum iommu_hw_info_type
inline constexpr uint32_t kIommuHwInfoTypeNone = 0;      // IOMMU_HW_INFO_TYPE_NONE
inline constexpr uint32_t kIommuHwInfoTypeIntelVtd = 1;  // IOMMU_HW_INFO_TYPE_INTEL_VTD
inline constexpr uint32_t kIommuHwInfoTypeArmSmmuv3 = 2; // IOMMU_HW_INFO_TYPE_ARM_SMMUV3
// enum iommufd_hw_capabilities
inline constexpr uint64_t kIommuHwCapDirtyTracking = 1u << 0; // IOMMU_HW_CAP_DIRTY_TRACKING
inline constexpr uint64_t kIommuHwCapPciPasidExec = 1u << 1;  // IOMMU_HW_CAP_PCI_PASID_EXEC
inline constexpr uint64_t kIommuHwCapPciPasidPriv = 1u << 2;  // IOMMU_HW_CAP_PCI_PASID_PRIV

// struct iommu_hw_info - IOMMU_GET_HW_INFO, the 6.15 layout. Before 6.15 the
// four bytes after out_data_type were one `__u32 __reserved` that the kernel
// required to be 0 (EOPNOTSUPP otherwise), checked before it looks up
// dev_id; from 6.15 the first of them is out_max_pasid_log2, an output only,
// and only reserved[0..2] are checked. probe() tells the layouts apart that way.
struct iommu_hw_info {
    uint32_t size;  // sizeof(struct iommu_hw_info)
    uint32_t flags; // 0 (later kernels: IOMMU_HW_INFO_FLAG_INPUT_TYPE)
    uint32_t dev_id;
    uint32_t data_len; // in: buffer length; out: the length the kernel has
    alignas(8) uint64_t data_uptr;
    uint32_t out_data_type;               // enum iommu_hw_info_type (in_data_type shares it later)
    uint8_t out_max_pasid_log2;           // 0: no PASID
    uint8_t reserved[3];                  // __reserved, must be 0
    alignas(8) uint64_t out_capabilities; // enum iommufd_hw_capabilities
};
inline constexpr unsigned long kIommuGetHwInfo = io(kIommufdType, kIommufdCmdGetHwInfo);

// struct iommu_fault_alloc - IOMMU_FAULT_QUEUE_ALLOC. The fd is the caller's
// to close (O_CLOEXEC); the object goes with IOMMU_DESTROY of out_fault_id.
struct iommu_fault_alloc {
    uint32_t size;  // sizeof(struct iommu_fault_alloc)
    uint32_t flags; // must be 0
    uint32_t out_fault_id;
    uint32_t out_fault_fd;
};
inline constexpr unsigned long kIommuFaultQueueAlloc = io(kIommufdType, kIommufdCmdFaultQueueAlloc);

// ---- VFIO device cdev (/dev/vfio/devices/vfioN) --------------------------------
// VFIO ioctls are _IO(VFIO_TYPE, VFIO_BASE + n); argsz carries the size the
// caller filled, and flag bits announce the fields past the original ones.

inline constexpr unsigned long kVfioType = ';'; // VFIO_TYPE
inline constexpr unsigned long kVfioBase = 100; // VFIO_BASE

// struct vfio_device_bind_iommufd - VFIO_DEVICE_BIND_IOMMUFD (VFIO_BASE + 18).
// The original 16-byte layout: the kernel's minimum is offsetofend(out_devid),
// so it is accepted by every kernel that has the ioctl. (Later kernels append
// token_uuid_ptr, valid only with VFIO_DEVICE_BIND_FLAG_TOKEN.)
struct vfio_device_bind_iommufd {
    uint32_t argsz; // sizeof(struct vfio_device_bind_iommufd)
    uint32_t flags; // 0
    int32_t iommufd;
    uint32_t out_devid;
};
inline constexpr unsigned long kVfioDeviceBindIommufd = io(kVfioType, kVfioBase + 18);

// struct vfio_device_attach_iommufd_pt - VFIO_DEVICE_ATTACH_IOMMUFD_PT
// (VFIO_BASE + 19), the 6.15 layout: pasid is read only with
// VFIO_DEVICE_ATTACH_PASID. Older kernels take the first 12 bytes and answer
// EINVAL to any flag. pt_id is also an output (the attached hwpt).
inline constexpr uint32_t kVfioDeviceAttachPasid = 1u << 0; // VFIO_DEVICE_ATTACH_PASID
struct vfio_device_attach_iommufd_pt {
    uint32_t argsz; // sizeof(struct vfio_device_attach_iommufd_pt)
    uint32_t flags; // kVfioDeviceAttachPasid or 0
    uint32_t pt_id;
    uint32_t pasid;
};
inline constexpr unsigned long kVfioDeviceAttachIommufdPt = io(kVfioType, kVfioBase + 19);

// struct vfio_device_detach_iommufd_pt - VFIO_DEVICE_DETACH_IOMMUFD_PT
// (VFIO_BASE + 20), the 6.15 layout (older kernels: the first 8 bytes).
inline constexpr uint32_t kVfioDeviceDetachPasid = 1u << 0; // VFIO_DEVICE_DETACH_PASID
struct vfio_device_detach_iommufd_pt {
    uint32_t argsz; // sizeof(struct vfio_device_detach_iommufd_pt)
    uint32_t flags; // kVfioDeviceDetachPasid or 0
    uint32_t pasid;
};
inline constexpr unsigned long kVfioDeviceDetachIommufdPt = io(kVfioType, kVfioBase + 20);

// ---- vhost-vdpa (/dev/vhost-vdpa-N) ---------------------------------------------

inline constexpr unsigned long kVhostVirtio = 0xAF; // VHOST_VIRTIO
// VHOST_VDPA_GET_GROUP_NUM _IOR(VHOST_VIRTIO, 0x81, __u32)
inline constexpr unsigned long kVhostVdpaGetGroupNum = ior(kVhostVirtio, 0x81, sizeof(uint32_t));
// VHOST_VDPA_GET_AS_NUM _IOR(VHOST_VIRTIO, 0x7A, unsigned int)
inline constexpr unsigned long kVhostVdpaGetAsNum = ior(kVhostVirtio, 0x7A, sizeof(unsigned int));

// ---- the ABI, pinned ---------------------------------------------------------------

static_assert(sizeof(iommu_destroy) == 8);
static_assert(sizeof(iommu_ioas_alloc) == 12);
static_assert(sizeof(iommu_iova_range) == 16);
static_assert(sizeof(iommu_ioas_iova_ranges) == 32);
static_assert(offsetof(iommu_ioas_iova_ranges, allowed_iovas) == 16);
static_assert(sizeof(iommu_ioas_map) == 40);
static_assert(offsetof(iommu_ioas_map, user_va) == 16);
static_assert(sizeof(iommu_option) == 24);
static_assert(offsetof(iommu_option, op) == 8);
static_assert(offsetof(iommu_option, object_id) == 12);
static_assert(offsetof(iommu_option, val64) == 16);
static_assert(sizeof(iommu_hw_info) == 40);
static_assert(offsetof(iommu_hw_info, data_uptr) == 16);
static_assert(offsetof(iommu_hw_info, out_data_type) == 24);
static_assert(offsetof(iommu_hw_info, out_max_pasid_log2) == 28);
static_assert(offsetof(iommu_hw_info, out_capabilities) == 32);
static_assert(sizeof(iommu_fault_alloc) == 16);
static_assert(sizeof(vfio_device_bind_iommufd) == 16);
static_assert(offsetof(vfio_device_bind_iommufd, out_devid) == 12);
static_assert(sizeof(vfio_device_attach_iommufd_pt) == 16);
static_assert(offsetof(vfio_device_attach_iommufd_pt, pasid) == 12);
static_assert(sizeof(vfio_device_detach_iommufd_pt) == 12);
static_assert(sizeof(unsigned int) == sizeof(uint32_t));

// Request numbers, on the architectures that use the asm-generic encoding
// (nr bits 0-7, type 8-15, size 16-29, dir 30-31, _IOC_READ 2).
#if defined(__x86_64__) || defined(__i386__) || defined(__aarch64__) || defined(__arm__) ||        \
    defined(__riscv) || defined(__s390__) || defined(__loongarch__)
static_assert(kIommuDestroy == 0x3b80);
static_assert(kIommuIoasAlloc == 0x3b81);
static_assert(io(kIommufdType, kIommufdCmdIoasAllowIovas) == 0x3b82);
static_assert(io(kIommufdType, kIommufdCmdIoasCopy) == 0x3b83);
static_assert(kIommuIoasIovaRanges == 0x3b84);
static_assert(kIommuIoasMap == 0x3b85);
static_assert(io(kIommufdType, kIommufdCmdIoasUnmap) == 0x3b86);
static_assert(kIommuOption == 0x3b87);
static_assert(io(kIommufdType, kIommufdCmdVfioIoas) == 0x3b88);
static_assert(io(kIommufdType, kIommufdCmdHwptAlloc) == 0x3b89);
static_assert(kIommuGetHwInfo == 0x3b8a);
static_assert(kIommuFaultQueueAlloc == 0x3b8e);
static_assert(kVfioDeviceBindIommufd == 0x3b76);
static_assert(kVfioDeviceAttachIommufdPt == 0x3b77);
static_assert(kVfioDeviceDetachIommufdPt == 0x3b78);
static_assert(kVhostVdpaGetGroupNum == 0x8004af81);
static_assert(kVhostVdpaGetAsNum == 0x8004af7a);
#endif

} // namespace svad::linux_impl::uapi
