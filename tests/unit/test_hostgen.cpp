// The host generator: YAML loading and its errors, synthetic config spaces,
// the written tree, synthetic hosts and pciutils dumps.
#include "svad/hostgen/hostgen.h"

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <gtest/gtest.h>
#include <map>
#include <set>
#include <sstream>
#include <unistd.h>

namespace fs = std::filesystem;
using namespace svad::hostgen;

namespace {

// A fresh directory under the temp dir, removed afterwards.
class TempDir {
public:
    TempDir() {
        std::string tmpl = (fs::temp_directory_path() / "svad-hostgen-test-XXXXXX").string();
        if (::mkdtemp(tmpl.data()) == nullptr) {
            throw std::runtime_error("mkdtemp failed");
        }
        path_ = tmpl;
    }
    ~TempDir() {
        std::error_code ec;
        fs::remove_all(path_, ec);
    }
    const fs::path& path() const { return path_; }

private:
    fs::path path_;
};

std::string slurp(const fs::path& p) {
    std::ifstream in(p, std::ios::binary);
    std::ostringstream s;
    s << in.rdbuf();
    return s.str();
}

// Loads `yaml` from a file; returns the error text ("" if it loaded).
std::string loadError(const std::string& yaml, std::string* file = nullptr) {
    static TempDir dir;
    static int n = 0;
    const fs::path p = dir.path() / ("host" + std::to_string(n++) + ".yaml");
    std::ofstream(p) << yaml;
    if (file) {
        *file = p.string();
    }
    try {
        loadHostYaml(p.string());
    } catch (const HostgenError& e) {
        return e.what();
    }
    return "";
}

HostSpec loadText(const std::string& yaml) {
    static TempDir dir;
    static int n = 0;
    const fs::path p = dir.path() / ("ok" + std::to_string(n++) + ".yaml");
    std::ofstream(p) << yaml;
    return loadHostYaml(p.string());
}

const char* kMinimal = R"(name: mini
units:
  - {name: dmar0, cap: 0x19ed008c40780c66, ecap: 0x0003ef9a24f050df}
groups:
  - {id: 3, type: DMA, reserved_regions: ["0x00000000fee00000 0x00000000feefffff msi"]}
devices:
  - address: 0000:6a:01.0
    vendor: 0x8086
    device: 0x0b25
    class: 0x088000
    group: 3
    iommu: dmar0
)";

uint16_t rd16(const std::vector<uint8_t>& c, size_t o) {
    return static_cast<uint16_t>(c.at(o) | c.at(o + 1) << 8);
}
uint32_t rd32(const std::vector<uint8_t>& c, size_t o) {
    return rd16(c, o) | static_cast<uint32_t>(rd16(c, o + 2)) << 16;
}

// The standard capability list: id -> offset.
std::map<uint8_t, uint16_t> standardCaps(const std::vector<uint8_t>& c) {
    std::map<uint8_t, uint16_t> out;
    if (!(rd16(c, 0x06) & 0x10)) {
        return out;
    }
    uint16_t p = c.at(0x34) & 0xfc;
    for (int guard = 0; p != 0 && guard < 48; ++guard) {
        out.emplace(c.at(p), p);
        p = c.at(p + 1) & 0xfc;
    }
    return out;
}

// The extended chain in order: (id, offset).
std::vector<std::pair<uint16_t, uint16_t>> extendedCaps(const std::vector<uint8_t>& c) {
    std::vector<std::pair<uint16_t, uint16_t>> out;
    if (c.size() < 4096) {
        return out;
    }
    uint16_t p = 0x100;
    for (int guard = 0; p != 0 && guard < 960; ++guard) {
        const uint32_t h = rd32(c, p);
        if (h == 0) {
            break;
        }
        out.emplace_back(static_cast<uint16_t>(h & 0xffff), p);
        p = static_cast<uint16_t>((h >> 20) & 0xffc);
    }
    return out;
}

uint16_t extAt(const std::vector<uint8_t>& c, uint16_t id) {
    for (auto [i, o] : extendedCaps(c)) {
        if (i == id) {
            return o;
        }
    }
    return 0;
}

std::string link(const fs::path& p) {
    return fs::read_symlink(p).string();
}

// True if `p` is a link whose target resolves to the directory `target`.
bool linksTo(const fs::path& p, const fs::path& target) {
    return fs::is_symlink(p) && fs::equivalent(fs::canonical(p), target);
}

} // namespace

// ---- YAML --------------------------------------------------------------------

