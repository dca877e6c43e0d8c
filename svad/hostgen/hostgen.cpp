// The host generator's core: addresses, checking a host description, expanding SR-IOV VFs.
#include "svad/hostgen/hostgen.h"

#include "svad/hostgen/internal.h"

#include <algorithm>
#include <set>
#include <unordered_map>
#include <unordered_set>

namespace svad::hostgen {

namespace detail {

namespace {

int hexDigit(char c) {
    if (c >= '0' && c <= '9') {
        return c - '0';
    }
    if (c >= 'a' && c <= 'f') {
        return c - 'a' + 10;
    }
    if (c >= 'A' && c <= 'F') {
        return c - 'A' + 10;
    }
    return -1;
}

std::optional<uint32_t> hexField(std::string_view s) {
    uint32_t v = 0;
    for (char c : s) {
        int d = hexDigit(c);
        if (d < 0) {
            return std::nullopt;
        }
        v = v << 4 | static_cast<uint32_t>(d);
    }
    return v;
}

std::optional<uint32_t> decField(std::string_view s) {
    if (s.empty() || s.size() > 9) {
        return std::nullopt;
    }
    uint32_t v = 0;
    for (char c : s) {
        if (c < '0' || c > '9') {
            return std::nullopt;
        }
        v = v * 10 + static_cast<uint32_t>(c - '0');
    }
    return v;
}

} // namespace

std::optional<PciAddr> parseAddress(std::string_view t) {
    // DDDD:BB:DD.F
    if (t.size() != 12 || t[4] != ':' || t[7] != ':' || t[10] != '.') {
        return std::nullopt;
    }
    auto dom = hexField(t.substr(0, 4));
    auto bus = hexField(t.substr(5, 2));
    auto dev = hexField(t.substr(8, 2));
    auto fn = hexField(t.substr(11, 1));
    if (!dom || !bus || !dev || !fn || *dev > 0x1f || *fn > 7) {
        return std::nullopt;
    }
    return PciAddr{static_cast<uint16_t>(*dom), static_cast<uint8_t>(*bus),
                   static_cast<uint8_t>(*dev), static_cast<uint8_t>(*fn)};
}

std::string formatAddress(const PciAddr& a) {
    static const char* digits = "0123456789abcdef";
    std::string s = "0000:00:00.0";
    s[0] = digits[(a.domain >> 12) & 15];
    s[1] = digits[(a.domain >> 8) & 15];
    s[2] = digits[(a.domain >> 4) & 15];
    s[3] = digits[a.domain & 15];
    s[5] = digits[a.bus >> 4];
    s[6] = digits[a.bus & 15];
    s[8] = digits[a.dev >> 4];
    s[9] = digits[a.dev & 15];
    s[11] = digits[a.fn & 7];
    return s;
}

bool isSafeName(std::string_view name) {
    if (name.empty() || name == "." || name == ".." || name.size() > 200) {
        return false;
    }
    return std::all_of(name.begin(), name.end(), [](char c) {
        return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
               c == '_' || c == '-' || c == '.' || c == ':' || c == '+';
    });
}

std::optional<uint32_t> idxdNumber(std::string_view name) {
    if (name.size() < 4 || (name.substr(0, 3) != "dsa" && name.substr(0, 3) != "iax")) {
        return std::nullopt;
    }
    return decField(name.substr(3));
}

std::optional<std::pair<uint32_t, uint32_t>> queueNumbers(std::string_view name) {
    if (name.size() < 5 || name.substr(0, 2) != "wq") {
        return std::nullopt;
    }
    auto dot = name.find('.');
    if (dot == std::string_view::npos) {
        return std::nullopt;
    }
    auto k = decField(name.substr(2, dot - 2));
    auto q = decField(name.substr(dot + 1));
    if (!k || !q) {
        return std::nullopt;
    }
    return std::make_pair(*k, *q);
}

namespace {

const std::set<std::string, std::less<>> kGroupTypes = {"DMA", "DMA-FQ", "identity", "blocked",
                                                        "unmanaged"};
const std::set<std::string, std::less<>> kRegionTypes = {"direct", "direct-relaxable", "reserved",
                                                         "msi"};
const std::set<std::string, std::less<>> kQueueModes = {"dedicated", "shared"};
const std::set<std::string, std::less<>> kQueueTypes = {"user", "kernel", "none"};
const std::set<std::string, std::less<>> kQueueStates = {"enabled", "disabled", "locked"};

std::string idx(const char* list, size_t i) {
    return std::string(list) + "[" + std::to_string(i) + "]";
}

bool isHex64(std::string_view s) {
    if (s.size() < 3 || s.size() > 18 || s[0] != '0' || (s[1] != 'x' && s[1] != 'X')) {
        return false;
    }
    return std::all_of(s.begin() + 2, s.end(), [](char c) { return hexDigit(c) >= 0; });
}

// "START END TYPE" with 0x-hex addresses, START <= END.
bool isReservedRegion(const std::string& r) {
    auto s1 = r.find(' ');
    if (s1 == std::string::npos) {
        return false;
    }
    auto s2 = r.find(' ', s1 + 1);
    if (s2 == std::string::npos) {
        return false;
    }
    auto a = std::string_view(r).substr(0, s1);
    auto b = std::string_view(r).substr(s1 + 1, s2 - s1 - 1);
    if (!isHex64(a) || !isHex64(b)) {
        return false;
    }
    if (std::stoull(std::string(b), nullptr, 16) < std::stoull(std::string(a), nullptr, 16)) {
        return false;
    }
    return kRegionTypes.count(r.substr(s2 + 1)) != 0;
}

class Checker {
public:
    Checker(const HostSpec& host, const Locate& locate) : host_(host), locate_(locate) {}

