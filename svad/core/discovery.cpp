#include "svad/core/discovery.h"

#include "svad/core/parse.h"
#include "svad/core/pci_caps.h"
#include "svad/core/text.h"
#include "svad/core/thread_name.h"
#include "svad/core/vtd.h"

#include <algorithm>
#include <atomic>
#include <exception>
#include <map>
#include <set>
#include <system_error>
#include <thread>
#include <unordered_map>

namespace svad::core {

namespace {

constexpr size_t kConfigMax = 4096;
// Warnings kept per object; a 64 KiB garbage reserved_regions would otherwise give thousands.
constexpr size_t kMaxWarnings = 16;
constexpr const char* kMissingMember = " is not in bus/pci/devices";

// Collects the warnings of one object, prefixed with the attribute concerned.
class Warnings {
public:
    explicit Warnings(std::vector<std::string>& out) : out_(out) {}
    void add(const std::string& what) { out_.push_back(what); }

private:
    std::vector<std::string>& out_;
};

// A text attribute as the reader gives it; what the reader says about it
// (refused: a FIFO, a device; cut) becomes a warning naming the attribute.
// A required attribute's absence is a warning too.
std::optional<std::string> readAttr(const ports::Sysfs& fs, const std::string& dir,
                                    const std::string& attr, Warnings& w, bool required = false) {
    auto r = fs.readText(dir + "/" + attr);
    if (!r.note.empty()) {
        w.add(attr + ": " + r.note);
    } else if (!r.value && required) {
        w.add(attr + ": missing or unreadable");
    }
    return std::move(r.value);
}

std::optional<uint64_t> readHexAttr(const ports::Sysfs& fs, const std::string& dir,
                                    const char* attr, Warnings& w, bool required = true) {
    auto r = fs.readText(dir + "/" + attr);
    if (!r.note.empty()) {
        w.add(std::string(attr) + ": " + r.note);
    }
    auto& text = r.value;
    if (!text) {
        if (required && r.note.empty()) {
            w.add(std::string(attr) + ": missing or unreadable");
        }
        return std::nullopt;
    }
    auto v = parseHex(*text);
    if (!v) {
        w.add(std::string(attr) + ": not a hexadecimal number: '" + cutUtf8(*text, 32) + "'");
    }
    return v;
}

std::optional<int64_t> readDecAttr(const ports::Sysfs& fs, const std::string& dir, const char* attr,
                                   Warnings& w, bool required = true) {
    auto r = fs.readText(dir + "/" + attr);
    if (!r.note.empty()) {
        w.add(std::string(attr) + ": " + r.note);
    }
    auto& text = r.value;
    if (!text) {
        if (required && r.note.empty()) {
            w.add(std::string(attr) + ": missing or unreadable");
        }
        return std::nullopt;
    }
    auto v = parseDec(*text);
    if (!v) {
        w.add(std::string(attr) + ": not a decimal number: '" + cutUtf8(*text, 32) + "'");
    }
    return v;
}

template <typename T>
T narrow(std::optional<uint64_t> v, uint64_t max, const char* attr, Warnings& w) {
    if (!v) {
        return 0;
    }
    if (*v > max) {
        w.add(std::string(attr) + ": value out of range");
        return 0;
    }
    return static_cast<T>(*v);
}

// A non-negative decimal count (sriov_totalvfs, size); 0 with a warning otherwise.
uint32_t readCount(const ports::Sysfs& fs, const std::string& dir, const char* attr, Warnings& w) {
    auto v = readDecAttr(fs, dir, attr, w);
    if (!v) {
        return 0;
    }
    if (*v < 0 || *v > UINT32_MAX) {
        w.add(std::string(attr) + ": value out of range");
        return 0;
    }
    return static_cast<uint32_t>(*v);
}

std::string linkBase(const ports::Sysfs& fs, const std::string& path) {
    auto target = fs.readLink(path);
    return target ? baseName(*target) : std::string();
}

// Components of a link target, e.g. "../../../devices/pci0000:6a/0000:6a:01.0/dsa0/wq0.0".
std::vector<std::string> components(const std::string& path);

// The driver a device's "driver" link names: the kernel's leads into a
// drivers/ directory ("../../../bus/pci/drivers/nvme"). One that does not (a
// loop, a link elsewhere) names no driver and is a warning; no extra read.
std::string driverOf(const ports::Sysfs& fs, const std::string& dir, Warnings& w) {
    auto target = fs.readLink(dir + "/driver");
    if (!target) {
        return {};
    }
    const auto comps = components(*target);
    if (comps.size() < 2 || comps[comps.size() - 2] != "drivers") {
        w.add("driver: the link does not lead into a drivers/ directory: no driver");
        return {};
    }
    return comps.back();
}

std::vector<std::string> components(const std::string& path) {
    std::vector<std::string> out;
    size_t start = 0;
    while (start <= path.size()) {
        size_t end = path.find('/', start);
        if (end == std::string::npos) {
            end = path.size();
        }
        if (end > start) {
            out.push_back(path.substr(start, end - start));
        }
        start = end + 1;
    }
    return out;
}

// The nearest PCI function above `name` in a device link target.
std::string pciParentOf(const std::vector<std::string>& comps, const std::string& name) {
    auto it = std::find(comps.rbegin(), comps.rend(), name);
    for (; it != comps.rend(); ++it) {
        if (isPciAddress(*it)) {
            return *it;
        }
    }
    return {};
}

void discoverUnits(const ports::Sysfs& fs, Host& host) {
    auto names = fs.list("class/iommu");
    if (!names) {
        return; // no IOMMU at all: a valid (if unhelpful) host
    }
    for (const auto& name : *names) {
        IommuUnit unit;
        unit.name = name;
        Warnings w(unit.warnings);
        const std::string dir = "class/iommu/" + name;
        if (fs.exists(dir + "/intel-iommu")) {
            unit.kind = UnitKind::IntelVtd;
            auto cap = readHexAttr(fs, dir, "intel-iommu/cap", w);
            auto ecap = readHexAttr(fs, dir, "intel-iommu/ecap", w);
            unit.version = readAttr(fs, dir, "intel-iommu/version", w).value_or("");
            if (cap && ecap) {
                unit.vtd = decodeVtd(*cap, *ecap);
            }
        } else if (fs.exists(dir + "/amd-iommu")) {
            unit.kind = UnitKind::AmdVi;
        } else if (name.rfind("smmu", 0) == 0 || name.find(".smmu") != std::string::npos) {
            unit.kind = UnitKind::ArmSmmuV3;
        } else {
            unit.kind = UnitKind::Other;
        }
        if (auto devs = fs.list(dir + "/devices")) {
            for (const auto& d : *devs) {
                if (isPciAddress(d)) {
                    unit.devices.push_back(d);
                }
            }
        }
        host.units.push_back(std::move(unit));
    }
}

GroupType groupTypeOf(const std::string& t) {
    if (t == "DMA") {
        return GroupType::Dma;
    }
    if (t == "DMA-FQ") {
        return GroupType::DmaFq;
    }
    if (t == "identity") {
        return GroupType::Identity;
    }
    if (t == "blocked") {
        return GroupType::Blocked;
    }
    if (t == "unmanaged") {
        return GroupType::Unmanaged;
    }
    return GroupType::Unknown;
}

void parseReservedRegions(const std::string& text, IommuGroup& g) {
    size_t start = 0;
    int line = 0;
    while (start < text.size()) {
        size_t end = text.find('\n', start);
        if (end == std::string::npos) {
            end = text.size();
        }
        std::string l = text.substr(start, end - start);
        start = end + 1;
        ++line;
        if (l.empty()) {
            continue;
        }
        auto s1 = l.find(' ');
        auto s2 = s1 == std::string::npos ? s1 : l.find(' ', s1 + 1);
        std::optional<uint64_t> a;
        std::optional<uint64_t> b;
        if (s2 != std::string::npos) {
            a = parseHex(l.substr(0, s1));
            b = parseHex(l.substr(s1 + 1, s2 - s1 - 1));
        }
        if (!a || !b || *b < *a) {
            g.warnings.push_back("reserved_regions: line " + std::to_string(line) +
                                 " is not 'START END TYPE': '" + cutUtf8(l, 64) + "'");
            continue;
        }
        g.reservedRegions.push_back(ReservedRegion{*a, *b, l.substr(s2 + 1)});
    }
}

IommuGroup readGroup(const ports::Sysfs& fs, uint32_t id, const std::string& name) {
    IommuGroup g;
    g.id = id;
    const std::string dir = "kernel/iommu_groups/" + name;
    Warnings w(g.warnings);
    if (auto t = readAttr(fs, dir, "type", w, true)) {
        g.typeName = *t;
        g.type = groupTypeOf(*t);
    }
    if (auto rr = readAttr(fs, dir, "reserved_regions", w)) {
        parseReservedRegions(*rr, g);
    }
    if (auto devs = fs.list(dir + "/devices")) {
        for (const auto& d : *devs) {
            if (isPciAddress(d)) {
                g.devices.push_back(d);
            } else {
                g.warnings.push_back("devices/" + d + ": not a PCI address");
            }
        }
    }
    return g;
}

PciDevice readPciDevice(const ports::Sysfs& fs, const std::string& address) {
    PciDevice d;
    d.address = address;
    Warnings w(d.warnings);
    const std::string dir = "bus/pci/devices/" + address;

    // One listing tells which optional attributes and links exist, so that
    // nothing absent is asked for. Without a listing, everything is tried.
    const auto entries = fs.list(dir);
    auto has = [&entries](const char* name) {
        return !entries || std::binary_search(entries->begin(), entries->end(), name);
    };

    d.vendor = narrow<uint16_t>(readHexAttr(fs, dir, "vendor", w), 0xffff, "vendor", w);
    d.device = narrow<uint16_t>(readHexAttr(fs, dir, "device", w), 0xffff, "device", w);
    d.classCode = narrow<uint32_t>(readHexAttr(fs, dir, "class", w), 0xffffff, "class", w);
    if (has("subsystem_vendor")) {
        d.subsystemVendor = narrow<uint16_t>(readHexAttr(fs, dir, "subsystem_vendor", w), 0xffff,
                                             "subsystem_vendor", w);
    }
    if (has("subsystem_device")) {
        d.subsystemDevice = narrow<uint16_t>(readHexAttr(fs, dir, "subsystem_device", w), 0xffff,
                                             "subsystem_device", w);
    }
    if (has("revision")) {
        d.revision = narrow<uint8_t>(readHexAttr(fs, dir, "revision", w), 0xff, "revision", w);
    }
    if (has("driver")) {
        d.driver = driverOf(fs, dir, w);
    }
    if (has("driver_override")) {
        if (auto ov = readAttr(fs, dir, "driver_override", w); ov && *ov != "(null)") {
            d.driverOverride = *ov;
        }
    }
    if (has("numa_node")) {
        if (auto numa = readDecAttr(fs, dir, "numa_node", w)) {
            if (*numa < -1 || *numa > INT32_MAX) {
                w.add("numa_node: value out of range");
            } else {
                d.numaNode = static_cast<int32_t>(*numa);
            }
        }
    }
    if (has("iommu_group")) {
        if (auto g = fs.readLink(dir + "/iommu_group")) {
            auto id = parseDec(baseName(*g));
            if (id && *id >= 0 && *id <= UINT32_MAX) {
                d.group = static_cast<uint32_t>(*id);
            } else {
                // Where it leads is not quoted: it may be a file outside the sysfs root.
                w.add("iommu_group: the link does not lead to a group directory");
            }
        }
    }
    if (has("iommu")) {
        d.iommuUnit = linkBase(fs, dir + "/iommu");
    }
    if (has("physfn")) {
        d.physfn = linkBase(fs, dir + "/physfn");
    }
    if (entries ? has("sriov_totalvfs") : fs.exists(dir + "/sriov_totalvfs")) {
        d.sriovTotalVfs = readCount(fs, dir, "sriov_totalvfs", w);
        d.sriovNumVfs = readCount(fs, dir, "sriov_numvfs", w);
    }

    if (entries) {
        std::map<int64_t, std::string> vfs;
        for (const auto& e : *entries) {
            if (e.rfind("virtfn", 0) == 0) {
                auto idx = parseDec(e.substr(6));
                auto target = linkBase(fs, dir + "/" + e);
                if (idx && *idx >= 0 && isPciAddress(target)) {
                    vfs.emplace(*idx, target);
                } else {
                    w.add(e + ": not a link to a PCI function");
                }
            }
        }
        for (auto& [i, a] : vfs) {
            d.virtfns.push_back(std::move(a));
        }
        if (has("vfio-dev")) {
            if (auto v = fs.list(dir + "/vfio-dev"); !v) {
                w.add("vfio-dev: listed but could not be read");
            } else if (!v->empty()) {
                d.vfioDevice = v->front();
                if (v->size() > 1) {
                    w.add("vfio-dev: more than one cdev, using " + d.vfioDevice);
                }
            }
        }
    }

    auto config = fs.readBinary(dir + "/config", kConfigMax);
    if (!config.note.empty()) {
        w.add("config: " + config.note);
    }
    if (!config) {
        if (config.note.empty()) {
            w.add("config: missing or unreadable");
        }
    } else {
        d.configSize = static_cast<uint32_t>(config->size());
        if (config->size() < 256) {
            // An unprivileged read of config returns the first 64 bytes only.
            w.add("config: only " + std::to_string(config->size()) +
                  " bytes readable (256 or more expected): capabilities may be missing");
        }
        if (config->size() > 0x0e) {
            d.headerType = (*config)[0x0e] & 0x7f;
        }
        d.caps = parsePciConfig(*config);
        for (const auto& cw : d.caps.warnings) {
            w.add("config: " + cw);
        }
    }
    return d;
}

// As the kernel's VFIO judges a group: bridges (any header but type 0) never
// hold it back, other members must be unbound or on vfio-pci or pci-stub.
bool keepsGroupViable(const PciDevice& d) {
    return d.headerType != 0 || d.driver.empty() || d.driver == "vfio-pci" ||
           d.driver == "pci-stub";
}

void computeViability(Host& host) {
    std::unordered_map<std::string, const PciDevice*> byAddress;
    for (const auto& d : host.devices) {
        byAddress.emplace(d.address, &d);
    }
    for (auto& g : host.groups) {
        g.blockers.clear();
        for (const auto& member : g.devices) {
            auto it = byAddress.find(member);
            if (it == byAddress.end()) {
                g.warnings.push_back("member " + member + kMissingMember);
                continue;
            }
            if (!keepsGroupViable(*it->second)) {
                g.blockers.push_back(GroupBlocker{member, it->second->driver});
            }
        }
        g.viable = g.blockers.empty() && !g.devices.empty();
    }
}

QueueMode queueModeOf(const std::string& s) {
    if (s == "dedicated") {
        return QueueMode::Dedicated;
    }
    if (s == "shared") {
        return QueueMode::Shared;
    }
    return QueueMode::Unknown;
}

QueueType queueTypeOf(const std::string& s) {
    if (s == "none") {
        return QueueType::None;
    }
    if (s == "kernel") {
        return QueueType::Kernel;
    }
    if (s == "user") {
        return QueueType::User;
    }
    return QueueType::Unknown;
}

QueueState queueStateOf(const std::string& s) {
    if (s == "disabled") {
        return QueueState::Disabled;
    }
    if (s == "enabled") {
        return QueueState::Enabled;
    }
    if (s == "locked") {
        return QueueState::Locked;
    }
    return QueueState::Unknown;
}

bool isWorkQueueName(const std::string& n) {
    // wq<K>.<Q>
    if (n.size() < 5 || n.rfind("wq", 0) != 0) {
        return false;
    }
    auto dot = n.find('.');
    return dot != std::string::npos && dot > 2 && parseDec(n.substr(2, dot - 2)) &&
           parseDec(n.substr(dot + 1));
}

// An entry of `previous` (a queue or a vDPA device) by name, to be kept as it is,
// link and all, when its parent function is not among `affected` (a partial
// re-read after PCI events). A change of the entry itself comes with an event of
// its own, which reads them all; one that came or went shows in the listing.
template <typename Item> class Keep {
public:
    Keep(const std::vector<Item>* previous, const std::set<std::string>* affected)
        : affected_(affected) {
        if (previous != nullptr && affected != nullptr) {
            for (const auto& i : *previous) {
                byName_.emplace(i.name, &i);
            }
        }
    }
    // None without a previous host, for an entry that was not there, one below an
    // affected function, or one whose parent was not found (no event would name it).
    const Item* unchanged(const std::string& name) const {
        auto it = byName_.find(name);
        if (it == byName_.end() || it->second->parentDevice.empty() ||
            affected_->count(it->second->parentDevice) != 0) {
            return nullptr;
        }
        return it->second;
    }

private:
    const std::set<std::string>* affected_;
    std::unordered_map<std::string, const Item*> byName_;
};

void discoverQueues(const ports::Sysfs& fs, Host& host,
                    const std::vector<SiovQueue>* previous = nullptr,
                    const std::set<std::string>* affected = nullptr) {
    auto names = fs.list("bus/dsa/devices");
    if (!names) {
        return;
    }
    const Keep<SiovQueue> keep(previous, affected);
    for (const auto& name : *names) {
        if (!isWorkQueueName(name)) {
            continue; // dsaK, iaxK, engineK.E, groupK.G live on the same bus
        }
        if (const SiovQueue* kept = keep.unchanged(name)) {
            host.queues.push_back(*kept);
            continue;
        }
        SiovQueue q;
        q.name = name;
        Warnings w(q.warnings);
        const std::string dir = "bus/dsa/devices/" + name;
        if (auto target = fs.readLink(dir)) {
            auto comps = components(*target);
            auto self = std::find(comps.rbegin(), comps.rend(), name);
            if (self != comps.rend() && std::next(self) != comps.rend()) {
                q.idxdDevice = *std::next(self);
            }
            q.parentDevice = pciParentOf(comps, name);
        }
        if (q.parentDevice.empty()) {
            w.add("parent accelerator not found");
        }
        auto text = [&](const char* attr) { return readAttr(fs, dir, attr, w, true).value_or(""); };
        q.mode = queueModeOf(text("mode"));
        q.type = queueTypeOf(text("type"));
        q.state = queueStateOf(text("state"));
        q.wqName = readAttr(fs, dir, "name", w).value_or("");
        q.size = readCount(fs, dir, "size", w);
        if (auto gid = readDecAttr(fs, dir, "group_id", w, false);
            gid && *gid >= -1 && *gid <= INT32_MAX) {
            q.groupId = static_cast<int32_t>(*gid);
        }
        if (auto p = readDecAttr(fs, dir, "priority", w, false); p && *p >= 0 && *p <= UINT32_MAX) {
            q.priority = static_cast<uint32_t>(*p);
        }
        if (auto t = readDecAttr(fs, dir, "threshold", w, false);
            t && *t >= 0 && *t <= UINT32_MAX) {
            q.threshold = static_cast<uint32_t>(*t);
        }
        if (q.type == QueueType::User && q.state == QueueState::Enabled) {
            q.charDevice = "dsa/" + name;
        }
        host.queues.push_back(std::move(q));
    }
}

void discoverVdpa(const ports::Sysfs& fs, Host& host,
                  const std::vector<VdpaDevice>* previous = nullptr,
                  const std::set<std::string>* affected = nullptr) {
    auto names = fs.list("bus/vdpa/devices");
    if (!names) {
        return;
    }
    const Keep<VdpaDevice> keep(previous, affected);
    for (const auto& name : *names) {
        if (const VdpaDevice* kept = keep.unchanged(name)) {
            host.vdpa.push_back(*kept);
            continue;
        }
        VdpaDevice v;
        v.name = name;
        const std::string dir = "bus/vdpa/devices/" + name;
        if (auto target = fs.readLink(dir)) {
            auto comps = components(*target);
            v.parentDevice = pciParentOf(comps, name);
            if (!v.parentDevice.empty()) {
                v.mgmtdev = "pci/" + v.parentDevice;
            } else {
                // The parent device names the management device. vdpa_sim's
                // devices have none (/sys/devices/vdpa0 on Linux 6.12): sysfs
                // does not say which management device made them.
                auto self = std::find(comps.rbegin(), comps.rend(), name);
                if (self != comps.rend() && std::next(self) != comps.rend() &&
                    *std::next(self) != "devices") {
                    v.mgmtdev = *std::next(self);
                }
            }
        }
        Warnings vw(v.warnings);
        v.driver = driverOf(fs, dir, vw);
        if (auto entries = fs.list(dir)) {
            for (const auto& e : *entries) {
                if (e.rfind("vhost-vdpa-", 0) == 0) {
                    v.vhostDevice = e;
                }
            }
        }
        if (v.driver == "vhost_vdpa" && v.vhostDevice.empty()) {
            v.warnings.push_back("bound to vhost_vdpa but no vhost-vdpa-N device");
        }
        host.vdpa.push_back(std::move(v));
    }
}

// The work of one scan: what to read, listed first, then read by one or
// more readers, each filling its own slots.
struct ScanPlan {
    std::vector<std::pair<uint32_t, std::string>> groups; // id, directory name
    std::vector<std::string> devices;
};

ScanPlan plan(const ports::Sysfs& fs, Host& host) {
    ScanPlan p;
    if (auto names = fs.list("kernel/iommu_groups")) {
        for (const auto& name : *names) {
            auto id = parseDec(name);
            if (!id || *id < 0 || *id > UINT32_MAX) {
                host.warnings.push_back("kernel/iommu_groups/" + name + ": not a group number");
                continue;
            }
            // The kernel names group N "N": another spelling ("030") would be a second
            // group 30 beside the real one, counted but not published.
            if (std::to_string(*id) != name) {
                host.warnings.push_back("kernel/iommu_groups/" + name + ": not how the kernel " +
                                        "names group " + std::to_string(*id) + "; skipped");
                continue;
            }
            p.groups.emplace_back(static_cast<uint32_t>(*id), name);
        }
    }
    if (auto names = fs.list("bus/pci/devices")) {
        for (const auto& name : *names) {
            if (!isPciAddress(name)) {
                host.warnings.push_back("bus/pci/devices/" + name + ": not a PCI address");
                continue;
            }
            p.devices.push_back(name);
        }
    } else {
        host.warnings.push_back("bus/pci/devices: missing or unreadable");
    }
    host.groups.resize(p.groups.size());
    host.devices.resize(p.devices.size());
    return p;
}

// Reads items [begin, end) of the plan: groups first, then devices.
void readItems(const ports::Sysfs& fs, const ScanPlan& p, Host& host, size_t begin, size_t end) {
    for (size_t i = begin; i < end; ++i) {
        if (i < p.groups.size()) {
            host.groups[i] = readGroup(fs, p.groups[i].first, p.groups[i].second);
        } else {
            const size_t d = i - p.groups.size();
            host.devices[d] = readPciDevice(fs, p.devices[d]);
        }
    }
}

// Text from sysfs is whatever root wrote there: the model holds it as valid
// UTF-8 (invalid bytes escaped), since all of it may end up on the bus. A new
// string in the model is added here.
void clean(std::string& s) {
    if (!validUtf8(s)) {
        s = sanitizeUtf8(s);
    }
}

// At most kMaxWarnings per object: the last one says how many more there were.
void clean(std::vector<std::string>& list, bool warnings = false) {
    if (warnings && list.size() > kMaxWarnings) {
        const size_t more = list.size() - (kMaxWarnings - 1);
        list.resize(kMaxWarnings - 1);
        list.push_back(std::to_string(more) + " more warnings not shown");
    }
    for (auto& s : list) {
        clean(s);
    }
}

void cleanText(Host& host) {
    for (auto& u : host.units) {
        clean(u.name);
        clean(u.version);
        clean(u.devices);
        clean(u.warnings, true);
    }
    for (auto& g : host.groups) {
        clean(g.typeName);
        for (auto& r : g.reservedRegions) {
            clean(r.type);
        }
        clean(g.devices);
        for (auto& b : g.blockers) {
            clean(b.device);
            clean(b.driver);
        }
        clean(g.warnings, true);
    }
    for (auto& d : host.devices) {
        clean(d.address);
        clean(d.driver);
        clean(d.driverOverride);
        clean(d.iommuUnit);
        clean(d.physfn);
        clean(d.virtfns);
        clean(d.vfioDevice);
        clean(d.caps.warnings, true);
        clean(d.warnings, true);
    }
    for (auto& q : host.queues) {
        clean(q.name);
        clean(q.idxdDevice);
        clean(q.parentDevice);
        clean(q.wqName);
        clean(q.charDevice);
        clean(q.warnings, true);
    }
    for (auto& v : host.vdpa) {
        clean(v.name);
        clean(v.mgmtdev);
        clean(v.parentDevice);
        clean(v.driver);
        clean(v.vhostDevice);
        clean(v.warnings, true);
    }
    clean(host.warnings, true);
}

void finish(const ports::Sysfs& fs, Host& host) {
    std::sort(host.groups.begin(), host.groups.end(),
              [](const IommuGroup& a, const IommuGroup& b) { return a.id < b.id; });
    computeViability(host);
    discoverQueues(fs, host);
    discoverVdpa(fs, host);
    cleanText(host);
}

} // namespace

Host discover(const ports::Sysfs& fs) {
    Host host;
    discoverUnits(fs, host);
    ScanPlan p = plan(fs, host);
    readItems(fs, p, host, 0, p.groups.size() + p.devices.size());
    finish(fs, host);
    return host;
}

namespace {

// Drops the warnings computeViability() adds, before it runs again on a copied group.
void dropViabilityWarnings(IommuGroup& g) {
    const std::string suffix = kMissingMember;
    std::erase_if(g.warnings, [&suffix](const std::string& w) {
        return w.rfind("member ", 0) == 0 && w.size() > suffix.size() &&
               w.compare(w.size() - suffix.size(), suffix.size(), suffix) == 0;
    });
}

} // namespace

Host refresh(const ports::Sysfs& fs, const Host& previous, const HostChanges& changes) {
    std::unordered_map<std::string, const PciDevice*> old;
    for (const auto& d : previous.devices) {
        old.emplace(d.address, &d);
    }
    // A function's PF and VFs follow it: the PF lists its VFs, a VF names its PF.
    std::set<std::string> affected = changes.pci;
    std::set<uint32_t> groups;
    for (const auto& a : changes.pci) {
        if (auto it = old.find(a); it != old.end()) {
            const PciDevice& d = *it->second;
            if (!d.physfn.empty()) {
                affected.insert(d.physfn);
            }
            affected.insert(d.virtfns.begin(), d.virtfns.end());
            if (d.group) {
                groups.insert(*d.group);
            }
        }
    }

    // A function named that svad did not have is one that came, whatever the event said.
    const bool cameOrWent = changes.pciAddedOrRemoved ||
                            std::any_of(changes.pci.begin(), changes.pci.end(),
                                        [&old](const std::string& a) { return old.count(a) == 0; });
    const bool listed = changes.units || cameOrWent;
    Host host;
    ScanPlan p;
    if (listed) {
        discoverUnits(fs, host); // a unit lists its functions
        p = plan(fs, host);
    } else {
        // Nothing came or went: the functions and groups are those of before, and
        // so are the warnings their listings gave; nothing is listed again.
        host.units = previous.units;
        host.warnings = previous.warnings;
        for (const auto& g : previous.groups) {
            p.groups.emplace_back(g.id, std::to_string(g.id));
        }
        for (const auto& d : previous.devices) {
            p.devices.push_back(d.address);
        }
        host.groups.resize(p.groups.size());
        host.devices.resize(p.devices.size());
    }
    std::vector<size_t> reread;
    for (size_t i = 0; i < p.devices.size(); ++i) {
        const std::string& a = p.devices[i];
        auto it = old.find(a);
        if (it == old.end() || affected.count(a) != 0) {
            host.devices[i] = readPciDevice(fs, a);
            reread.push_back(i);
        } else {
            host.devices[i] = *it->second;
        }
    }
    // What the re-read functions name now: a new VF's PF, a new group.
    std::unordered_map<std::string, size_t> index;
    for (size_t i = 0; i < host.devices.size(); ++i) {
        index.emplace(host.devices[i].address, i);
    }
    std::unordered_map<uint32_t, const IommuGroup*> oldGroups;
    for (const auto& g : previous.groups) {
        oldGroups.emplace(g.id, &g);
    }
    bool unlistedHolds = true; // what was taken from `previous` unlisted is still so
    std::vector<size_t> relatives;
    for (size_t i : reread) {
        const PciDevice& d = host.devices[i];
        std::vector<std::string> related = d.virtfns;
        if (!d.physfn.empty()) {
            related.push_back(d.physfn);
        }
        for (const auto& r : related) {
            if (affected.insert(r).second) {
                if (auto it = index.find(r); it != index.end()) {
                    host.devices[it->second] = readPciDevice(fs, r);
                    relatives.push_back(it->second);
                    if (auto was = old.find(r); was != old.end() && was->second->group) {
                        groups.insert(*was->second->group);
                    }
                } else {
                    unlistedHolds = false; // a PF or VF svad does not have
                }
            }
        }
    }
    reread.insert(reread.end(), relatives.begin(), relatives.end());
    for (size_t i : reread) {
        const PciDevice& d = host.devices[i];
        if (d.group) {
            groups.insert(*d.group);
            unlistedHolds = unlistedHolds && oldGroups.count(*d.group) != 0;
        }
    }
    if (!listed) {
        // The kernel sends a function's "unbind" before its "remove", and its
        // directory may be gone by the time it is read; VFIO's no-IOMMU mode makes
        // a group when a function binds and frees it on the unbind, with no event
        // but the function's. A function or group read again that is not there, or
        // a group named that was not there before, means listing after all.
        for (size_t i : reread) {
            unlistedHolds =
                unlistedHolds && fs.exists("bus/pci/devices/" + host.devices[i].address);
        }
        for (uint32_t id : groups) {
            unlistedHolds = unlistedHolds && fs.exists("kernel/iommu_groups/" + std::to_string(id));
        }
        if (!unlistedHolds) {
            HostChanges listing = changes;
            listing.pciAddedOrRemoved = true;
            return refresh(fs, previous, listing);
        }
    }
    for (size_t i = 0; i < p.groups.size(); ++i) {
        const auto& [id, name] = p.groups[i];
        auto it = oldGroups.find(id);
        if (it == oldGroups.end() || groups.count(id) != 0) {
            host.groups[i] = readGroup(fs, id, name);
        } else {
            host.groups[i] = *it->second;
            dropViabilityWarnings(host.groups[i]);
        }
    }
    std::sort(host.groups.begin(), host.groups.end(),
              [](const IommuGroup& a, const IommuGroup& b) { return a.id < b.id; });
    computeViability(host);
    // Queues and vDPA devices hang below PCI functions: those below a function that
    // changed are read again, the rest are kept; an event of their own reads them all.
    if (changes.queues) {
        discoverQueues(fs, host);
    } else if (!changes.pci.empty()) {
        discoverQueues(fs, host, &previous.queues, &affected);
    } else {
        host.queues = previous.queues;
    }
    if (changes.vdpa) {
        discoverVdpa(fs, host);
    } else if (!changes.pci.empty()) {
        discoverVdpa(fs, host, &previous.vdpa, &affected);
    } else {
        host.vdpa = previous.vdpa;
    }
    cleanText(host);
    return host;
}

Host discover(const SysfsFactory& makeSysfs, unsigned threads) {
    auto fs = makeSysfs();
    Host host;
    discoverUnits(*fs, host);
    ScanPlan p = plan(*fs, host);
    const size_t total = p.groups.size() + p.devices.size();
    // Readers take chunks off a shared counter; each writes only its own slots.
    constexpr size_t kChunk = 64;
    std::atomic<size_t> next{0};
    auto work = [&p, &host, &next, total](const ports::Sysfs& reader) {
        for (;;) {
            const size_t begin = next.fetch_add(kChunk);
            if (begin >= total) {
                return;
            }
            readItems(reader, p, host, begin, std::min(total, begin + kChunk));
        }
    };
    // Every thread is joined on every path; the first failure is rethrown after.
    std::vector<std::thread> helpers;
    std::vector<std::exception_ptr> failures(threads > 0 ? threads : 1);
    const unsigned extra = threads > 1 && total > kChunk ? threads - 1 : 0;
    for (unsigned t = 0; t < extra; ++t) {
        try {
            helpers.emplace_back([&work, &makeSysfs, &failures, t] {
                try {
                    auto reader = makeSysfs();
                    work(*reader);
                } catch (...) {
                    failures[t + 1] = std::current_exception();
                }
            });
            nameThread(helpers.back().native_handle(), "svad-scan");
        } catch (const std::system_error&) {
            break; // no more threads: the ones there (and this one) share the work
        }
    }
    try {
        work(*fs);
    } catch (...) {
        failures[0] = std::current_exception();
    }
    for (auto& t : helpers) {
        t.join();
    }
    for (const auto& f : failures) {
        if (f) {
            std::rethrow_exception(f);
        }
    }
    finish(*fs, host);
    return host;
}

} // namespace svad::core