TEST(HostgenYaml, LoadsMinimalHostWithHexAndDecimalNumbers) {
    auto h = loadText(kMinimal);
    ASSERT_EQ(h.devices.size(), 1u);
    EXPECT_EQ(h.name, "mini");
    EXPECT_EQ(h.units.at(0).cap, 0x19ed008c40780c66ULL);
    EXPECT_EQ(h.units.at(0).ecap, 0x0003ef9a24f050dfULL);
    EXPECT_EQ(h.units.at(0).version, "6:0");
    EXPECT_EQ(h.devices[0].vendor, 0x8086);
    EXPECT_EQ(h.devices[0].classCode, 0x088000u);
    EXPECT_EQ(h.devices[0].group, 3u);
    EXPECT_EQ(h.groups.at(0).reservedRegions.at(0), "0x00000000fee00000 0x00000000feefffff msi");

    std::string y = kMinimal;
    y.replace(y.find("0x8086"), 6, "32902");
    EXPECT_EQ(loadText(y).devices[0].vendor, 0x8086);
    y.replace(y.find("0000:6a:01.0"), 12, "0000:6A:01.0"); // normalized to lower case
    EXPECT_EQ(loadText(y).devices[0].address, "0000:6a:01.0");
}

TEST(HostgenYaml, UnknownKeyIsRejectedWithLineAndColumn) {
    std::string file;
    std::string y = kMinimal;
    y += "    colour: blue\n"; // line 13, column 5
    auto err = loadError(y, &file);
    EXPECT_NE(err.find(file + ":13:5: unknown key 'colour' in device"), std::string::npos) << err;
    EXPECT_NE(err.find("expected one of: address, vendor"), std::string::npos) << err;

    err = loadError("hosts: []\n", &file);
    EXPECT_NE(err.find(file + ":1:1: unknown key 'hosts'"), std::string::npos) << err;
}

TEST(HostgenYaml, BadValuesNameLineColumnAndExpectation) {
    std::string file;
    std::string y = kMinimal;
    y.replace(y.find("0x8086"), 6, "0x18086"); // line 8, column 13
    auto err = loadError(y, &file);
    EXPECT_NE(err.find(file + ":8:13: expected a 16-bit vendor id"), std::string::npos) << err;

    y = kMinimal;
    y.replace(y.find("0x8086"), 6, "intel");
    err = loadError(y);
    EXPECT_NE(err.find(":8:13: expected a 16-bit vendor id (a number 0..65535"), std::string::npos)
        << err;

    y = kMinimal;
    y.replace(y.find("0000:6a:01.0"), 12, "6a:01.0"); // line 7, column 14
    err = loadError(y, &file);
    EXPECT_NE(err.find(file + ":7:14: expected a PCI address DDDD:BB:DD.F"), std::string::npos)
        << err;

    y = kMinimal;
    y.replace(y.find("0000:6a:01.0"), 12, "0000:6a:20.0"); // device 0x20 > 0x1f
    EXPECT_NE(loadError(y).find(":7:14: expected a PCI address"), std::string::npos);

    err = loadError(std::string(kMinimal) + "    ats: maybe\n");
    EXPECT_NE(err.find(":13:10: expected true or false"), std::string::npos) << err;

    err = loadError("devices: {address: 1}\n");
    EXPECT_NE(err.find(":1:10: expected a list for devices"), std::string::npos) << err;

    err = loadError("devices:\n  - [address\n");
    EXPECT_NE(err.find("YAML syntax error"), std::string::npos) << err;
    EXPECT_NE(err.find(":3:"), std::string::npos) << err;

    err = loadError("");
    EXPECT_NE(err.find("empty host description"), std::string::npos) << err;

    err = loadError(std::string(kMinimal) + "    driver:\n");
    EXPECT_NE(err.find(":13:5: 'driver' has no value"), std::string::npos) << err;
}

TEST(HostgenYaml, ReferencesAndDuplicatesAreChecked) {
    std::string y = kMinimal;
    y.replace(y.find("group: 3"), 8, "group: 4"); // line 11, column 12
    auto err = loadError(y);
    EXPECT_NE(err.find(":11:12: device 0000:6a:01.0: IOMMU group 4 is not declared"),
              std::string::npos)
        << err;

    y = kMinimal;
    y.replace(y.find("iommu: dmar0"), 12, "iommu: dmar9"); // line 12, column 12
    err = loadError(y);
    EXPECT_NE(err.find(":12:12: device 0000:6a:01.0: IOMMU unit 'dmar9' is not declared"),
              std::string::npos)
        << err;

    y = std::string(kMinimal) + "  - {address: 0000:6a:01.0, device: 0x0cfe}\n"; // line 13
    err = loadError(y);
    EXPECT_NE(
        err.find(":13:15: PCI address 0000:6a:01.0 is used twice (devices[0] and devices[1])"),
        std::string::npos)
        << err;

    y = std::string(kMinimal) + "    queues: [{name: wq0.0}]\n";
    err = loadError(y);
    EXPECT_NE(err.find(":13:13: device 0000:6a:01.0: work queues need an idxd device"),
              std::string::npos)
        << err;

    y = std::string(kMinimal) + "    idxd: dsa0\n    queues: [{name: wq1.0}]\n";
    err = loadError(y);
    EXPECT_NE(err.find("'wq1.0' is not a work queue name wq0.N"), std::string::npos) << err;

    for (const char* w : {"0", "21"}) {
        y = std::string(kMinimal) + "    pasid: {width: " + w + "}\n";
        err = loadError(y);
        EXPECT_NE(err.find(":13:20: expected a PASID width in bits (a number 1..20"),
                  std::string::npos)
            << err;
    }
    EXPECT_EQ(loadText(std::string(kMinimal) + "    pasid: {width: 1}\n").devices[0].pasid->width,
              1u);

    y = kMinimal;
    y.replace(y.find("type: DMA"), 9, "type: DMA-XX");
    err = loadError(y);
    EXPECT_NE(err.find(":5:19: unknown group type 'DMA-XX'"), std::string::npos) << err;

    y = std::string(kMinimal) + "    pasid: {width: 20}\n    config_size: 256\n";
    err = loadError(y);
    EXPECT_NE(err.find("need config_size 4096"), std::string::npos) << err;

    y = std::string(kMinimal) + "    vfio: 2\n";
    err = loadError(y);
    EXPECT_NE(err.find("a VFIO cdev needs a VFIO driver"), std::string::npos) << err;

    err = loadError(std::string(kMinimal) + "    address: 0000:6a:02.0\n");
    EXPECT_NE(err.find(":13:5: duplicate key 'address' in device"), std::string::npos) << err;
}