    void run() {
        checkUnits();
        checkGroups();
        collectAddresses();
        for (size_t i = 0; i < host_.devices.size(); ++i) {
            checkDevice(i);
        }
        for (size_t i = 0; i < host_.softwareVdpa.size(); ++i) {
            const auto& v = host_.softwareVdpa[i];
            const std::string p = idx("software_vdpa", i);
            checkVdpa(v, p);
            if (!v.mgmtdev.empty() && !isSafeName(v.mgmtdev)) {
                fail(p + ".mgmtdev", "'" + v.mgmtdev + "' is not a valid management device name");
            }
        }
    }

private:
    [[noreturn]] void fail(const std::string& path, const std::string& what) const {
        throw HostgenError(locate_(path) + what);
    }

    void checkUnits() {
        std::unordered_set<std::string> names;
        for (size_t i = 0; i < host_.units.size(); ++i) {
            const auto& u = host_.units[i];
            if (!isSafeName(u.name)) {
                fail(idx("units", i) + ".name",
                     "'" + u.name + "' is not a valid IOMMU unit name (expected e.g. dmar0)");
            }
            if (!names.insert(u.name).second) {
                fail(idx("units", i) + ".name", "duplicate IOMMU unit '" + u.name + "'");
            }
            if (u.version.empty() || u.version.find('\n') != std::string::npos) {
                fail(idx("units", i) + ".version", "expected a version such as 6:0");
            }
        }
        units_ = std::move(names);
    }

    void checkGroups() {
        for (size_t i = 0; i < host_.groups.size(); ++i) {
            const auto& g = host_.groups[i];
            const std::string p = idx("groups", i);
            if (!groups_.insert(g.id).second) {
                fail(p + ".id", "duplicate IOMMU group " + std::to_string(g.id));
            }
            if (kGroupTypes.count(g.type) == 0) {
                fail(p + ".type", "unknown group type '" + g.type +
                                      "' (expected DMA, DMA-FQ, identity, blocked or unmanaged)");
            }
            for (size_t r = 0; r < g.reservedRegions.size(); ++r) {
                if (!isReservedRegion(g.reservedRegions[r])) {
                    fail(idx((p + ".reserved_regions").c_str(), r),
                         "'" + g.reservedRegions[r] +
                             "' is not 'START END TYPE' (e.g. '0x00000000fee00000 "
                             "0x00000000feefffff msi'; TYPE direct, direct-relaxable, reserved "
                             "or msi)");
                }
            }
        }
    }

    // `label` names the function in messages ("devices[2]", "VF 0 of 0000:3b:00.0").
    void addAddress(const std::string& addr, const std::string& path, const std::string& label) {
        auto [it, fresh] = addresses_.emplace(addr, label);
        if (!fresh) {
            fail(path,
                 "PCI address " + addr + " is used twice (" + it->second + " and " + label + ")");
        }
    }

