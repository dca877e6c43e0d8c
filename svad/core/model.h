// The host as svad sees it: plain data, filled by discovery, read by the
// D-Bus adaptors and the CLI. No I/O here.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace svad::core {

// ---- PCI configuration space -------------------------------------------

struct PasidCap {
    bool present = false;
    uint16_t offset = 0;
    bool exec = false;     // Execute Permission Supported
    bool priv = false;     // Privileged Mode Supported
    uint32_t maxWidth = 0; // Max PASID Width, in bits (0..20)
    bool operator==(const PasidCap&) const = default;
};

struct AtsCap {
    bool present = false;
    uint16_t offset = 0;
    uint32_t invalidateQueueDepth = 0; // 0 means 32
    bool pageAligned = false;
    bool enabled = false;
    uint32_t smallestTranslationUnit = 0;
    bool operator==(const AtsCap&) const = default;
};

struct PriCap {
    bool present = false;
    uint16_t offset = 0;
    bool enabled = false;
    uint32_t outstandingCapacity = 0;
    bool operator==(const PriCap&) const = default;
};

struct AcsCap {
    bool present = false;
    uint16_t offset = 0;
    uint16_t capability = 0;
    uint16_t control = 0;
    bool operator==(const AcsCap&) const = default;
};

struct SriovCap {
    bool present = false;
    uint16_t offset = 0;
    uint16_t initialVfs = 0;
    uint16_t totalVfs = 0;
    uint16_t numVfs = 0;
    uint16_t firstVfOffset = 0;
    uint16_t vfStride = 0;
    uint16_t vfDeviceId = 0;
    bool operator==(const SriovCap&) const = default;
};

struct Dvsec {
    uint16_t offset = 0;
    uint16_t vendor = 0;
    uint16_t id = 0;
    uint8_t revision = 0;
    bool operator==(const Dvsec&) const = default;
};

// One entry of the extended capability chain as it was walked.
struct ExtCap {
    uint16_t offset = 0;
    uint16_t id = 0;
    uint8_t version = 0;
    bool operator==(const ExtCap&) const = default;
};

struct PciCapabilities {
    bool express = false;          // PCI Express capability (0x10) in the standard list
    std::vector<uint8_t> standard; // ids of the standard capability list, in order
    std::vector<ExtCap> extended;  // the extended chain, in order
    PasidCap pasid;
    AtsCap ats;
    PriCap pri;
    AcsCap acs;
    SriovCap sriov;
    std::vector<Dvsec> dvsecs;
    bool siov = false; // Intel Scalable IOV DVSEC (vendor 0x8086, id 5)
    std::vector<std::string> warnings;
    bool operator==(const PciCapabilities&) const = default;
};

// ---- Intel VT-d ---------------------------------------------------------

struct VtdCaps {
    uint64_t cap = 0;
    uint64_t ecap = 0;
    bool scalableMode = false;       // ECAP.SMTS
    bool pasid = false;              // ECAP.PASID
    uint32_t pasidWidth = 0;         // ECAP.PSS + 1 when PASID is supported
    bool nesting = false;            // ECAP.NEST
    bool pageRequest = false;        // ECAP.PRS
    bool firstLevel = false;         // ECAP.FLTS
    bool secondLevel = false;        // ECAP.SLTS
    bool deviceTlb = false;          // ECAP.DT
    bool queuedInvalidation = false; // ECAP.QI
    bool interruptRemapping = false; // ECAP.IR
    bool passThrough = false;        // ECAP.PT
    uint32_t maxAddressWidth = 0;    // CAP.MGAW + 1
    uint32_t sagaw = 0;              // CAP.SAGAW bit field
    bool firstLevel1GiB = false;     // CAP.FL1GP
    bool firstLevel5Level = false;   // CAP.FL5LP
    bool operator==(const VtdCaps&) const = default;
};

// ---- Objects -------------------------------------------------------------

enum class UnitKind : uint32_t { Unknown = 0, IntelVtd = 1, AmdVi = 2, ArmSmmuV3 = 3, Other = 4 };

struct IommuUnit {
    std::string name; // dmar0
    UnitKind kind = UnitKind::Unknown;
    std::string version;
    std::optional<VtdCaps> vtd;
    std::vector<std::string> devices; // PCI addresses
    std::vector<std::string> warnings;
    bool operator==(const IommuUnit&) const = default;
};