TEST(HostgenYaml, SriovVfsMustFitAndNotCollide) {
    std::string y = std::string(kMinimal) +
                    "    sriov: {total_vfs: 4, num_vfs: 2, vf_device: 0x0b26, first_vf_offset: 1}\n"
                    "  - {address: 0000:6a:01.1, device: 0x0cfe}\n";
    auto err = loadError(y);
    EXPECT_NE(err.find(":13:12: PCI address 0000:6a:01.1 is used twice (devices[1] and VF 0 of "
                       "0000:6a:01.0)"),
              std::string::npos)
        << err;

    y = std::string(kMinimal) + "    sriov: {total_vfs: 4, num_vfs: 5, vf_device: 0x0b26}\n";
    EXPECT_NE(loadError(y).find("num_vfs 5 exceeds total_vfs 4"), std::string::npos);

    y = kMinimal;
    y.replace(y.find("0000:6a:01.0"), 12, "0000:ff:1f.0");
    y += "    sriov: {total_vfs: 4, num_vfs: 2, vf_device: 0x0b26}\n";
    EXPECT_NE(loadError(y).find("would lie past bus ff"), std::string::npos);
}

// ---- config space ----------------------------------------------------------

TEST(HostgenConfig, HeaderAndCapabilitiesWhereExpected) {
    DeviceSpec d;
    d.address = "0000:6a:01.0";
    d.vendor = 0x8086;
    d.device = 0x0b25;
    d.subsystemVendor = 0x8086;
    d.subsystemDevice = 0x1234;
    d.classCode = 0x088000;
    d.revision = 0x11;
    d.driver = "idxd";
    d.pasid = PasidSpec{20, false, true};
    d.ats = d.pri = d.acs = d.siov = true;
    d.sriov = SriovSpec{};
    d.sriov->totalVfs = 16;
    d.sriov->numVfs = 4;
    d.sriov->vfDevice = 0x0b26;
    const auto c = buildConfig(d);
    ASSERT_EQ(c.size(), 4096u);
    EXPECT_EQ(rd16(c, 0x00), 0x8086);
    EXPECT_EQ(rd16(c, 0x02), 0x0b25);
    EXPECT_TRUE(rd16(c, 0x06) & 0x10); // capabilities list
    EXPECT_EQ(c[0x08], 0x11);
    EXPECT_EQ(rd32(c, 0x08) >> 8, 0x088000u);
    EXPECT_EQ(c[0x0e] & 0x7f, 0); // type 0
    EXPECT_EQ(rd16(c, 0x2c), 0x8086);
    EXPECT_EQ(rd16(c, 0x2e), 0x1234);
    EXPECT_EQ(c[0x34], 0x40);

    auto std = standardCaps(c);
    ASSERT_EQ(std.count(0x10), 1u);
    EXPECT_EQ(std[0x10], 0x40);
    EXPECT_EQ(rd16(c, 0x42) & 0x0f, 2);        // PCIe capability version 2
    EXPECT_EQ((rd16(c, 0x42) >> 4) & 0x0f, 0); // endpoint
    EXPECT_EQ(std.count(0x11), 1u);            // MSI-X

    auto ext = extendedCaps(c);
    std::vector<uint16_t> ids;
    for (auto [id, off] : ext) {
        ids.push_back(id);
        EXPECT_EQ(off % 4, 0);
        EXPECT_GE(off, 0x100);
    }
    EXPECT_EQ(ids, (std::vector<uint16_t>{0x0d, 0x0f, 0x13, 0x1b, 0x10, 0x23}));
    EXPECT_EQ(ext.front().second, 0x100);

    const uint16_t pasid = extAt(c, 0x1b);
    const uint16_t pcap = rd16(c, pasid + 4);
    EXPECT_FALSE(pcap & 0x2);          // exec
    EXPECT_TRUE(pcap & 0x4);           // priv
    EXPECT_EQ((pcap >> 8) & 0x1f, 20); // width

    const uint16_t sriov = extAt(c, 0x10);
    EXPECT_EQ(rd16(c, sriov + 0x0c), 16); // initial VFs
    EXPECT_EQ(rd16(c, sriov + 0x0e), 16); // total VFs
    EXPECT_EQ(rd16(c, sriov + 0x10), 4);  // num VFs
    EXPECT_EQ(rd16(c, sriov + 0x14), 0x80);
    EXPECT_EQ(rd16(c, sriov + 0x16), 1);
    EXPECT_EQ(rd16(c, sriov + 0x1a), 0x0b26);

    const uint16_t dvsec = extAt(c, 0x23);
    EXPECT_EQ(rd16(c, dvsec + 4), 0x8086);
    EXPECT_EQ(rd16(c, dvsec + 8), 5);
    EXPECT_EQ(rd32(c, dvsec + 4) >> 20, 0x18u); // length

    const uint16_t acs = extAt(c, 0x0d);
    EXPECT_NE(rd16(c, acs + 4), 0);
}