    void collectAddresses() {
        // Declared functions first, then the VFs they generate.
        std::unordered_set<std::string> physfns;
        for (size_t i = 0; i < host_.devices.size(); ++i) {
            const auto& d = host_.devices[i];
            const std::string p = idx("devices", i);
            auto a = parseAddress(d.address);
            if (!a || formatAddress(*a) != d.address) {
                fail(p + ".address", "'" + d.address +
                                         "' is not a PCI address DDDD:BB:DD.F (lower-case hex, "
                                         "device <= 1f, function <= 7)");
            }
            addAddress(d.address, p + ".address", p);
            if (!d.physfn.empty()) {
                physfns.insert(d.physfn);
            }
        }
        for (size_t i = 0; i < host_.devices.size(); ++i) {
            const auto& d = host_.devices[i];
            if (!d.sriov || physfns.count(d.address) != 0) {
                continue;
            }
            const auto& s = *d.sriov;
            const std::string p = idx("devices", i) + ".sriov";
            for (uint32_t v = 0; v < s.numVfs; ++v) {
                auto va = vfAddress(d.address, s, v);
                if (!va) {
                    fail(p, "VF " + std::to_string(v) + " of " + d.address +
                                " would lie past bus ff (lower num_vfs, first_vf_offset or "
                                "vf_stride)");
                }
                addAddress(*va, p, "VF " + std::to_string(v) + " of " + d.address);
            }
        }
    }

    void checkName(const std::string& name, const std::string& path, const char* what) const {
        if (!name.empty() && !isSafeName(name)) {
            fail(path, "'" + name + "' is not a valid " + what + " name");
        }
    }

    void checkVfio(const std::optional<uint32_t>& vfio, const std::string& driver,
                   const std::string& path) {
        if (!vfio) {
            return;
        }
        if (!vfios_.insert(*vfio).second) {
            fail(path, "vfio" + std::to_string(*vfio) + " is used twice");
        }
        if (driver.find("vfio") == std::string::npos) {
            fail(path,
                 "a VFIO cdev needs a VFIO driver (e.g. driver: vfio-pci), not '" + driver + "'");
        }
    }

    void checkVdpa(const VdpaSpec& v, const std::string& path) {
        if (!isSafeName(v.name)) {
            fail(path + ".name", "'" + v.name + "' is not a valid vDPA device name (e.g. vdpa0)");
        }
        if (!vdpas_.insert(v.name).second) {
            fail(path + ".name", "duplicate vDPA device '" + v.name + "'");
        }
        checkName(v.driver, path + ".driver", "driver");
    }

    void checkDevice(size_t i) {
        const auto& d = host_.devices[i];
        const std::string p = idx("devices", i);
        const std::string who = "device " + d.address + ": ";
        if (d.group && groups_.count(*d.group) == 0) {
            fail(p + ".group",
                 who + "IOMMU group " + std::to_string(*d.group) + " is not declared under groups");
        }
        if (!d.iommu.empty() && units_.count(d.iommu) == 0) {
            fail(p + ".iommu", who + "IOMMU unit '" + d.iommu + "' is not declared under units");
        }
        checkName(d.driver, p + ".driver", "driver");
        checkName(d.driverOverride, p + ".driver_override", "driver");
        checkVfio(d.vfio, d.driver, p + ".vfio");
        if (d.pasid && (d.pasid->width < 1 || d.pasid->width > 20)) {
            fail(p + ".pasid.width",
                 who + "PASID width " + std::to_string(d.pasid->width) + " is not in 1..20");
        }
        if (d.rawConfig) {
            if (d.rawConfig->empty() || d.rawConfig->size() > 4096) {
                fail(p, who + "raw config space must hold 1..4096 bytes");
            }
        } else {
            if (d.configSize != 64 && d.configSize != 256 && d.configSize != 4096) {
                fail(p + ".config_size", who + "config_size " + std::to_string(d.configSize) +
                                             " is not 64, 256 or 4096");
            }
            bool ext = d.pasid || d.ats || d.pri || d.acs || d.siov || d.sriov;
            if (ext && d.configSize != 4096) {
                fail(p + ".config_size",
                     who + "extended capabilities (pasid, ats, pri, acs, siov, sriov) need "
                           "config_size 4096");
            }
        }
        if (!d.queues.empty() && d.idxdName.empty()) {
            fail(p + ".queues", who + "work queues need an idxd device (idxd: dsa0)");
        }
        std::optional<uint32_t> idxdNo;
        if (!d.idxdName.empty()) {
            idxdNo = idxdNumber(d.idxdName);
            if (!idxdNo) {
                fail(p + ".idxd", who + "'" + d.idxdName + "' is not an idxd name (dsaN or iaxN)");
            }
            if (!idxds_.insert(*idxdNo).second) {
                fail(p + ".idxd", who + "idxd number " + std::to_string(*idxdNo) +
                                      " is used twice (dsaN and iaxN share one numbering)");
            }
        }
        for (size_t q = 0; q < d.queues.size(); ++q) {
            checkQueue(d.queues[q], idx((p + ".queues").c_str(), q), *idxdNo);
        }
        for (size_t v = 0; v < d.vdpa.size(); ++v) {
            const std::string vp = idx((p + ".vdpa").c_str(), v);
            checkVdpa(d.vdpa[v], vp);
            if (!d.vdpa[v].mgmtdev.empty()) {
                fail(vp, "mgmtdev is for software_vdpa devices; this one's parent is " + d.address);
            }
        }
        if (!d.physfn.empty()) {
            if (addresses_.count(d.physfn) == 0) {
                fail(p, who + "physfn " + d.physfn + " is not a declared device");
            }
            if (d.sriov) {
                fail(p + ".sriov", who + "a VF cannot have SR-IOV VFs of its own");
            }
        }
        if (d.sriov) {
            checkSriov(d, p + ".sriov");
        }
    }

