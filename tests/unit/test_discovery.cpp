// Discovery against an in-memory sysfs: every attribute is input.
#include "svad/core/discovery.h"
#include "svad/core/parse.h"
#include "svad/core/paths.h"
#include "svad/core/text.h"

#include <atomic>
#include <cstdio>
#include <gtest/gtest.h>
#include <map>
#include <set>

namespace svad::core {

// gtest's picture of a blocker in a failure message.
inline void PrintTo(const GroupBlocker& b, std::ostream* os) {
    *os << "{" << b.device << ", " << b.driver << "}";
}

namespace {

class FakeSysfs final : public ports::Sysfs {
public:
    void file(const std::string& path, const std::string& text) {
        files_[path] = std::vector<uint8_t>(text.begin(), text.end());
        addParents(path);
    }
    void binary(const std::string& path, std::vector<uint8_t> bytes) {
        files_[path] = std::move(bytes);
        addParents(path);
    }
    void link(const std::string& path, const std::string& target) {
        links_[path] = target;
        addParents(path);
    }
    void dir(const std::string& path) { addParents(path + "/."); }

    ports::Read<std::string> readText(const std::string& path) const override {
        auto it = files_.find(path);
        if (it == files_.end()) {
            return std::nullopt;
        }
        std::string s(it->second.begin(), it->second.end());
        while (!s.empty() && s.back() == '\n') {
            s.pop_back();
        }
        return s;
    }
    ports::Read<std::vector<uint8_t>> readBinary(const std::string& path,
                                                 size_t maxBytes) const override {
        auto it = files_.find(path);
        if (it == files_.end()) {
            return std::nullopt;
        }
        auto v = it->second;
        if (v.size() > maxBytes) {
            v.resize(maxBytes);
        }
        return v;
    }
    std::optional<std::vector<std::string>> list(const std::string& path) const override {
        auto it = dirs_.find(path);
        if (it == dirs_.end()) {
            return std::nullopt;
        }
        return std::vector<std::string>(it->second.begin(), it->second.end());
    }
    std::optional<std::string> readLink(const std::string& path) const override {
        auto it = links_.find(path);
        return it == links_.end() ? std::nullopt : std::optional(it->second);
    }
    bool exists(const std::string& path) const override {
        return files_.count(path) != 0 || links_.count(path) != 0 || dirs_.count(path) != 0;
    }

private:
    void addParents(const std::string& path) {
        std::string p = path;
        for (auto pos = p.rfind('/'); pos != std::string::npos; pos = p.rfind('/')) {
            std::string parent = p.substr(0, pos);
            std::string name = p.substr(pos + 1);
            if (name != ".") {
                dirs_[parent].insert(name);
            } else {
                dirs_[parent];
            }
            p = parent;
        }
    }
    std::map<std::string, std::vector<uint8_t>> files_;
    std::map<std::string, std::string> links_;
    std::map<std::string, std::set<std::string>> dirs_;
};

// A minimal config space: ids, status with a capability list holding PCI
// Express, cut to `size` bytes (a short one keeps the pointer to what it lost).
std::vector<uint8_t> config(uint16_t vendor, uint16_t device, size_t size = 4096) {
    std::vector<uint8_t> c(4096, 0);
    c[0] = vendor & 0xff;
    c[1] = vendor >> 8;
    c[2] = device & 0xff;
    c[3] = device >> 8;
    c[6] = 0x10; // capability list
    c[0x34] = 0x40;
    c[0x40] = 0x10; // PCI Express
    c.resize(size);
    return c;
}

void addDevice(FakeSysfs& fs, const std::string& bdf, const std::string& driver, int group) {
    const std::string d = "bus/pci/devices/" + bdf;
    fs.file(d + "/vendor", "0x8086\n");
    fs.file(d + "/device", "0x0b25\n");
    fs.file(d + "/class", "0x088000\n");
    fs.file(d + "/numa_node", "1\n");
    fs.file(d + "/driver_override", "(null)\n");
    fs.binary(d + "/config", config(0x8086, 0x0b25));
    if (!driver.empty()) {
        fs.link(d + "/driver", "../../../bus/pci/drivers/" + driver);
    }
    if (group >= 0) {
        fs.link(d + "/iommu_group", "../../../kernel/iommu_groups/" + std::to_string(group));
        fs.link("kernel/iommu_groups/" + std::to_string(group) + "/devices/" + bdf,
                "../../../../devices/pci0000:00/" + bdf);
        fs.file("kernel/iommu_groups/" + std::to_string(group) + "/type", "DMA\n");
    }
}

const PciDevice& find(const Host& h, const std::string& a) {
    for (const auto& d : h.devices) {
        if (d.address == a) {
            return d;
        }
    }
    throw std::runtime_error("no device " + a);
}

bool anyContains(const std::vector<std::string>& v, const std::string& needle) {
    for (const auto& s : v) {
        if (s.find(needle) != std::string::npos) {
            return true;
        }
    }
    return false;
}

TEST(Parse, Numbers) {
    EXPECT_EQ(parseHex("0x8086"), 0x8086U);
    EXPECT_EQ(parseHex("d2008c40660462"), 0xd2008c40660462ULL);
    EXPECT_EQ(parseHex(" 0x10\n"), 0x10U);
    EXPECT_FALSE(parseHex("0xzz"));
    EXPECT_FALSE(parseHex(""));
    EXPECT_FALSE(parseHex("0x"));
    EXPECT_FALSE(parseHex("12 34"));
    EXPECT_FALSE(parseHex("0x10000000000000000")); // overflow
    EXPECT_EQ(parseDec("-1"), -1);
    EXPECT_FALSE(parseDec("1.5"));
}

TEST(Parse, PciAddressesAndPaths) {
    EXPECT_TRUE(isPciAddress("0000:6a:01.0"));
    EXPECT_FALSE(isPciAddress("0000:6a:20.0")); // device > 0x1f
    EXPECT_FALSE(isPciAddress("0000:6a:01.8"));
    EXPECT_FALSE(isPciAddress("6a:01.0"));
    EXPECT_FALSE(isPciAddress("0000:6g:01.0"));
    EXPECT_EQ(devicePath("0000:6a:01.0"), "/org/svad/Svad1/device/0000_6a_01_0");
    EXPECT_EQ(queuePath("wq0.1"), "/org/svad/Svad1/queue/wq0_2e1");
    EXPECT_EQ(vdpaPath("my-vdpa"), "/org/svad/Svad1/vdpa/my_2dvdpa");
    EXPECT_EQ(pathLabel(""), "_");
    EXPECT_EQ(baseName("../../bus/pci/drivers/vfio-pci"), "vfio-pci");
}

TEST(Discovery, LabelsReadBackAsTheirNames) {
    for (const char* name : {"0000:6a:01.0", "ffff:ff:1f.7", "wq0.1", "my-vdpa", "dmar0", "a_b",
                             "_", "x y\tz", "0000_6a_01_0", "", "\xc3\xa9t\xc3\xa9"}) {
        EXPECT_EQ(labelName(pathLabel(name)), name) << pathLabel(name);
    }
    // What pathLabel cannot have made comes back unchanged.
    EXPECT_EQ(labelName("wq_2"), "wq_2");
    EXPECT_EQ(labelName("wq_zz1"), "wq_zz1");
    EXPECT_EQ(labelName("0000_6a_20_0"), "0000_6a_20_0") << "device 0x20 is no PCI address";
}

TEST(Discovery, ReadsADevice) {
    FakeSysfs fs;
    addDevice(fs, "0000:6a:01.0", "idxd", 5);
    fs.dir("bus/pci/devices/0000:6a:01.0/vfio-dev/vfio7");
    Host h = discover(fs);
    ASSERT_EQ(h.devices.size(), 1U);
    const auto& d = h.devices[0];
    EXPECT_EQ(d.vendor, 0x8086);
    EXPECT_EQ(d.device, 0x0b25);
    EXPECT_EQ(d.classCode, 0x088000U);
    EXPECT_EQ(d.driver, "idxd");
    EXPECT_EQ(d.driverOverride, "");
    EXPECT_EQ(d.numaNode, 1);
    EXPECT_EQ(d.group, 5U);
    EXPECT_EQ(d.vfioDevice, "vfio7");
    EXPECT_EQ(d.configSize, 4096U);
    EXPECT_TRUE(d.caps.express);
    EXPECT_TRUE(d.warnings.empty()) << d.warnings[0];
}

TEST(Discovery, GarbageAndMissingAttributesAreWarnings) {
    FakeSysfs fs;
    addDevice(fs, "0000:00:02.0", "", -1);
    fs.file("bus/pci/devices/0000:00:02.0/vendor", "banana\n");
    fs.file("bus/pci/devices/0000:00:02.0/numa_node", "-7\n");
    fs.file("bus/pci/devices/0000:00:02.0/class", "0x1000000\n"); // > 24 bits
    fs.file("bus/pci/devices/0000:00:02.0/device", "");
    fs.dir("bus/pci/devices/not-a-bdf");
    Host h = discover(fs);
    ASSERT_EQ(h.devices.size(), 1U);
    const auto& w = h.devices[0].warnings;
    EXPECT_TRUE(anyContains(w, "vendor: not a hexadecimal number: 'banana'"));
    EXPECT_TRUE(anyContains(w, "numa_node: value out of range"));
    EXPECT_TRUE(anyContains(w, "class: value out of range"));
    EXPECT_TRUE(anyContains(w, "device: not a hexadecimal number"));
    EXPECT_EQ(h.devices[0].vendor, 0);
    EXPECT_EQ(h.devices[0].numaNode, -1);
    EXPECT_TRUE(anyContains(h.warnings, "not-a-bdf"));
}

TEST(Discovery, MissingConfigAndShortConfig) {
    FakeSysfs fs;
    addDevice(fs, "0000:00:03.0", "", -1);
    addDevice(fs, "0000:00:04.0", "", -1);
    fs.binary("bus/pci/devices/0000:00:03.0/config", config(0x8086, 0x0b25, 64));
    Host h = discover(fs);
    const auto& shortCfg = find(h, "0000:00:03.0");
    EXPECT_EQ(shortCfg.configSize, 64U);
    EXPECT_TRUE(anyContains(shortCfg.warnings, "config: "));
    EXPECT_TRUE(find(h, "0000:00:04.0").warnings.empty());
}

TEST(Discovery, GroupViabilityAndReservedRegions) {
    FakeSysfs fs;
    addDevice(fs, "0000:00:1f.0", "lpc_ich", 9);
    addDevice(fs, "0000:00:1f.3", "vfio-pci", 9);
    addDevice(fs, "0000:01:00.0", "vfio-pci", 10);
    addDevice(fs, "0000:02:00.0", "", 11);
    addDevice(fs, "0000:00:1c.0", "pcieport", 10); // a bridge keeps its group viable
    auto bridge = config(0x8086, 0x7ab8);
    bridge[0x0e] = 0x81; // multi-function type-1 header
    fs.binary("bus/pci/devices/0000:00:1c.0/config", bridge);
    fs.file("kernel/iommu_groups/9/reserved_regions",
            "0x00000000fee00000 0x00000000feefffff msi\nrubbish\n0x10 0x5 direct\n");
    fs.file("kernel/iommu_groups/11/type", "identity\n");
    Host h = discover(fs);
    ASSERT_EQ(h.groups.size(), 3U);
    const auto& g9 = h.groups[0];
    EXPECT_EQ(g9.id, 9U);
    EXPECT_FALSE(g9.viable);
    ASSERT_EQ(g9.blockers.size(), 1U);
    EXPECT_EQ(g9.blockers[0], (GroupBlocker{"0000:00:1f.0", "lpc_ich"}));
    EXPECT_EQ(blockerText(g9.blockers[0]), "0000:00:1f.0 is bound to lpc_ich");
    ASSERT_EQ(g9.reservedRegions.size(), 1U);
    EXPECT_EQ(g9.reservedRegions[0].type, "msi");
    EXPECT_EQ(g9.warnings.size(), 2U); // "rubbish" and the backwards range
    EXPECT_TRUE(h.groups[1].viable);
    EXPECT_TRUE(h.groups[2].viable);
    EXPECT_EQ(h.groups[2].type, GroupType::Identity);
}

// The blockers are data: each member's address and driver, apart, in the
// group's order; members on vfio-pci or pci-stub, unbound ones and bridges
// are none of them.
TEST(Discovery, BlockersNameEachMemberAndItsDriver) {
    FakeSysfs fs;
    addDevice(fs, "0000:17:00.0", "vfio-pci", 3);
    addDevice(fs, "0000:17:00.1", "snd_hda_intel", 3);
    addDevice(fs, "0000:17:00.2", "", 3);
    addDevice(fs, "0000:17:00.3", "pci-stub", 3);
    addDevice(fs, "0000:17:00.4", "xhci_hcd", 3);
    Host h = discover(fs);
    ASSERT_EQ(h.groups.size(), 1U);
    const IommuGroup& g = h.groups[0];
    EXPECT_FALSE(g.viable);
    const std::vector<GroupBlocker> want = {{"0000:17:00.1", "snd_hda_intel"},
                                            {"0000:17:00.4", "xhci_hcd"}};
    EXPECT_EQ(g.blockers, want);
    ASSERT_EQ(g.blockers.size(), 2U);
    EXPECT_EQ(blockerText(g.blockers[1]), "0000:17:00.4 is bound to xhci_hcd");
}

TEST(Discovery, SriovLinks) {
    FakeSysfs fs;
    addDevice(fs, "0000:3b:00.0", "ice", -1);
    addDevice(fs, "0000:3b:01.0", "iavf", -1);
    addDevice(fs, "0000:3b:01.1", "iavf", -1);
    const std::string pf = "bus/pci/devices/0000:3b:00.0";
    fs.file(pf + "/sriov_totalvfs", "64\n");
    fs.file(pf + "/sriov_numvfs", "2\n");
    fs.link(pf + "/virtfn1", "../0000:3b:01.1");
    fs.link(pf + "/virtfn0", "../0000:3b:01.0");
    fs.link(pf + "/virtfn10", "../garbage");
    fs.link("bus/pci/devices/0000:3b:01.0/physfn", "../0000:3b:00.0");
    Host h = discover(fs);
    const auto& p = find(h, "0000:3b:00.0");
    EXPECT_EQ(p.sriovTotalVfs, 64U);
    EXPECT_EQ(p.sriovNumVfs, 2U);
    ASSERT_EQ(p.virtfns.size(), 2U);
    EXPECT_EQ(p.virtfns[0], "0000:3b:01.0");
    EXPECT_EQ(p.virtfns[1], "0000:3b:01.1");
    EXPECT_TRUE(anyContains(p.warnings, "virtfn10"));
    EXPECT_EQ(find(h, "0000:3b:01.0").physfn, "0000:3b:00.0");
}

TEST(Discovery, VtdUnitsQueuesAndVdpa) {
    FakeSysfs fs;
    addDevice(fs, "0000:6a:01.0", "idxd", 1);
    fs.file("class/iommu/dmar0/intel-iommu/cap", "d2008c40660462\n");
    fs.file("class/iommu/dmar0/intel-iommu/ecap", "zz\n");
    fs.link("class/iommu/dmar0/devices/0000:6a:01.0", "../../../../pci0000:6a/0000:6a:01.0");
    const std::string wq = "bus/dsa/devices/wq0.1";
    fs.link(wq, "../../../devices/pci0000:6a/0000:6a:01.0/dsa0/wq0.1");
    fs.file(wq + "/mode", "shared\n");
    fs.file(wq + "/type", "user\n");
    fs.file(wq + "/state", "enabled\n");
    fs.file(wq + "/size", "-3\n");
    fs.link("bus/dsa/devices/dsa0", "../../../devices/pci0000:6a/0000:6a:01.0/dsa0");
    fs.link("bus/dsa/devices/engine0.0", "../../../devices/pci0000:6a/0000:6a:01.0/dsa0/e");
    fs.link("bus/vdpa/devices/vdpa0", "../../../devices/pci0000:3b/0000:3b:00.2/vdpa0");
    fs.link("bus/vdpa/devices/vdpa0/driver", "../../../../bus/vdpa/drivers/vhost_vdpa");
    fs.dir("bus/vdpa/devices/vdpa0/vhost-vdpa-0");
    fs.link("bus/vdpa/devices/sim1", "../../../devices/vdpasim_net/sim1");
    fs.link("bus/vdpa/devices/sim1/driver", "../../../../bus/vdpa/drivers/vhost_vdpa");
    Host h = discover(fs);

    ASSERT_EQ(h.units.size(), 1U);
    EXPECT_EQ(h.units[0].kind, UnitKind::IntelVtd);
    EXPECT_FALSE(h.units[0].vtd.has_value()); // ecap is garbage
    EXPECT_TRUE(anyContains(h.units[0].warnings, "intel-iommu/ecap"));
    ASSERT_EQ(h.units[0].devices.size(), 1U);

    ASSERT_EQ(h.queues.size(), 1U);
    const auto& q = h.queues[0];
    EXPECT_EQ(q.parentDevice, "0000:6a:01.0");
    EXPECT_EQ(q.idxdDevice, "dsa0");
    EXPECT_EQ(q.mode, QueueMode::Shared);
    EXPECT_EQ(q.type, QueueType::User);
    EXPECT_EQ(q.state, QueueState::Enabled);
    EXPECT_EQ(q.charDevice, "dsa/wq0.1");
    EXPECT_EQ(q.size, 0U);
    EXPECT_TRUE(anyContains(q.warnings, "size"));

    ASSERT_EQ(h.vdpa.size(), 2U);
    EXPECT_EQ(h.vdpa[1].name, "vdpa0");
    EXPECT_EQ(h.vdpa[1].parentDevice, "0000:3b:00.2");
    EXPECT_EQ(h.vdpa[1].mgmtdev, "pci/0000:3b:00.2");
    EXPECT_EQ(h.vdpa[1].vhostDevice, "vhost-vdpa-0");
    EXPECT_EQ(h.vdpa[0].mgmtdev, "vdpasim_net");
    EXPECT_TRUE(anyContains(h.vdpa[0].warnings, "vhost-vdpa"));
}

TEST(Discovery, VdpaDeviceWithoutAParent) {
    // vdpa_sim's devices sit right under /sys/devices: no management device
    // can be told from sysfs, and "devices" is not one.
    FakeSysfs fs;
    fs.link("bus/vdpa/devices/vdpa0", "../../../devices/vdpa0");
    fs.link("bus/vdpa/devices/vdpa0/driver", "../../../../bus/vdpa/drivers/vhost_vdpa");
    fs.dir("bus/vdpa/devices/vdpa0/vhost-vdpa-0");
    Host h = discover(fs);
    ASSERT_EQ(h.vdpa.size(), 1U);
    EXPECT_EQ(h.vdpa[0].mgmtdev, "");
    EXPECT_EQ(h.vdpa[0].parentDevice, "");
    EXPECT_EQ(h.vdpa[0].driver, "vhost_vdpa");
    EXPECT_EQ(h.vdpa[0].vhostDevice, "vhost-vdpa-0");
    EXPECT_TRUE(h.vdpa[0].warnings.empty());
}

TEST(Discovery, ParallelReadersFindTheSameHost) {
    FakeSysfs fs;
    for (int i = 0; i < 300; ++i) {
        char bdf[16];
        (void)std::snprintf(bdf, sizeof bdf, "0000:%02x:%02x.%d", i / 32, i % 32, 0);
        addDevice(fs, bdf, i % 3 == 0 ? "vfio-pci" : "idxd", i / 2);
    }
    fs.file("bus/pci/devices/0000:00:05.0/vendor", "garbage\n");
    const Host serial = discover(fs);
    // A reader that shares the fake (its reads are const and thread-safe).
    struct View final : ports::Sysfs {
        explicit View(const FakeSysfs& f) : f_(f) {}
        ports::Read<std::string> readText(const std::string& p) const override {
            return f_.readText(p);
        }
        ports::Read<std::vector<uint8_t>> readBinary(const std::string& p,
                                                     size_t n) const override {
            return f_.readBinary(p, n);
        }
        std::optional<std::vector<std::string>> list(const std::string& p) const override {
            return f_.list(p);
        }
        std::optional<std::string> readLink(const std::string& p) const override {
            return f_.readLink(p);
        }
        bool exists(const std::string& p) const override { return f_.exists(p); }
        const FakeSysfs& f_;
    };
    std::atomic<int> made{0};
    const Host parallel = discover(
        [&fs, &made]() -> std::unique_ptr<ports::Sysfs> {
            ++made;
            return std::make_unique<View>(fs);
        },
        3);
    EXPECT_EQ(made, 3);
    ASSERT_EQ(parallel.devices.size(), 300U);
    EXPECT_TRUE(parallel.devices == serial.devices);
    EXPECT_TRUE(parallel.groups == serial.groups);
    EXPECT_TRUE(parallel.warnings == serial.warnings);
    EXPECT_FALSE(find(parallel, "0000:00:05.0").warnings.empty());
}

TEST(Discovery, TextInTheModelIsValidUtf8) {
    FakeSysfs fs;
    addDevice(fs, "0000:00:01.0", "dr\xffiver", 1);
    const std::string d = "bus/pci/devices/0000:00:01.0";
    fs.file(d + "/driver_override", "over\xc3\n");
    // A multibyte character across the 32 bytes a warning quotes.
    fs.file(d + "/numa_node", std::string(31, '1') + "\xe2\x82\xac\n");
    fs.file("kernel/iommu_groups/1/type", "DMA\xed\xa0\x80\n");
    fs.file("kernel/iommu_groups/1/reserved_regions",
            "0x1 0x2 ms\xffi\n" + std::string(63, 'z') + "\xc3\xa9\n");
    fs.dir("kernel/iommu_groups/7\xff");
    fs.dir("class/iommu/dm\xef\xbf\xbf"
           "ar0");
    fs.file("bus/dsa/devices/wq0.0/name", "app\xc0\xaf\n");
    fs.file("bus/dsa/devices/wq0.0/mode", "dedicated\n");
    fs.link("bus/vdpa/devices/vdpa\x80", "../../../devices/vdpasim_net/vdpa\x80");
    const Host h = discover(fs);

    const auto& dev = find(h, "0000:00:01.0");
    EXPECT_EQ(dev.driver, "dr\\xffiver");
    EXPECT_EQ(dev.driverOverride, "over\\xc3");
    EXPECT_TRUE(anyContains(dev.warnings, "numa_node: not a decimal number: '" +
                                              std::string(31, '1') + "\u2026(34 bytes)'"));
    ASSERT_EQ(h.groups.size(), 1U);
    EXPECT_EQ(h.groups[0].typeName, "DMA\\xed\\xa0\\x80");
    ASSERT_EQ(h.groups[0].reservedRegions.size(), 1U);
    EXPECT_EQ(h.groups[0].reservedRegions[0].type, "ms\\xffi");
    EXPECT_TRUE(anyContains(h.groups[0].warnings, std::string(63, 'z') + "\u2026(65 bytes)"));
    EXPECT_TRUE(anyContains(h.warnings, "kernel/iommu_groups/7\\xff: not a group number"));
    ASSERT_EQ(h.units.size(), 1U);
    EXPECT_EQ(h.units[0].name, "dm\\xef\\xbf\\xbfar0");
    ASSERT_EQ(h.queues.size(), 1U);
    EXPECT_EQ(h.queues[0].wqName, "app\\xc0\\xaf");
    ASSERT_EQ(h.vdpa.size(), 1U);
    EXPECT_EQ(h.vdpa[0].name, "vdpa\\x80");

    // Every string and warning of the host, checked as sd-bus would.
    std::vector<std::string> all = h.warnings;
    auto add = [&all](const std::vector<std::string>& v) {
        all.insert(all.end(), v.begin(), v.end());
    };
    for (const auto& u : h.units) {
        all.push_back(u.name);
        all.push_back(u.version);
        add(u.warnings);
    }
    for (const auto& g : h.groups) {
        all.push_back(g.typeName);
        add(g.warnings);
        for (const auto& b : g.blockers) {
            all.push_back(b.device);
            all.push_back(b.driver);
        }
    }
    for (const auto& x : h.devices) {
        all.push_back(x.driver);
        all.push_back(x.driverOverride);
        add(x.warnings);
    }
    for (const auto& q : h.queues) {
        all.push_back(q.wqName);
        add(q.warnings);
    }
    for (const auto& v : h.vdpa) {
        all.push_back(v.name);
        all.push_back(v.mgmtdev);
        add(v.warnings);
    }
    for (const auto& s : all) {
        EXPECT_TRUE(validUtf8(s)) << s;
    }
}

TEST(Discovery, ARefreshKeepsTheModelValidUtf8) {
    FakeSysfs fs;
    addDevice(fs, "0000:00:01.0", "vfio-pci", 1);
    const Host before = discover(fs);
    fs.link("bus/pci/devices/0000:00:01.0/driver", "../../../bus/pci/drivers/idxd\xff");
    fs.file("kernel/iommu_groups/1/type", "DMA\xc3\n");
    HostChanges changes;
    changes.pci.insert("0000:00:01.0");
    const Host after = refresh(fs, before, changes);
    EXPECT_EQ(find(after, "0000:00:01.0").driver, "idxd\\xff");
    ASSERT_EQ(after.groups.size(), 1U);
    EXPECT_EQ(after.groups[0].typeName, "DMA\\xc3");
    ASSERT_EQ(after.groups[0].blockers.size(), 1U);
    EXPECT_EQ(after.groups[0].blockers[0].driver, "idxd\\xff");
    EXPECT_TRUE(validUtf8(blockerText(after.groups[0].blockers[0])));
}

TEST(Discovery, AGroupSpelledTwiceIsOneGroup) {
    FakeSysfs fs;
    addDevice(fs, "0000:00:01.0", "vfio-pci", 30);
    fs.file("kernel/iommu_groups/030/type", "DMA\n");
    fs.file("kernel/iommu_groups/+5/type", "DMA\n");
    const Host h = discover(fs);
    ASSERT_EQ(h.groups.size(), 1U);
    EXPECT_EQ(h.groups[0].id, 30U);
    EXPECT_EQ(h.groups[0].devices.size(), 1U);
    EXPECT_TRUE(
        anyContains(h.warnings, "kernel/iommu_groups/030: not how the kernel names group 30"));
}

TEST(Discovery, WarningsPerObjectAreCapped) {
    FakeSysfs fs;
    addDevice(fs, "0000:00:01.0", "vfio-pci", 1);
    std::string garbage;
    for (int i = 0; i < 5000; ++i) {
        garbage += "junk line " + std::to_string(i) + "\n";
    }
    fs.file("kernel/iommu_groups/1/reserved_regions", garbage);
    const Host h = discover(fs);
    ASSERT_EQ(h.groups.size(), 1U);
    const auto& w = h.groups[0].warnings;
    EXPECT_LE(w.size(), 16U);
    EXPECT_EQ(w.back(), "4985 more warnings not shown");
}

TEST(Discovery, EmptyHost) {
    FakeSysfs fs;
    Host h = discover(fs);
    EXPECT_TRUE(h.devices.empty());
    EXPECT_TRUE(anyContains(h.warnings, "bus/pci/devices"));
}

} // namespace
} // namespace svad::core
