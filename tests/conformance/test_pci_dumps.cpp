// Conformance of the capability parser, end to end, against lspci.
//
// For each of the real dumps in SVAD_PCI_DUMPS_DIR (the pciutils test
// suite): the dumped devices become a generated sysfs tree (hostgen), which
// discovery reads back through the linux Sysfs port; what discovery found is
// compared with what `lspci -F DUMP -vvv` reports for the same bytes.
#include "lspci_oracle.h"
#include "svad/core/discovery.h"
#include "svad/core/pci_caps.h"
#include "svad/hostgen/hostgen.h"
#include "svad/linux/sysfs_reader.h"

#include <algorithm>
#include <cctype>
#include <cstdlib>
#include <filesystem>
#include <gtest/gtest.h>
#include <map>
#include <string>
#include <unistd.h>
#include <vector>

namespace {

namespace fs = std::filesystem;
using svad::conformance::LspciDevice;

constexpr size_t kExpectedDumps = 41;

std::vector<std::string> dumpFiles() {
    std::vector<std::string> files;
    std::error_code ec;
    for (const auto& e : fs::directory_iterator(SVAD_PCI_DUMPS_DIR, ec)) {
        if (e.is_regular_file() && e.path().extension() != ".md") {
            files.push_back(e.path().filename().string());
        }
    }
    std::sort(files.begin(), files.end());
    return files;
}

std::string dumpPath(const std::string& name) {
    return (fs::path(SVAD_PCI_DUMPS_DIR) / name).string();
}

// A fresh empty directory, removed with everything in it at scope exit.
class TempDir {
public:
    TempDir() {
        std::string tmpl = (fs::temp_directory_path() / "svad-conformance-XXXXXX").string();
        if (mkdtemp(tmpl.data()) == nullptr) {
            throw std::runtime_error("mkdtemp failed");
        }
        path_ = tmpl;
    }
    ~TempDir() {
        std::error_code ec;
        fs::remove_all(path_, ec);
    }
    TempDir(const TempDir&) = delete;
    TempDir& operator=(const TempDir&) = delete;
    const std::string& path() const { return path_; }

private:
    std::string path_;
};

uint16_t le16(const std::vector<uint8_t>& b, size_t off) {
    return off + 2 <= b.size() ? static_cast<uint16_t>(b[off] | b[off + 1] << 8) : 0;
}

svad::hostgen::HostSpec hostOf(const std::string& name,
                               const std::vector<svad::hostgen::DumpedDevice>& devices) {
    svad::hostgen::HostSpec spec;
    spec.name = name;
    for (const auto& d : devices) {
        svad::hostgen::DeviceSpec ds;
        ds.address = d.address;
        ds.vendor = le16(d.config, 0x00);
        ds.device = le16(d.config, 0x02);
        if (d.config.size() > 0x0b) {
            ds.revision = d.config[0x08];
            ds.classCode = static_cast<uint32_t>(d.config[0x09]) |
                           static_cast<uint32_t>(d.config[0x0a]) << 8 |
                           static_cast<uint32_t>(d.config[0x0b]) << 16;
        }
        if (d.config.size() > 0x0e && (d.config[0x0e] & 0x7f) == 0) {
            ds.subsystemVendor = le16(d.config, 0x2c);
            ds.subsystemDevice = le16(d.config, 0x2e);
        }
        ds.configSize = static_cast<uint32_t>(d.config.size());
        ds.rawConfig = d.config;
        spec.devices.push_back(std::move(ds));
    }
    return spec;
}

// Everything one dump amounts to: the dumped bytes, what discovery made of
// them, and what lspci made of them.
struct DumpResult {
    std::vector<svad::hostgen::DumpedDevice> dumped;
    svad::core::Host host;
    std::map<std::string, LspciDevice> lspci;
};

// Runs the whole pipeline; fails the current test (and returns false) when a
// step cannot run at all.
bool runDump(const std::string& name, DumpResult& r) {
    const std::string path = dumpPath(name);
    r.dumped = svad::hostgen::readLspciDump(path);
    EXPECT_FALSE(r.dumped.empty()) << name << ": no devices read";

    TempDir tmp;
    svad::hostgen::writeTree(hostOf(name, r.dumped), tmp.path());
    const svad::linux_impl::SysfsReader sysfs(tmp.path() + "/sys");
    r.host = svad::core::discover(sysfs);

    const auto text = svad::conformance::runLspci(path);
    EXPECT_TRUE(text.has_value()) << "could not run `lspci -F " << path
                                  << "` (pciutils must be installed)";
    if (!text) {
        return false;
    }
    r.lspci = svad::conformance::parseLspci(*text);
    return !r.dumped.empty();
}

const svad::core::PciDevice* findDevice(const svad::core::Host& host, const std::string& address) {
    for (const auto& d : host.devices) {
        if (d.address == address) {
            return &d;
        }
    }
    return nullptr;
}

std::string testName(const testing::TestParamInfo<std::string>& info) {
    std::string s = info.param;
    for (auto& c : s) {
        if (!std::isalnum(static_cast<unsigned char>(c))) {
            c = '_';
        }
    }
    return s;
}

// ---- the dumps are all there -----------------------------------------------------

TEST(PciDumps, AllDumpsFound) {
    const auto files = dumpFiles();
    EXPECT_EQ(files.size(), kExpectedDumps) << "in " << SVAD_PCI_DUMPS_DIR;
    for (const char* must : {"pri-pasid", "cap-pasid-pri", "cap-dvsec-cxl", "broken-ecaps"}) {
        EXPECT_NE(std::find(files.begin(), files.end(), must), files.end()) << must;
    }
}

// ---- per dump: discovery == lspci -------------------------------------------------

class PciDump : public testing::TestWithParam<std::string> {};

TEST_P(PciDump, MatchesLspci) {
    const std::string& name = GetParam();
    DumpResult r;
    if (!runDump(name, r)) {
        return;
    }

    EXPECT_EQ(r.host.devices.size(), r.dumped.size()) << name;
    EXPECT_EQ(r.lspci.size(), r.dumped.size()) << name;

    for (const auto& dumped : r.dumped) {
        SCOPED_TRACE(name + " " + dumped.address);
        const svad::core::PciDevice* dev = findDevice(r.host, dumped.address);
        ASSERT_NE(dev, nullptr) << "discovery did not find the device";
        const auto it = r.lspci.find(dumped.address);
        ASSERT_NE(it, r.lspci.end()) << "lspci did not list the device";
        const LspciDevice& want = it->second;
        const svad::core::PciCapabilities& caps = dev->caps;

        // The generated tree carried the bytes unchanged.
        EXPECT_EQ(dev->configSize, dumped.config.size());
        EXPECT_EQ(caps, svad::core::parsePciConfig(dumped.config));
        EXPECT_EQ(dev->vendor, le16(dumped.config, 0));
        EXPECT_EQ(dev->device, le16(dumped.config, 2));

        // PASID, ATS, PRI: what the brief of svad is about.
        EXPECT_EQ(caps.pasid.present, want.pasid) << "PASID presence";
        if (want.pasid && caps.pasid.present) {
            ASSERT_TRUE(want.pasidMaxWidth.has_value()) << "lspci printed no PASIDCap line";
            EXPECT_EQ(caps.pasid.exec, *want.pasidExec) << "PASID Exec";
            EXPECT_EQ(caps.pasid.priv, *want.pasidPriv) << "PASID Priv";
            EXPECT_EQ(caps.pasid.maxWidth, *want.pasidMaxWidth) << "Max PASID Width";
        }
        EXPECT_EQ(caps.ats.present, want.ats) << "ATS presence";
        if (want.ats && caps.ats.present) {
            ASSERT_TRUE(want.atsInvalidateQueueDepth && want.atsEnabled);
            EXPECT_EQ(caps.ats.invalidateQueueDepth, *want.atsInvalidateQueueDepth);
            EXPECT_EQ(caps.ats.enabled, *want.atsEnabled);
            EXPECT_EQ(caps.ats.smallestTranslationUnit, *want.atsSmallestTranslationUnit);
        }
        EXPECT_EQ(caps.pri.present, want.pri) << "PRI presence";
        if (want.pri && caps.pri.present) {
            ASSERT_TRUE(want.priEnabled && want.priCapacity);
            EXPECT_EQ(caps.pri.enabled, *want.priEnabled);
            EXPECT_EQ(caps.pri.outstandingCapacity, *want.priCapacity);
        }

        // The rest of what both decode.
        EXPECT_EQ(caps.acs.present, want.acs) << "ACS presence";
        if (want.acs && caps.acs.present) {
            ASSERT_TRUE(want.acsCapability && want.acsControl);
            EXPECT_EQ(caps.acs.capability & 0x7f, *want.acsCapability);
            EXPECT_EQ(caps.acs.control & 0x7f, *want.acsControl);
        }
        EXPECT_EQ(caps.sriov.present, want.sriov) << "SR-IOV presence";
        if (want.sriov && caps.sriov.present) {
            ASSERT_TRUE(want.sriovTotalVfs && want.sriovVfDeviceId);
            EXPECT_EQ(caps.sriov.initialVfs, *want.sriovInitialVfs);
            EXPECT_EQ(caps.sriov.totalVfs, *want.sriovTotalVfs);
            EXPECT_EQ(caps.sriov.numVfs, *want.sriovNumVfs);
            EXPECT_EQ(caps.sriov.firstVfOffset, *want.sriovFirstVfOffset);
            EXPECT_EQ(caps.sriov.vfStride, *want.sriovVfStride);
            EXPECT_EQ(caps.sriov.vfDeviceId, *want.sriovVfDeviceId);
        }
        ASSERT_EQ(caps.dvsecs.size(), want.dvsecs.size()) << "DVSEC count";
        for (size_t i = 0; i < caps.dvsecs.size(); ++i) {
            EXPECT_EQ(caps.dvsecs[i].offset, want.dvsecs[i].offset);
            EXPECT_EQ(caps.dvsecs[i].vendor, want.dvsecs[i].vendor);
            EXPECT_EQ(caps.dvsecs[i].id, want.dvsecs[i].id);
            EXPECT_EQ(caps.dvsecs[i].revision, want.dvsecs[i].revision);
        }

        // Both lists as walked.
        EXPECT_EQ(caps.standard.size(), want.standardCount) << "standard capability count";
        std::vector<std::pair<uint16_t, uint8_t>> extended;
        for (const auto& e : caps.extended) {
            extended.emplace_back(e.offset, e.version);
        }
        EXPECT_EQ(extended, want.extended) << "extended chain (offset, version)";
    }
}

INSTANTIATE_TEST_SUITE_P(Dumps, PciDump, testing::ValuesIn(dumpFiles()), testName);

// ---- fixed expectations, independent of the oracle ----------------------------------

// The oracle itself could parse nothing and agree with a parser that finds
// nothing: pin what the dumps are known to hold.
TEST(PciDumps, KnownSvaDevices) {
    DumpResult r;
    ASSERT_TRUE(runDump("pri-pasid", r));
    const auto* dsa = findDevice(r.host, "0000:6a:01.0");
    ASSERT_NE(dsa, nullptr);
    EXPECT_EQ(dsa->vendor, 0x8086);
    EXPECT_EQ(dsa->device, 0x0b25);
    EXPECT_TRUE(dsa->caps.pasid.present);
    EXPECT_EQ(dsa->caps.pasid.maxWidth, 20u); // lspci: "Max PASID Width: 14" (hex)
    EXPECT_TRUE(dsa->caps.ats.present);
    EXPECT_TRUE(dsa->caps.pri.present);
    EXPECT_TRUE(dsa->caps.siov); // DVSEC 8086:5 at 0x200
    EXPECT_TRUE(dsa->warnings.empty());

    const auto& o = r.lspci.at("0000:6a:01.0");
    EXPECT_TRUE(o.pasid && o.ats && o.pri);
    EXPECT_EQ(o.pasidMaxWidth, 20u);
}

TEST(PciDumps, OracleSeesTheSvaCapabilities) {
    size_t devices = 0, pasid = 0, ats = 0, pri = 0, pasidLines = 0;
    for (const auto& name : dumpFiles()) {
        const auto text = svad::conformance::runLspci(dumpPath(name));
        ASSERT_TRUE(text.has_value()) << name;
        for (const auto& [address, d] : svad::conformance::parseLspci(*text)) {
            ++devices;
            pasid += d.pasid;
            ats += d.ats;
            pri += d.pri;
            pasidLines += d.pasidMaxWidth.has_value();
        }
    }
    EXPECT_GE(devices, 150u);
    EXPECT_GE(pasid, 5u);
    EXPECT_EQ(pasidLines, pasid);
    EXPECT_GE(ats, 5u);
    EXPECT_GE(pri, 4u);
}

TEST(PciDumps, BrokenExtendedChainWarnsAndSurvives) {
    DumpResult r;
    ASSERT_TRUE(runDump("broken-ecaps", r));
    ASSERT_EQ(r.host.devices.size(), 1u);
    const auto& d = r.host.devices.front();
    EXPECT_FALSE(d.caps.warnings.empty());
    EXPECT_TRUE(std::any_of(d.warnings.begin(), d.warnings.end(), [](const std::string& w) {
        return w.find("config:") != std::string::npos;
    })) << "the parser's warnings reach the device";
    EXPECT_TRUE(d.caps.extended.empty());
    EXPECT_FALSE(d.caps.pasid.present || d.caps.ats.present || d.caps.pri.present);
}

// The parser's warnings on the real dumps: only the broken one has any.
TEST(PciDumps, OnlyTheBrokenDumpWarns) {
    for (const auto& name : dumpFiles()) {
        for (const auto& d : svad::hostgen::readLspciDump(dumpPath(name))) {
            const auto caps = svad::core::parsePciConfig(d.config);
            if (name == "broken-ecaps") {
                EXPECT_FALSE(caps.warnings.empty()) << name << " " << d.address;
            } else {
                EXPECT_TRUE(caps.warnings.empty())
                    << name << " " << d.address << ": " << caps.warnings.front();
            }
        }
    }
}

// The oracle parser on canned lspci text, including both PASIDCap spellings.
TEST(LspciOracle, ParsesCapabilities) {
    const std::string text =
        "0000:00:02.0 VGA compatible controller: Intel Corporation Device 1912\n"
        "\tCapabilities: [70] Express (v2) Root Complex Integrated Endpoint, MSI 00\n"
        "\tCapabilities: [ac] MSI: Enable+ Count=1/1 Maskable- 64bit-\n"
        "\tCapabilities: [100 v1] Process Address Space ID (PASID)\n"
        "\t\tPASIDCap: Exec+, Priv-, Max PASID Width: 14\n"
        "\tCapabilities: [200 v1] Address Translation Service (ATS)\n"
        "\t\tATSCap:\tInvalidate Queue Depth: 1f\n"
        "\t\tATSCtl:\tEnable+, Smallest Translation Unit: 02\n"
        "\tCapabilities: [300 v1] Page Request Interface (PRI)\n"
        "\t\tPRICtl: Enable+ Reset-\n"
        "\t\tPage Request Capacity: 00008000, Page Request Allocation: 00000000\n"
        "\tCapabilities: [100 v1] <chain looped>\n"
        "\n"
        "0001:02:00.0 Ethernet controller: Intel Corporation Device 10c9\n"
        "\tCapabilities: [40] Power Management version 3\n"
        "\tCapabilities: [40] <chain looped>\n"
        "\tCapabilities: [150 v1] Access Control Services\n"
        "\t\tACSCap:\tSrcValid+ TransBlk- ReqRedir+ CmpltRedir- UpstreamFwd- EgressCtrl- "
        "DirectTrans+\n"
        "\t\tACSCtl:\tSrcValid- TransBlk- ReqRedir- CmpltRedir- UpstreamFwd- EgressCtrl- "
        "DirectTrans-\n"
        "\tCapabilities: [160 v1] Single Root I/O Virtualization (SR-IOV)\n"
        "\t\tInitial VFs: 8, Total VFs: 8, Number of VFs: 2, Function Dependency Link: 00\n"
        "\t\tVF offset: 384, stride: 2, Device ID: 10ca\n"
        "\tCapabilities: [200 v1] Designated Vendor-Specific: Vendor=8086 ID=0005 Rev=1 Len=24 "
        "<?>\n"
        "\tCapabilities: [230 v1] Process Address Space ID (PASID)\n"
        "\t\tPASIDCap: Exec- Priv+, Max PASID Width: 10\n";
    const auto devices = svad::conformance::parseLspci(text);
    ASSERT_EQ(devices.size(), 2u);

    const auto& a = devices.at("0000:00:02.0");
    EXPECT_EQ(a.standardCount, 2u);
    EXPECT_EQ(a.extended,
              (std::vector<std::pair<uint16_t, uint8_t>>{{0x100, 1}, {0x200, 1}, {0x300, 1}}));
    EXPECT_TRUE(a.pasid);
    EXPECT_EQ(a.pasidExec, true);
    EXPECT_EQ(a.pasidPriv, false);
    EXPECT_EQ(a.pasidMaxWidth, 0x14u);
    EXPECT_TRUE(a.ats);
    EXPECT_EQ(a.atsInvalidateQueueDepth, 0x1fu);
    EXPECT_EQ(a.atsEnabled, true);
    EXPECT_EQ(a.atsSmallestTranslationUnit, 2u);
    EXPECT_TRUE(a.pri);
    EXPECT_EQ(a.priEnabled, true);
    EXPECT_EQ(a.priCapacity, 0x8000u);
    EXPECT_FALSE(a.acs || a.sriov);

    const auto& b = devices.at("0001:02:00.0");
    EXPECT_EQ(b.standardCount, 1u);
    EXPECT_EQ(b.acsCapability, 0x45);
    EXPECT_EQ(b.acsControl, 0);
    EXPECT_EQ(b.sriovNumVfs, 2);
    EXPECT_EQ(b.sriovFirstVfOffset, 384);
    EXPECT_EQ(b.sriovVfStride, 2);
    EXPECT_EQ(b.sriovVfDeviceId, 0x10ca);
    ASSERT_EQ(b.dvsecs.size(), 1u);
    EXPECT_EQ(b.dvsecs[0].offset, 0x200);
    EXPECT_EQ(b.dvsecs[0].vendor, 0x8086);
    EXPECT_EQ(b.dvsecs[0].id, 5);
    EXPECT_EQ(b.dvsecs[0].revision, 1);
    // PASIDCap spelled the pciutils 3.9 way.
    EXPECT_TRUE(b.pasid);
    EXPECT_EQ(b.pasidExec, false);
    EXPECT_EQ(b.pasidPriv, true);
    EXPECT_EQ(b.pasidMaxWidth, 0x10u);
}

} // namespace