    void checkQueue(const QueueSpec& q, const std::string& p, uint32_t idxdNo) {
        auto nums = queueNumbers(q.name);
        if (!nums || nums->first != idxdNo) {
            fail(p + ".name", "'" + q.name + "' is not a work queue name wq" +
                                  std::to_string(idxdNo) + ".N of its idxd device");
        }
        if (!queues_.insert(q.name).second) {
            fail(p + ".name", "duplicate work queue '" + q.name + "'");
        }
        if (kQueueModes.count(q.mode) == 0) {
            fail(p + ".mode", "unknown mode '" + q.mode + "' (expected dedicated or shared)");
        }
        if (kQueueTypes.count(q.type) == 0) {
            fail(p + ".type", "unknown type '" + q.type + "' (expected user, kernel or none)");
        }
        if (kQueueStates.count(q.state) == 0) {
            fail(p + ".state",
                 "unknown state '" + q.state + "' (expected enabled, disabled or locked)");
        }
        if (q.groupId < -1) {
            fail(p + ".group_id", "group_id must be -1 or more");
        }
        if (q.wqName.find('\n') != std::string::npos) {
            fail(p + ".wq_name", "a name cannot hold a newline");
        }
    }

    void checkSriov(const DeviceSpec& d, const std::string& p) {
        const auto& s = *d.sriov;
        const std::string who = "device " + d.address + ": ";
        if (s.numVfs > s.totalVfs) {
            fail(p + ".num_vfs", who + "num_vfs " + std::to_string(s.numVfs) +
                                     " exceeds total_vfs " + std::to_string(s.totalVfs));
        }
        if (s.totalVfs > 0 && s.vfDevice == 0) {
            fail(p + ".vf_device", who + "SR-IOV needs vf_device (the VFs' device id)");
        }
        if (s.totalVfs > 0 && s.firstVfOffset == 0) {
            fail(p + ".first_vf_offset", who + "first_vf_offset must be at least 1");
        }
        if (s.totalVfs > 1 && s.vfStride == 0) {
            fail(p + ".vf_stride", who + "vf_stride must be at least 1");
        }
        checkName(s.vfDriver, p + ".vf_driver", "driver");
        std::unordered_set<uint32_t> seen;
        for (size_t i = 0; i < s.vfs.size(); ++i) {
            const auto& vf = s.vfs[i];
            const std::string vp = idx((p + ".vfs").c_str(), i);
            if (vf.index >= s.numVfs) {
                fail(vp + ".index", who + "VF index " + std::to_string(vf.index) +
                                        " is not below num_vfs " + std::to_string(s.numVfs));
            }
            if (!seen.insert(vf.index).second) {
                fail(vp + ".index", who + "VF " + std::to_string(vf.index) + " is listed twice");
            }
            const std::string drv = vf.driver.value_or(s.vfDriver);
            checkName(drv, vp + ".driver", "driver");
            checkName(vf.driverOverride, vp + ".driver_override", "driver");
            checkVfio(vf.vfio, drv, vp + ".vfio");
            for (size_t v = 0; v < vf.vdpa.size(); ++v) {
                const std::string ap = idx((vp + ".vdpa").c_str(), v);
                checkVdpa(vf.vdpa[v], ap);
                if (!vf.vdpa[v].mgmtdev.empty()) {
                    fail(ap, "mgmtdev is for software_vdpa devices");
                }
            }
        }
    }