TEST(HostgenConfig, OnlyRequestedCapsAndSizes) {
    DeviceSpec d;
    d.address = "0000:01:00.0";
    d.device = 0x1;
    d.pasid = PasidSpec{8, true, false};
    auto c = buildConfig(d);
    auto ext = extendedCaps(c);
    ASSERT_EQ(ext.size(), 1u);
    EXPECT_EQ(ext[0], (std::pair<uint16_t, uint16_t>{0x1b, 0x100}));
    EXPECT_EQ(rd16(c, 0x104), 0x0802); // exec, width 8

    DeviceSpec plain;
    plain.address = "0000:01:00.0";
    plain.device = 0x2;
    c = buildConfig(plain);
    EXPECT_TRUE(extendedCaps(c).empty());
    EXPECT_EQ(rd32(c, 0x100), 0u);

    plain.configSize = 256;
    c = buildConfig(plain);
    EXPECT_EQ(c.size(), 256u);
    EXPECT_EQ(standardCaps(c).count(0x10), 1u);

    plain.configSize = 64;
    c = buildConfig(plain);
    EXPECT_EQ(c.size(), 64u);
    EXPECT_FALSE(rd16(c, 0x06) & 0x10);

    plain.rawConfig = std::vector<uint8_t>{1, 2, 3};
    EXPECT_EQ(buildConfig(plain), (std::vector<uint8_t>{1, 2, 3}));
}

TEST(HostgenConfig, VfsHaveNoPasidOfTheirOwn) {
    HostSpec h;
    h.groups.push_back(GroupSpec{7, "DMA", {}});
    DeviceSpec pf;
    pf.address = "0000:3b:00.0";
    pf.vendor = 0x15b3;
    pf.device = 0x101d;
    pf.group = 7;
    pf.ats = pf.pri = true;
    pf.pasid = PasidSpec{};
    pf.sriov = SriovSpec{};
    pf.sriov->totalVfs = 8;
    pf.sriov->numVfs = 2;
    pf.sriov->vfDevice = 0x101e;
    pf.sriov->firstVfOffset = 2;
    h.devices.push_back(pf);
    const auto x = expandHost(h);
    ASSERT_EQ(x.devices.size(), 3u);
    const auto& vf = x.devices[1];
    EXPECT_EQ(vf.address, "0000:3b:00.2");
    EXPECT_EQ(x.devices[2].address, "0000:3b:00.3");
    EXPECT_EQ(vf.physfn, "0000:3b:00.0");
    EXPECT_EQ(vf.device, 0x101e);
    EXPECT_EQ(vf.vendor, 0x15b3);
    EXPECT_EQ(vf.group, 8u); // past the highest declared group
    EXPECT_EQ(x.devices[2].group, 9u);
    const auto c = buildConfig(vf);
    EXPECT_EQ(extAt(c, 0x1b), 0); // PASID: the PF's
    EXPECT_EQ(extAt(c, 0x13), 0); // PRI: the PF's
    EXPECT_EQ(extAt(c, 0x10), 0); // no SR-IOV on a VF
    EXPECT_NE(extAt(c, 0x0f), 0); // ATS of its own
    EXPECT_NE(extAt(buildConfig(x.devices[0]), 0x1b), 0);

    // Expanding again changes nothing.
    EXPECT_EQ(expandHost(x).devices.size(), 3u);
}

