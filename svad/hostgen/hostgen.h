// The host generator: materializes a sysfs-like tree (and a matching /dev
// tree of placeholder nodes) from a host description, so that the demo, the
// tests and the benchmarks never read this machine's own /sys or /dev.
//
// Tree layout written under ROOT (mirrors Linux; all links are relative):
//
//   ROOT/sys/devices/pci<DDDD>:<BB>/<BDF>/          one directory per function
//       vendor device subsystem_vendor subsystem_device class revision
//                                                   ("0x8086\n", class "0x088000\n")
//       config                                      binary config space
//       numa_node driver_override ("(null)\n" when none) irq resource
//       driver -> ../../../bus/pci/drivers/<drv>     when bound
//       iommu_group -> ../../../kernel/iommu_groups/<N>
//       iommu -> ../../virtual/iommu/<unit>
//       sriov_totalvfs sriov_numvfs virtfn<i> -> ../<VF BDF>   on a PF
//       physfn -> ../<PF BDF>                        on a VF
//       vfio-dev/vfio<N>/dev ("<major>:<minor>\n")   when a VFIO cdev exists
//       dsa<K>/wq<K>.<Q>/ mode type size state name group_id priority threshold
//       vdpa<N>/ driver -> ../../../../bus/vdpa/drivers/<drv>, vhost-vdpa-<N>/dev
//   ROOT/sys/devices/virtual/iommu/<unit>/intel-iommu/{cap,ecap,version}
//   ROOT/sys/devices/virtual/iommu/<unit>/devices/<BDF> -> ../../../../pci.../<BDF>
//   ROOT/sys/devices/vdpasim/<name>/...              software vDPA devices
//       (written as ROOT/sys/devices/<mgmtdev>/<name>, mgmtdev vdpasim_net by
//        default, as Linux places them: discovery reads the mgmtdev from it)
//   VFs live in their PF's pci<DDDD>:<BB> directory (so virtfn/physfn stay
//   "../<BDF>"), also when their bus number differs from the PF's.
//   Also written: bus/dsa/devices/<dsaK> links,
//   sriov_offset/sriov_stride/sriov_vf_device on a PF, intel-iommu/address.
//   ROOT/sys/class/iommu/<unit> -> ../../devices/virtual/iommu/<unit>
//   ROOT/sys/kernel/iommu_groups/<N>/type reserved_regions devices/<BDF> -> ...
//   ROOT/sys/bus/pci/devices/<BDF> -> ../../../devices/pci.../<BDF>
//   ROOT/sys/bus/pci/drivers/<drv>/
//   ROOT/sys/bus/dsa/devices/wq<K>.<Q> -> ../../../devices/pci.../<BDF>/dsa<K>/wq<K>.<Q>
//   ROOT/sys/bus/vdpa/devices/<name> -> ../../../devices/.../<name>
//   ROOT/dev/vfio/devices/vfio<N>, ROOT/dev/iommu, ROOT/dev/dsa/wq<K>.<Q>,
//   ROOT/dev/vhost-vdpa-<N>                          empty regular files
#pragma once

#include <cstdint>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