    const HostSpec& host_;
    const Locate& locate_;
    std::unordered_set<std::string> units_;
    std::unordered_set<uint32_t> groups_;
    std::unordered_map<std::string, std::string> addresses_; // address -> label
    std::unordered_set<uint32_t> vfios_;
    std::unordered_set<std::string> vdpas_;
    std::unordered_set<uint32_t> idxds_;
    std::unordered_set<std::string> queues_;
};

} // namespace

void validateHostAt(const HostSpec& host, const Locate& locate) {
    Checker(host, locate).run();
}

} // namespace detail

void validateHost(const HostSpec& host) {
    detail::validateHostAt(host, [](const std::string& path) { return path + ": "; });
}

std::optional<std::string> vfAddress(const std::string& pfAddress, const SriovSpec& sriov,
                                     uint32_t index) {
    auto pf = detail::parseAddress(pfAddress);
    if (!pf) {
        return std::nullopt;
    }
    uint64_t rid = uint64_t{pf->rid()} + sriov.firstVfOffset + uint64_t{index} * sriov.vfStride;
    if (rid > 0xffff) {
        return std::nullopt;
    }
    return detail::formatAddress(detail::PciAddr::fromRid(pf->domain, static_cast<uint32_t>(rid)));
}

HostSpec expandHost(const HostSpec& host) {
    HostSpec out;
    out.name = host.name;
    out.units = host.units;
    out.groups = host.groups;
    out.softwareVdpa = host.softwareVdpa;

    std::unordered_set<std::string> physfns;
    size_t vfCount = 0;
    uint32_t nextGroup = 0;
    for (const auto& g : host.groups) {
        nextGroup = std::max(nextGroup, g.id + 1);
    }
    std::unordered_map<uint32_t, std::string> groupType;
    for (const auto& g : host.groups) {
        groupType.emplace(g.id, g.type);
    }
    for (const auto& d : host.devices) {
        if (!d.physfn.empty()) {
            physfns.insert(d.physfn);
        }
        if (d.sriov) {
            vfCount += d.sriov->numVfs;
        }
    }
    out.devices.reserve(host.devices.size() + vfCount);
    for (const auto& pf : host.devices) {
        out.devices.push_back(pf);
        if (!pf.sriov || pf.sriov->numVfs == 0 || physfns.count(pf.address) != 0) {
            continue;
        }
        const auto& s = *pf.sriov;
        std::vector<const VfSpec*> overrides(s.numVfs, nullptr);
        for (const auto& vf : s.vfs) {
            if (vf.index < s.numVfs) {
                overrides[vf.index] = &vf;
            }
        }
        for (uint32_t i = 0; i < s.numVfs; ++i) {
            auto addr = vfAddress(pf.address, s, i);
            if (!addr) {
                throw HostgenError("device " + pf.address + ": VF " + std::to_string(i) +
                                   " lies past bus ff");
            }
            DeviceSpec vf;
            vf.address = *addr;
            vf.vendor = pf.vendor;
            vf.device = s.vfDevice;
            vf.subsystemVendor = pf.subsystemVendor;
            vf.subsystemDevice = pf.subsystemDevice;
            vf.classCode = pf.classCode;
            vf.revision = pf.revision;
            vf.driver = s.vfDriver;
            vf.numaNode = pf.numaNode;
            vf.iommu = pf.iommu;
            vf.ats = pf.ats; // VFs have their own ATS; PASID and PRI are the PF's
            vf.configSize = 4096;
            vf.physfn = pf.address;
            if (pf.group) {
                GroupSpec g;
                g.id = nextGroup++;
                auto t = groupType.find(*pf.group);
                g.type = t == groupType.end() ? "DMA" : t->second;
                g.reservedRegions.push_back(detail::kMsiRegion);
                vf.group = g.id;
                out.groups.push_back(std::move(g));
            }
            if (const VfSpec* o = overrides[i]) {
                if (o->driver) {
                    vf.driver = *o->driver;
                }
                vf.driverOverride = o->driverOverride;
                vf.vfio = o->vfio;
                vf.vdpa = o->vdpa;
            }
            out.devices.push_back(std::move(vf));
        }
    }
    return out;
}

HostStats statsOf(const HostSpec& h) {
    HostStats s;
    s.functions = h.devices.size();
    s.groups = h.groups.size();
    s.units = h.units.size();
    s.vdpa = h.softwareVdpa.size();
    for (const auto& d : h.devices) {
        s.queues += d.queues.size();
        s.vdpa += d.vdpa.size();
    }
    return s;
}

} // namespace svad::hostgen