TEST(HostgenConfig, VfAddressesFollowTheRoutingIdRule) {
    SriovSpec s;
    s.firstVfOffset = 0x80;
    s.vfStride = 1;
    EXPECT_EQ(vfAddress("0000:17:00.0", s, 0), "0000:17:10.0");
    EXPECT_EQ(vfAddress("0000:17:00.0", s, 9), "0000:17:11.1");
    EXPECT_EQ(vfAddress("0000:17:00.0", s, 0x80), "0000:18:00.0"); // next bus
    s.vfStride = 2;
    EXPECT_EQ(vfAddress("0000:17:00.1", s, 3), "0000:17:10.7");
    EXPECT_EQ(vfAddress("0000:ff:1f.0", s, 0), std::nullopt);
}

// ---- the tree ----------------------------------------------------------------

TEST(HostgenTree, WritesLinksAndAttributes) {
    const auto host = loadHostYaml(SVAD_SOURCE_DIR "/config/hosts/sample-spr.yaml");
    TempDir t;
    const fs::path root = t.path() / "host";
    writeTree(host, root.string());
    const fs::path sys = root / "sys";

    // A function and its attributes.
    const fs::path dsa = sys / "devices/pci0000:6a/0000:6a:01.0";
    ASSERT_TRUE(fs::is_directory(dsa));
    EXPECT_EQ(slurp(dsa / "vendor"), "0x8086\n");
    EXPECT_EQ(slurp(dsa / "device"), "0x0b25\n");
    EXPECT_EQ(slurp(dsa / "class"), "0x088000\n");
    EXPECT_EQ(slurp(dsa / "revision"), "0x01\n");
    EXPECT_EQ(slurp(dsa / "numa_node"), "0\n");
    EXPECT_EQ(slurp(dsa / "driver_override"), "(null)\n");
    EXPECT_TRUE(fs::exists(dsa / "irq"));
    EXPECT_TRUE(fs::exists(dsa / "resource"));
    EXPECT_EQ(fs::file_size(dsa / "config"), 4096u);
    EXPECT_EQ(link(dsa / "driver"), "../../../bus/pci/drivers/idxd");
    EXPECT_TRUE(linksTo(dsa / "driver", sys / "bus/pci/drivers/idxd"));
    EXPECT_EQ(link(dsa / "iommu_group"), "../../../kernel/iommu_groups/10");
    EXPECT_TRUE(linksTo(dsa / "iommu_group", sys / "kernel/iommu_groups/10"));
    EXPECT_EQ(link(dsa / "iommu"), "../../virtual/iommu/dmar1");
    EXPECT_TRUE(linksTo(dsa / "iommu", sys / "devices/virtual/iommu/dmar1"));
    EXPECT_EQ(link(sys / "bus/pci/devices/0000:6a:01.0"),
              "../../../devices/pci0000:6a/0000:6a:01.0");
    EXPECT_TRUE(linksTo(sys / "bus/pci/devices/0000:6a:01.0", dsa));

    // Units, groups.
    EXPECT_EQ(slurp(sys / "class/iommu/dmar1/intel-iommu/ecap"), "3ef9a24f050df\n");
    EXPECT_EQ(slurp(sys / "class/iommu/dmar1/intel-iommu/cap"), "19ed008c40780c66\n");
    EXPECT_EQ(slurp(sys / "class/iommu/dmar1/intel-iommu/version"), "6:0\n");
    EXPECT_EQ(link(sys / "class/iommu/dmar1"), "../../devices/virtual/iommu/dmar1");
    EXPECT_TRUE(linksTo(sys / "devices/virtual/iommu/dmar1/devices/0000:6a:01.0", dsa));
    EXPECT_TRUE(linksTo(sys / "kernel/iommu_groups/10/devices/0000:6a:01.0", dsa));
    EXPECT_EQ(slurp(sys / "kernel/iommu_groups/10/type"), "DMA\n");
    EXPECT_EQ(slurp(sys / "kernel/iommu_groups/2/reserved_regions"),
              "0x000000006e800000 0x000000006e9fffff direct-relaxable\n"
              "0x00000000fee00000 0x00000000feefffff msi\n");
    std::set<std::string> g50;
    for (const auto& e : fs::directory_iterator(sys / "kernel/iommu_groups/50/devices")) {
        g50.insert(e.path().filename().string());
    }
    EXPECT_EQ(g50, (std::set<std::string>{"0000:ca:00.0", "0000:ca:00.1"}));

    // Work queues.
    const fs::path wq = sys / "bus/dsa/devices/wq0.1";
    EXPECT_EQ(link(wq), "../../../devices/pci0000:6a/0000:6a:01.0/dsa0/wq0.1");
    EXPECT_TRUE(linksTo(wq, dsa / "dsa0/wq0.1"));
    EXPECT_EQ(slurp(wq / "mode"), "shared\n");
    EXPECT_EQ(slurp(wq / "type"), "user\n");
    EXPECT_EQ(slurp(wq / "size"), "32\n");
    EXPECT_EQ(slurp(wq / "state"), "enabled\n");
    EXPECT_EQ(slurp(wq / "name"), "app-shared\n");
    EXPECT_EQ(slurp(wq / "group_id"), "0\n");
    EXPECT_EQ(slurp(wq / "threshold"), "32\n");
    EXPECT_TRUE(fs::exists(wq / "priority"));
    EXPECT_TRUE(fs::is_regular_file(root / "dev/dsa/wq0.1"));
    EXPECT_FALSE(fs::exists(root / "dev/dsa/wq0.2")); // kernel queue
    EXPECT_FALSE(fs::exists(root / "dev/dsa/wq0.3")); // disabled

    // SR-IOV.
    const fs::path pf = sys / "devices/pci0000:b1/0000:b1:00.0";
    EXPECT_EQ(slurp(pf / "sriov_totalvfs"), "8\n");
    EXPECT_EQ(slurp(pf / "sriov_numvfs"), "4\n");
    EXPECT_EQ(link(pf / "virtfn0"), "../0000:b1:00.2");
    EXPECT_EQ(link(pf / "virtfn3"), "../0000:b1:00.5");
    EXPECT_FALSE(fs::exists(pf / "virtfn4"));
    const fs::path vf0 = sys / "devices/pci0000:b1/0000:b1:00.2";
    EXPECT_EQ(link(vf0 / "physfn"), "../0000:b1:00.0");
    EXPECT_TRUE(linksTo(vf0 / "physfn", pf));
    EXPECT_EQ(slurp(vf0 / "device"), "0x101e\n");
    EXPECT_EQ(slurp(vf0 / "vendor"), "0x15b3\n");
    EXPECT_EQ(link(vf0 / "iommu"), "../../virtual/iommu/dmar2");
    EXPECT_EQ(link(vf0 / "driver"), "../../../bus/pci/drivers/mlx5_core");
    const int vfGroup = std::stoi(fs::read_symlink(vf0 / "iommu_group").filename().string());
    EXPECT_GT(vfGroup, 50);
    const fs::path e810vf = sys / "devices/pci0000:38/0000:38:01.0";
    EXPECT_TRUE(fs::is_directory(e810vf));
    EXPECT_EQ(slurp(e810vf / "device"), "0x1889\n");
    EXPECT_EQ(link(e810vf / "driver"), "../../../bus/pci/drivers/iavf");

    // VFIO cdevs.
    const fs::path e810vf1 = sys / "devices/pci0000:38/0000:38:01.1";
    EXPECT_EQ(link(e810vf1 / "driver"), "../../../bus/pci/drivers/vfio-pci");
    EXPECT_EQ(slurp(e810vf1 / "driver_override"), "vfio-pci\n");
    EXPECT_TRUE(fs::exists(e810vf1 / "vfio-dev/vfio1/dev"));
    EXPECT_TRUE(fs::is_regular_file(root / "dev/vfio/devices/vfio1"));
    const fs::path gpu = sys / "devices/pci0000:4d/0000:4d:00.0";
    EXPECT_EQ(slurp(gpu / "vfio-dev/vfio0/dev").back(), '\n');
    EXPECT_TRUE(fs::is_regular_file(root / "dev/iommu"));

    // vDPA: on a VF and a software one.
    const fs::path vdpa0 = sys / "bus/vdpa/devices/vdpa0";
    EXPECT_EQ(link(vdpa0), "../../../devices/pci0000:b1/0000:b1:00.2/vdpa0");
    EXPECT_TRUE(linksTo(vdpa0, vf0 / "vdpa0"));
    EXPECT_EQ(link(vdpa0 / "driver"), "../../../../bus/vdpa/drivers/vhost_vdpa");
    EXPECT_TRUE(fs::is_directory(vdpa0 / "driver"));
    EXPECT_TRUE(fs::exists(vdpa0 / "vhost-vdpa-0/dev"));
    EXPECT_TRUE(fs::is_regular_file(root / "dev/vhost-vdpa-0"));
    const fs::path vdpa1 = sys / "bus/vdpa/devices/vdpa1";
    EXPECT_EQ(link(vdpa1), "../../../devices/vdpasim_net/vdpa1");
    EXPECT_TRUE(fs::is_directory(vdpa1 / "driver"));
    EXPECT_TRUE(fs::is_regular_file(root / "dev/vhost-vdpa-1"));

    // Every link in the tree resolves.
    size_t links = 0;
    for (const auto& e : fs::recursive_directory_iterator(root)) {
        if (e.is_symlink()) {
            ++links;
            EXPECT_TRUE(fs::exists(e.path())) << e.path() << " -> " << link(e.path());
            EXPECT_EQ(link(e.path()).front(), '.') << e.path(); // relative
        }
    }
    EXPECT_GT(links, 50u);

    // The root must be new or empty.
    EXPECT_THROW(writeTree(host, root.string()), HostgenError);
}