enum class GroupType : uint32_t {
    Unknown = 0,
    Dma = 1,
    DmaFq = 2,
    Identity = 3,
    Blocked = 4,
    Unmanaged = 5,
};

struct ReservedRegion {
    uint64_t start = 0;
    uint64_t end = 0;
    std::string type; // direct, direct-relaxable, reserved, msi
    bool operator==(const ReservedRegion&) const = default;
};

// A member that keeps its group from being viable: a function bound to a
// driver other than vfio-pci or pci-stub.
struct GroupBlocker {
    std::string device; // 0000:00:1f.0
    std::string driver; // lpc_ich
    bool operator==(const GroupBlocker&) const = default;
};

// "0000:00:1f.0 is bound to lpc_ich": a blocker as the bus and the logs say it.
std::string blockerText(const GroupBlocker& b);

struct IommuGroup {
    uint32_t id = 0;
    GroupType type = GroupType::Unknown;
    std::string typeName; // as sysfs spells it
    std::vector<ReservedRegion> reservedRegions;
    std::vector<std::string> devices; // PCI addresses
    bool viable = false;
    std::vector<GroupBlocker> blockers;
    std::vector<std::string> warnings;
    bool operator==(const IommuGroup&) const = default;
};

struct PciDevice {
    std::string address; // 0000:6a:01.0
    uint16_t vendor = 0;
    uint16_t device = 0;
    uint16_t subsystemVendor = 0;
    uint16_t subsystemDevice = 0;
    uint32_t classCode = 0; // 24-bit
    uint8_t revision = 0;
    std::string driver;         // empty when unbound
    std::string driverOverride; // empty when none
    int32_t numaNode = -1;
    std::optional<uint32_t> group;
    std::string iommuUnit; // dmar0, empty when none
    std::string physfn;    // PF address for a VF
    std::vector<std::string> virtfns;
    uint32_t sriovTotalVfs = 0;
    uint32_t sriovNumVfs = 0;
    std::string vfioDevice;  // vfio3, empty when no cdev
    uint32_t configSize = 0; // bytes read from config
    uint8_t headerType = 0;  // config 0x0E bits 6:0: 0 endpoint, 1 bridge, 2 CardBus
    PciCapabilities caps;
    std::vector<std::string> warnings;
    bool operator==(const PciDevice&) const = default;
};

enum class QueueMode : uint32_t { Unknown = 0, Dedicated = 1, Shared = 2 };
enum class QueueType : uint32_t { Unknown = 0, None = 1, Kernel = 2, User = 3 };
enum class QueueState : uint32_t { Unknown = 0, Disabled = 1, Enabled = 2, Locked = 3 };

struct SiovQueue {
    std::string name;         // wq0.0
    std::string idxdDevice;   // dsa0
    std::string parentDevice; // PCI address of the accelerator
    QueueMode mode = QueueMode::Unknown;
    QueueType type = QueueType::Unknown;
    QueueState state = QueueState::Unknown;
    uint32_t size = 0;
    int32_t groupId = -1;
    uint32_t priority = 0;
    uint32_t threshold = 0;
    std::string wqName;     // the "name" attribute
    std::string charDevice; // dsa/wq0.0 relative to the dev root, empty if none
    std::vector<std::string> warnings;
    bool operator==(const SiovQueue&) const = default;
};

struct VdpaDevice {
    std::string name;         // vdpa0
    std::string mgmtdev;      // pci/0000:3b:00.2 or vdpasim_net
    std::string parentDevice; // PCI address, empty for a software device
    std::string driver;       // vhost_vdpa, virtio_vdpa
    std::string vhostDevice;  // vhost-vdpa-0, empty if none
    std::vector<std::string> warnings;
    bool operator==(const VdpaDevice&) const = default;
};

struct Host {
    std::vector<IommuUnit> units;
    std::vector<IommuGroup> groups;
    std::vector<PciDevice> devices;
    std::vector<SiovQueue> queues;
    std::vector<VdpaDevice> vdpa;
    std::vector<std::string> warnings; // host-level (unreadable directories etc.)
};

} // namespace svad::core