namespace svad::hostgen {

struct HostgenError : std::runtime_error {
    using std::runtime_error::runtime_error;
};

struct PasidSpec {
    uint32_t width = 20;
    bool exec = false;
    bool priv = true;
};

struct VdpaSpec {
    std::string name; // vdpa0
    std::string driver = "vhost_vdpa";
    std::string mgmtdev; // empty: the parent PCI function; else a software one (vdpasim_net)
};

// Per-VF settings that differ from the SriovSpec defaults (driver, VFIO cdev, vDPA).
struct VfSpec {
    uint16_t index = 0;                  // 0 .. numVfs-1
    std::optional<std::string> driver{}; // default: SriovSpec::vfDriver
    std::string driverOverride{};
    std::optional<uint32_t> vfio{}; // vfio<N> cdev
    std::vector<VdpaSpec> vdpa{};
};

struct SriovSpec {
    uint16_t totalVfs = 0;
    uint16_t numVfs = 0; // VFs present; each gets its own function in the tree
    uint16_t vfDevice = 0;
    std::string vfDriver; // driver of the generated VFs, empty = unbound
    // VF i has routing ID = PF routing ID + firstVfOffset + i * vfStride.
    uint16_t firstVfOffset = 0x80;
    uint16_t vfStride = 1;
    std::vector<VfSpec> vfs{}; // overrides for single VFs, by index
};

struct QueueSpec {
    std::string name; // wq0.0
    std::string mode = "dedicated";
    std::string type = "user";
    std::string state = "enabled";
    uint32_t size = 16;
    int32_t groupId = 0;
    std::string wqName;
    bool charDevice = true;
    uint32_t priority = 10;
    uint32_t threshold = 0;
};

struct DeviceSpec {
    std::string address; // 0000:6a:01.0
    uint16_t vendor = 0x8086;
    uint16_t device = 0;
    uint16_t subsystemVendor = 0;
    uint16_t subsystemDevice = 0;
    uint32_t classCode = 0;
    uint8_t revision = 0;
    std::string driver;
    std::string driverOverride;
    int32_t numaNode = -1;
    std::optional<uint32_t> group;
    std::string iommu;            // unit name
    std::optional<uint32_t> vfio; // vfio<N> cdev
    // Capabilities to synthesize into config space (ignored if rawConfig is set).
    std::optional<PasidSpec> pasid;
    bool ats = false;
    bool pri = false;
    bool acs = false;
    bool siov = false;
    std::optional<SriovSpec> sriov;
    uint32_t configSize = 4096;
    // A real configuration space (e.g. imported from an lspci dump); written as is.
    std::optional<std::vector<uint8_t>> rawConfig;
    std::vector<QueueSpec> queues; // idxd work queues (parent dsa<K>)
    std::string idxdName;          // dsa0 / iax1; required if queues are given
    std::vector<VdpaSpec> vdpa;
    // Set on the VFs that expandHost() generates: the PF's address.
    std::string physfn{};
};

struct UnitSpec {
    std::string name; // dmar0
    uint64_t cap = 0;
    uint64_t ecap = 0;
    std::string version = "6:0";
};

struct GroupSpec {
    uint32_t id = 0;
    std::string type = "DMA";
    std::vector<std::string> reservedRegions; // "0x00000000fee00000 0x00000000feefffff msi"
};

struct HostSpec {
    std::string name;
    std::vector<UnitSpec> units;
    std::vector<GroupSpec> groups;
    std::vector<DeviceSpec> devices;
    std::vector<VdpaSpec> softwareVdpa; // vdpasim devices without a PCI parent
};

// Parses a YAML host description; errors carry file:line:column.
HostSpec loadHostYaml(const std::string& path);
// The same for YAML text; `name` stands for the file in the errors.
HostSpec parseHostYaml(const std::string& text, const std::string& name);

// A synthetic host of `functions` PCI functions spread over units and groups,
// with PASID-capable devices, SR-IOV PFs with VFs, DSA queues and vDPA devices.
HostSpec synthesize(uint32_t functions, uint64_t seed = 1);

// Config space bytes for a device spec (its rawConfig if set).
std::vector<uint8_t> buildConfig(const DeviceSpec& dev);

// Writes ROOT/sys and ROOT/dev. ROOT must not exist or be empty.
void writeTree(const HostSpec& host, const std::string& root);

// Checks a host description (addresses, duplicates, references, ranges, VF
// placement); throws HostgenError naming the offending entry.
void validateHost(const HostSpec& host);

// The host with its SR-IOV VFs as devices of their own (each right after its
// PF, `physfn` set, its own group numbered past the highest declared group,
// the PF's IOMMU unit). A PF whose VFs are already listed is left as is.
HostSpec expandHost(const HostSpec& host);

// What a host amounts to once expanded: the CLI prints it.
struct HostStats {
    size_t functions = 0;
    size_t groups = 0;
    size_t units = 0;
    size_t queues = 0;
    size_t vdpa = 0;
};
HostStats statsOf(const HostSpec& expanded);

// Address of VF `index` of the PF at `pfAddress`; nullopt when it would leave
// the PCI domain's routing-ID space.
std::optional<std::string> vfAddress(const std::string& pfAddress, const SriovSpec& sriov,
                                     uint32_t index);

// One device of an `lspci -xxx`/`-xxxx` dump: its address and config bytes.
struct DumpedDevice {
    std::string address; // as written in the dump, normalized to DDDD:BB:DD.F
    std::vector<uint8_t> config;
};

// Reads the hex parts of a file in pciutils' dump format (the one `lspci -F` reads).
std::vector<DumpedDevice> readLspciDump(const std::string& path);

} // namespace svad::hostgen