TEST(HostgenTree, RejectsInvalidHosts) {
    HostSpec h;
    DeviceSpec d;
    d.address = "0000:00:01.0";
    d.device = 1;
    d.group = 5; // not declared
    h.devices.push_back(d);
    TempDir t;
    try {
        writeTree(h, (t.path() / "x").string());
        FAIL() << "accepted a device in an undeclared group";
    } catch (const HostgenError& e) {
        EXPECT_NE(
            std::string(e.what()).find("devices[0].group: device 0000:00:01.0: IOMMU group 5"),
            std::string::npos)
            << e.what();
    }
    EXPECT_FALSE(fs::exists(t.path() / "x/sys"));
}

// ---- synthetic hosts -------------------------------------------------------

TEST(HostgenSynth, ExactFunctionCountsAndDeterminism) {
    for (uint32_t n : {0u, 1u, 2u, 3u, 7u, 64u, 1000u, 4096u}) {
        const auto h = synthesize(n, 7);
        EXPECT_NO_THROW(validateHost(h)) << n;
        EXPECT_EQ(expandHost(h).devices.size(), n) << n;
    }
    const auto a = expandHost(synthesize(4096, 1));
    const auto b = expandHost(synthesize(4096, 1));
    const auto c = expandHost(synthesize(4096, 2));
    ASSERT_EQ(a.devices.size(), 4096u);
    std::vector<std::string> aa, bb, cc;
    for (const auto& d : a.devices) {
        aa.push_back(d.address + d.driver + std::to_string(d.device));
    }
    for (const auto& d : b.devices) {
        bb.push_back(d.address + d.driver + std::to_string(d.device));
    }
    for (const auto& d : c.devices) {
        cc.push_back(d.address + d.driver + std::to_string(d.device));
    }
    EXPECT_EQ(aa, bb);
    EXPECT_NE(aa, cc);
}

TEST(HostgenSynth, MixOfSvaDevices) {
    const auto spec = synthesize(4096, 1);
    const auto h = expandHost(spec);
    const auto s = statsOf(h);
    EXPECT_EQ(s.functions, 4096u);
    EXPECT_GE(s.units, 2u);
    EXPECT_GT(s.groups, 1000u);
    EXPECT_GT(s.queues, 0u);
    EXPECT_GT(s.vdpa, 0u);
    for (const auto& u : h.units) {
        EXPECT_TRUE(u.ecap >> 43 & 1) << "SMTS";
        EXPECT_TRUE(u.ecap >> 40 & 1) << "PASID";
        EXPECT_EQ(u.ecap >> 35 & 0x1f, 19u) << "PSS";
        EXPECT_TRUE(u.ecap >> 26 & 1) << "NEST";
        EXPECT_TRUE(u.ecap >> 29 & 1) << "PRS";
        EXPECT_TRUE(u.ecap >> 47 & 1) << "FLTS";
        EXPECT_TRUE(u.ecap >> 46 & 1) << "SLTS";
        EXPECT_TRUE(u.ecap >> 2 & 1) << "DT";
        EXPECT_TRUE(u.ecap >> 1 & 1) << "QI";
        EXPECT_TRUE(u.ecap >> 3 & 1) << "IR";
    }
    std::map<std::string, int> kinds;
    std::map<uint32_t, int> groupSize;
    std::set<uint16_t> domains;
    for (const auto& d : h.devices) {
        if (d.device == 0x0b25) {
            ++kinds["dsa"];
            EXPECT_EQ(d.pasid->width, 20u);
            EXPECT_TRUE(d.ats && d.pri && d.siov);
            EXPECT_EQ(d.queues.size(), 4u);
        }
        if (d.device == 0x0cfe) {
            ++kinds["iaa"];
        }
        if (!d.physfn.empty()) {
            ++kinds["vf"];
        }
        if (d.vfio) {
            ++kinds["vfio"];
        }
        if (d.classCode == 0x010802) {
            ++kinds["nvme"];
            EXPECT_FALSE(d.pasid);
        }
        if ((d.classCode >> 16) == 0x03) {
            ++kinds["gpu"];
            EXPECT_TRUE(d.pasid && d.ats);
        }
        if (d.group) {
            ++groupSize[*d.group];
        }
        domains.insert(static_cast<uint16_t>(std::stoi(d.address.substr(0, 4), nullptr, 16)));
    }
    for (const char* k : {"dsa", "iaa", "vf", "vfio", "nvme", "gpu"}) {
        EXPECT_GT(kinds[k], 0) << k;
    }
    EXPECT_TRUE(std::any_of(groupSize.begin(), groupSize.end(),
                            [](const auto& g) { return g.second > 1; }));
    EXPECT_GT(domains.size(), 1u);
}

TEST(HostgenSynth, TreeHasEveryFunction) {
    TempDir t;
    const auto h = synthesize(300, 3);
    writeTree(h, (t.path() / "h").string());
    size_t n = 0;
    for ([[maybe_unused]] const auto& e :
         fs::directory_iterator(t.path() / "h/sys/bus/pci/devices")) {
        ++n;
    }
    EXPECT_EQ(n, 300u);
}

// ---- the sample host --------------------------------------------------------

TEST(HostgenSample, SprLoads) {
    const auto h = loadHostYaml(SVAD_SOURCE_DIR "/config/hosts/sample-spr.yaml");
    EXPECT_GE(h.units.size(), 2u);
    for (const auto& u : h.units) {
        EXPECT_TRUE(u.ecap >> 43 & 1) << u.name;
        EXPECT_EQ(u.ecap >> 35 & 0x1f, 19u) << u.name;
    }
    const auto s = statsOf(expandHost(h));
    EXPECT_EQ(s.functions, 20u);
    EXPECT_EQ(s.queues, 6u);
    EXPECT_EQ(s.vdpa, 2u);
    bool dsa = false;
    bool iaa = false;
    for (const auto& d : h.devices) {
        if (d.device == 0x0b25) {
            dsa = true;
            EXPECT_EQ(d.idxdName, "dsa0");
            ASSERT_TRUE(d.pasid);
            EXPECT_EQ(d.pasid->width, 20u);
            EXPECT_FALSE(d.pasid->exec);
            EXPECT_TRUE(d.pasid->priv);
        }
        iaa = iaa || d.device == 0x0cfe;
    }
    EXPECT_TRUE(dsa && iaa);
}

// ---- pciutils dumps -----------------------------------------------------------

TEST(HostgenDump, AllSharedDumpsRead) {
    const fs::path dir = SVAD_SOURCE_DIR "/tests/conformance/pci-dumps";
    ASSERT_TRUE(fs::is_directory(dir)) << dir;
    size_t files = 0;
    for (const auto& e : fs::directory_iterator(dir)) {
        if (e.path().extension() == ".md") {
            continue;
        }
        ++files;
        const auto devs = readLspciDump(e.path().string());
        EXPECT_GE(devs.size(), 1u) << e.path();
        for (const auto& d : devs) {
            EXPECT_EQ(d.address.size(), 12u) << e.path();
            EXPECT_TRUE(d.config.size() == 64 || d.config.size() == 256 || d.config.size() == 4096)
                << e.path() << " " << d.address;
        }
    }
    EXPECT_EQ(files, 41u);

    const auto dsa = readLspciDump((dir / "pri-pasid").string());
    ASSERT_EQ(dsa.size(), 1u);
    EXPECT_EQ(dsa[0].address, "0000:6a:01.0");
    EXPECT_EQ(dsa[0].config.size(), 4096u);
    EXPECT_EQ(rd16(dsa[0].config, 0), 0x8086);
    EXPECT_EQ(rd16(dsa[0].config, 2), 0x0b25);
    EXPECT_NE(extAt(dsa[0].config, 0x1b), 0); // PASID

    const auto asus = readLspciDump((dir / "tree-asus-p6t6").string());
    EXPECT_EQ(asus.size(), 53u); // as `lspci -F tree-asus-p6t6` lists them
    const auto pcix = readLspciDump((dir / "PCI-X-bridges-and-domains").string());
    EXPECT_EQ(pcix.size(), 31u);
    EXPECT_EQ(pcix[2].address, "0001:00:02.0");
}

TEST(HostgenDump, FormatDetails) {
    TempDir t;
    const fs::path p = t.path() / "dump";
    std::ofstream(p) << "00:1f.3 Audio device: Intel\n"
                        "\tSubsystem: x\n"
                        "00: 86 80 a3 a3 06 00 10 00 00 00 03 04 00 00 00 00\n"
                        "10: 04 00\n"
                        "\n"
                        "20: ff ff ff ff\n" // outside a device: ignored
                        "0002:3B:00.1 Ethernet\r\n"
                        "100: 01 00 01 00\n";
    const auto devs = readLspciDump(p.string());
    ASSERT_EQ(devs.size(), 2u);
    EXPECT_EQ(devs[0].address, "0000:00:1f.3");
    EXPECT_EQ(devs[0].config.size(), 64u);
    EXPECT_EQ(devs[0].config[0x11], 0x00);
    EXPECT_EQ(devs[0].config[0x10], 0x04);
    EXPECT_EQ(devs[0].config[0x20], 0x00);
    EXPECT_EQ(devs[1].address, "0002:3b:00.1");
    EXPECT_EQ(devs[1].config.size(), 4096u);
    EXPECT_EQ(devs[1].config[0x100], 0x01);

    std::ofstream(p) << "00:00.0 Host bridge\n00: 86 80 zz\n";
    EXPECT_THROW(readLspciDump(p.string()), HostgenError);
    EXPECT_THROW(readLspciDump((t.path() / "missing").string()), HostgenError);
}
