// The real svad binary on a private bus, driven as a client would drive it.
#include "fixture.h"
#include "svad/dbus/Manager_proxy.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <filesystem>
#include <fstream>
#include <gtest/gtest.h>
#include <map>
#include <mutex>
#include <set>
#include <signal.h>
#include <sstream>
#include <string>
#include <sys/wait.h>
#include <thread>
#include <vector>

namespace svad::test {
namespace {

namespace fs = std::filesystem;
using Objects =
    std::map<sdbus::ObjectPath, std::map<std::string, std::map<std::string, sdbus::Variant>>>;

constexpr const char* kRoot = "/org/svad/Svad1";
constexpr const char* kManager = "org.svad.Svad1.Manager";
constexpr const char* kDevice = "org.svad.Svad1.Device";
constexpr const char* kGroup = "org.svad.Svad1.Group";
constexpr const char* kUnit = "org.svad.Svad1.Unit";
constexpr const char* kQueue = "org.svad.Svad1.Queue";
constexpr const char* kDsa = "/org/svad/Svad1/device/0000_6a_01_0";

Objects managedObjects(SvadFixture& f) {
    auto p = f.proxy(kRoot);
    Objects objects;
    p->callMethod("GetManagedObjects")
        .onInterface("org.freedesktop.DBus.ObjectManager")
        .storeResultsTo(objects);
    return objects;
}

std::vector<sdbus::ObjectPath> listDevices(SvadFixture& f,
                                           const std::map<std::string, sdbus::Variant>& filter) {
    auto p = f.proxy(kRoot);
    std::vector<sdbus::ObjectPath> out;
    p->callMethod("ListDevices").onInterface(kManager).withArguments(filter).storeResultsTo(out);
    return out;
}

size_t countPrefix(const Objects& objects, const std::string& prefix) {
    size_t n = 0;
    for (const auto& [path, ifaces] : objects) {
        n += path.rfind(prefix, 0) == 0 ? 1 : 0;
    }
    return n;
}

TEST(Bus, PublishesEveryObjectThroughTheObjectManager) {
    SvadFixture f(testHost());
    Objects objects = managedObjects(f);
    // 5 functions + 2 VFs, 2 vDPA, 1 unit, 5 declared groups + 2 for the VFs, 3 queues.
    EXPECT_EQ(countPrefix(objects, "/org/svad/Svad1/device/"), 7U);
    EXPECT_EQ(countPrefix(objects, "/org/svad/Svad1/vdpa/"), 2U);
    EXPECT_EQ(countPrefix(objects, "/org/svad/Svad1/unit/"), 1U);
    EXPECT_EQ(countPrefix(objects, "/org/svad/Svad1/group/"), 7U);
    EXPECT_EQ(countPrefix(objects, "/org/svad/Svad1/queue/"), 3U);
    ASSERT_EQ(objects.count(sdbus::ObjectPath(kDsa)), 1U);
    EXPECT_EQ(objects.at(sdbus::ObjectPath(kDsa)).count(kDevice), 1U);

    EXPECT_EQ(f.property(kRoot, kManager, "DeviceCount").get<uint32_t>(), 7U);
    EXPECT_EQ(f.property(kRoot, kManager, "VdpaDeviceCount").get<uint32_t>(), 2U);
    EXPECT_EQ(f.property(kRoot, kManager, "QueueCount").get<uint32_t>(), 3U);
    EXPECT_EQ(f.property(kRoot, kManager, "PasidDeviceCount").get<uint32_t>(), 2U);
    EXPECT_EQ(f.property(kRoot, kManager, "Backend").get<std::string>(), "sim");
    EXPECT_FALSE(f.property(kRoot, kManager, "Version").get<std::string>().empty());
}

TEST(Bus, DeviceShowsItsCapabilitiesAndLinks) {
    SvadFixture f(testHost());
    auto get = [&f](const char* name) { return f.property(kDsa, kDevice, name); };
    EXPECT_EQ(get("Address").get<std::string>(), "0000:6a:01.0");
    EXPECT_EQ(get("Kind").get<uint32_t>(), 1U);
    EXPECT_EQ(get("VendorId").get<uint16_t>(), 0x8086);
    EXPECT_EQ(get("DeviceId").get<uint16_t>(), 0x0b25);
    EXPECT_EQ(get("ClassCode").get<uint32_t>(), 0x088000U);
    EXPECT_EQ(get("Driver").get<std::string>(), "idxd");
    EXPECT_EQ(get("NumaNode").get<int32_t>(), 0);
    EXPECT_TRUE(get("Pasid").get<bool>());
    EXPECT_FALSE(get("PasidExec").get<bool>());
    EXPECT_TRUE(get("PasidPriv").get<bool>());
    EXPECT_EQ(get("PasidMaxWidth").get<uint32_t>(), 20U);
    EXPECT_TRUE(get("Ats").get<bool>());
    EXPECT_TRUE(get("Pri").get<bool>());
    EXPECT_TRUE(get("Siov").get<bool>());
    EXPECT_EQ(get("Group").get<sdbus::ObjectPath>(), "/org/svad/Svad1/group/1");
    EXPECT_EQ(get("Unit").get<sdbus::ObjectPath>(), "/org/svad/Svad1/unit/dmar0");
    auto queues = get("Queues").get<std::vector<sdbus::ObjectPath>>();
    ASSERT_EQ(queues.size(), 3U);
    EXPECT_EQ(queues[0], "/org/svad/Svad1/queue/wq0_2e0");
    EXPECT_TRUE(get("Warnings").get<std::vector<std::string>>().empty());

    // The queue points back at its accelerator; only the enabled user queue has a node.
    EXPECT_EQ(f.property(queues[0], kQueue, "Device").get<sdbus::ObjectPath>(), kDsa);
    EXPECT_EQ(f.property(queues[0], kQueue, "Mode").get<uint32_t>(), 1U);
    EXPECT_EQ(f.property(queues[0], kQueue, "Type").get<uint32_t>(), 3U);
    EXPECT_EQ(f.property(queues[0], kQueue, "CharDevice").get<std::string>(),
              f.root() + "/host/dev/dsa/wq0.0");
    EXPECT_EQ(f.property(queues[2], kQueue, "CharDevice").get<std::string>(), "");

    // SR-IOV: the PF lists its VFs, each VF names its PF.
    const std::string pf = "/org/svad/Svad1/device/0000_3b_00_0";
    auto vfs = f.property(pf, kDevice, "VirtualFunctions").get<std::vector<sdbus::ObjectPath>>();
    ASSERT_EQ(vfs.size(), 2U);
    EXPECT_EQ(f.property(vfs[0], kDevice, "PhysicalFunction").get<sdbus::ObjectPath>(), pf);
    EXPECT_EQ(f.property(pf, kDevice, "SriovTotalVfs").get<uint32_t>(), 8U);
    auto vdpa = f.property(pf, kDevice, "VdpaDevices").get<std::vector<sdbus::ObjectPath>>();
    ASSERT_EQ(vdpa.size(), 1U);
    EXPECT_EQ(f.property(vdpa[0], kDevice, "Kind").get<uint32_t>(), 2U);
    EXPECT_EQ(f.property(vdpa[0], kDevice, "ParentDevice").get<sdbus::ObjectPath>(), pf);
    EXPECT_EQ(f.property(vdpa[0], kDevice, "VhostDevice").get<std::string>(),
              f.root() + "/host/dev/vhost-vdpa-0");

    // VFIO cdev of the GPU, under the dev root.
    const std::string gpu = "/org/svad/Svad1/device/0000_17_00_0";
    EXPECT_EQ(f.property(gpu, kDevice, "VfioDevice").get<std::string>(), "vfio0");
    EXPECT_EQ(f.property(gpu, kDevice, "VfioCdev").get<std::string>(),
              f.root() + "/host/dev/vfio/devices/vfio0");
}

TEST(Bus, UnitDecodesVtdCapabilities) {
    SvadFixture f(testHost());
    const std::string unit = "/org/svad/Svad1/unit/dmar0";
    EXPECT_EQ(f.property(unit, kUnit, "Kind").get<uint32_t>(), 1U);
    EXPECT_TRUE(f.property(unit, kUnit, "ScalableMode").get<bool>());
    EXPECT_TRUE(f.property(unit, kUnit, "Pasid").get<bool>());
    EXPECT_EQ(f.property(unit, kUnit, "PasidWidth").get<uint32_t>(), 20U);
    EXPECT_TRUE(f.property(unit, kUnit, "Nesting").get<bool>());
    EXPECT_TRUE(f.property(unit, kUnit, "PageRequest").get<bool>());
    EXPECT_TRUE(f.property(unit, kUnit, "FirstLevel").get<bool>());
    EXPECT_EQ(f.property(unit, kUnit, "Devices").get<std::vector<sdbus::ObjectPath>>().size(), 7U);
}

TEST(Bus, GroupViabilityNamesTheOffendingMember) {
    SvadFixture f(testHost());
    const std::string g3 = "/org/svad/Svad1/group/3";
    EXPECT_FALSE(f.property(g3, kGroup, "Viable").get<bool>());
    auto blockers = f.property(g3, kGroup, "Blockers").get<std::vector<std::string>>();
    ASSERT_EQ(blockers.size(), 1U);
    EXPECT_NE(blockers[0].find("0000:17:00.1"), std::string::npos);
    EXPECT_NE(blockers[0].find("snd_hda_intel"), std::string::npos);
    EXPECT_EQ(f.property(g3, kGroup, "Type").get<uint32_t>(), 1U);
    using Region = sdbus::Struct<uint64_t, uint64_t, std::string>;
    auto regions = f.property(g3, kGroup, "ReservedRegions").get<std::vector<Region>>();
    ASSERT_EQ(regions.size(), 1U);
    EXPECT_EQ(std::get<0>(regions[0]), 0xfee00000ULL);
    EXPECT_EQ(std::get<2>(regions[0]), "msi");
    // The VFs are bound to vfio-pci alone in their groups.
    auto vf = "/org/svad/Svad1/device/0000_3b_00_0";
    auto vfs = f.property(vf, kDevice, "VirtualFunctions").get<std::vector<sdbus::ObjectPath>>();
    ASSERT_FALSE(vfs.empty());
    auto vfGroup = f.property(vfs[0], kDevice, "Group").get<sdbus::ObjectPath>();
    EXPECT_TRUE(f.property(vfGroup, kGroup, "Viable").get<bool>());
}

TEST(Bus, ListDevicesFilters) {
    SvadFixture f(testHost());
    auto pasid = listDevices(f, {{"pasid", sdbus::Variant(true)}});
    ASSERT_EQ(pasid.size(), 2U);
    EXPECT_EQ(pasid[0], "/org/svad/Svad1/device/0000_17_00_0");
    EXPECT_EQ(pasid[1], kDsa);
    EXPECT_EQ(listDevices(f, {}).size(), 9U);
    EXPECT_EQ(listDevices(f, {{"kind", sdbus::Variant(uint32_t{2})}}).size(), 2U);
    EXPECT_EQ(listDevices(f, {{"vendor", sdbus::Variant(uint16_t{0x15b3})},
                              {"driver", sdbus::Variant(std::string("vfio-pci"))}})
                  .size(),
              2U);
    EXPECT_EQ(listDevices(f, {{"address", sdbus::Variant(std::string("0000:ff:00.0"))}}).size(),
              0U);
}

TEST(Bus, BadFilterIsANamedError) {
    SvadFixture f(testHost());
    try {
        listDevices(f, {{"colour", sdbus::Variant(std::string("red"))}});
        FAIL() << "an unknown filter key was accepted";
    } catch (const sdbus::Error& e) {
        EXPECT_EQ(e.getName(), "org.svad.Svad1.Error.InvalidArgument");
        EXPECT_NE(e.getMessage().find("colour"), std::string::npos);
    }
    try {
        listDevices(f, {{"pasid", sdbus::Variant(std::string("yes"))}});
        FAIL() << "a filter value of the wrong type was accepted";
    } catch (const sdbus::Error& e) {
        EXPECT_EQ(e.getName(), "org.svad.Svad1.Error.InvalidArgument");
        EXPECT_NE(e.getMessage().find("'b'"), std::string::npos);
    }
    // svad is still serving.
    EXPECT_EQ(f.property(kRoot, kManager, "DeviceCount").get<uint32_t>(), 7U);
}

TEST(Bus, BadSysfsInputBecomesWarningsNotCrashes) {
    auto host = testHost();
    SvadFixture f(host);
    // The 64-byte config space is reported.
    const std::string nvme = "/org/svad/Svad1/device/0000_5e_00_0";
    EXPECT_EQ(f.property(nvme, kDevice, "ConfigSize").get<uint32_t>(), 64U);
    auto warnings = f.property(nvme, kDevice, "Warnings").get<std::vector<std::string>>();
    ASSERT_FALSE(warnings.empty());
    EXPECT_NE(warnings[0].find("64"), std::string::npos);

    // Garbage in a number, a missing attribute, a config chain that loops.
    const std::string dir = f.sysfs() + "/bus/pci/devices/0000:6a:01.0";
    std::ofstream(dir + "/vendor") << "0xzz86\n";
    fs::remove(dir + "/class");
    {
        std::fstream cfg(dir + "/config", std::ios::in | std::ios::out | std::ios::binary);
        cfg.seekp(0x100);
        const char loop[4] = {0x0f, 0x00, 0x01, 0x10}; // ATS v1, next = 0x100: itself
        cfg.write(loop, 4);
    }
    auto p = f.proxy(kRoot);
    p->callMethod("Rescan").onInterface(kManager);
    auto w = f.property(kDsa, kDevice, "Warnings").get<std::vector<std::string>>();
    std::string all;
    for (const auto& s : w) {
        all += s + "\n";
    }
    EXPECT_NE(all.find("vendor"), std::string::npos) << all;
    EXPECT_NE(all.find("class"), std::string::npos) << all;
    EXPECT_NE(all.find("0x100"), std::string::npos) << all;
    EXPECT_TRUE(f.property(kDsa, kDevice, "Ats").get<bool>());
    EXPECT_GE(f.property(kRoot, kManager, "WarningCount").get<uint32_t>(), 2U);
    EXPECT_TRUE(f.svad().running());
    EXPECT_NE(f.svad().log().find("DEVICE=0000:6a:01.0"), std::string::npos);
}

// The lines of svad's log holding every one of `needles`.
size_t logLines(const std::string& log, const std::vector<std::string>& needles) {
    std::istringstream in(log);
    size_t n = 0;
    for (std::string line; std::getline(in, line);) {
        n +=
            std::all_of(needles.begin(), needles.end(),
                        [&line](const std::string& x) { return line.find(x) != std::string::npos; })
                ? 1
                : 0;
    }
    return n;
}

TEST(Bus, AWarningIsLoggedWhenItAppearsNotOnEveryRescan) {
    auto host = testHost();
    SvadFixture f(host);
    const std::vector<std::string> nvme{"svad: warning: ", "DEVICE=0000:5e:00.0"};
    const std::vector<std::string> dsa{"svad: warning: ", "DEVICE=0000:6a:01.0"};
    const size_t atStart = logLines(f.svad().log(), nvme);
    ASSERT_GE(atStart, 1U) << f.svad().log(); // its 64-byte config space
    auto p = f.proxy(kRoot);
    p->callMethod("Rescan").onInterface(kManager);
    p->callMethod("Rescan").onInterface(kManager);
    EXPECT_EQ(logLines(f.svad().log(), nvme), atStart) << f.svad().log();
    EXPECT_EQ(logLines(f.svad().log(), dsa), 0U) << f.svad().log();

    // A new warning: that one is logged, once, and no other again.
    const std::string vendor = f.sysfs() + "/bus/pci/devices/0000:6a:01.0/vendor";
    std::string good;
    std::getline(std::ifstream(vendor), good);
    std::ofstream(vendor) << "0xzz86\n";
    p->callMethod("Rescan").onInterface(kManager);
    const size_t broken = logLines(f.svad().log(), dsa);
    EXPECT_GE(broken, 1U) << f.svad().log();
    p->callMethod("Rescan").onInterface(kManager);
    EXPECT_EQ(logLines(f.svad().log(), dsa), broken) << f.svad().log();
    EXPECT_EQ(logLines(f.svad().log(), {"vendor", "DEVICE=0000:6a:01.0"}), 1U) << f.svad().log();
    EXPECT_EQ(logLines(f.svad().log(), nvme), atStart) << f.svad().log();

    // Mended: told once as cleared; broken again: logged again.
    std::ofstream(vendor) << good << "\n";
    p->callMethod("Rescan").onInterface(kManager);
    p->callMethod("Rescan").onInterface(kManager);
    EXPECT_EQ(logLines(f.svad().log(), {"svad: info: warning cleared: ", "DEVICE=0000:6a:01.0"}),
              broken)
        << f.svad().log();
    std::ofstream(vendor) << "0xzz86\n";
    p->callMethod("Rescan").onInterface(kManager);
    EXPECT_EQ(logLines(f.svad().log(), dsa), 2 * broken) << f.svad().log();
    EXPECT_EQ(logLines(f.svad().log(), nvme), atStart) << f.svad().log();
}

// Watches the ObjectManager signals of svad from a client connection.
class Watcher final : public sdbus::ProxyInterfaces<sdbus::ObjectManager_proxy> {
public:
    Watcher(sdbus::IConnection& c)
        : ProxyInterfaces(c, svad::dbus::compat::ServiceName("org.svad.Svad1"),
                          sdbus::ObjectPath(kRoot)) {
        registerProxy();
    }
    ~Watcher() { unregisterProxy(); }
    bool waitRemoved(const std::string& path) {
        std::unique_lock lock(m_);
        return cv_.wait_for(lock, std::chrono::seconds(10),
                            [&] { return removed_.count(path) != 0; });
    }
    bool waitAdded(const std::string& path) {
        std::unique_lock lock(m_);
        return cv_.wait_for(lock, std::chrono::seconds(10),
                            [&] { return added_.count(path) != 0; });
    }

private:
    void onInterfacesAdded(const sdbus::ObjectPath& p,
                           const svad::dbus::compat::InterfacesAndProperties&) override {
        std::lock_guard lock(m_);
        added_.insert(p);
        cv_.notify_all();
    }
    void onInterfacesRemoved(const sdbus::ObjectPath& p,
                             const svad::dbus::compat::InterfaceNames&) override {
        std::lock_guard lock(m_);
        removed_.insert(p);
        cv_.notify_all();
    }
    std::mutex m_;
    std::condition_variable cv_;
    std::set<std::string> added_;
    std::set<std::string> removed_;
};

TEST(Bus, RescanPublishesTheDifferences) {
    auto host = testHost();
    SvadFixture f(host);
    auto conn = sdbus::createSessionBusConnectionWithAddress(f.bus());
    Watcher watcher(*conn);
    conn->enterEventLoopAsync();

    // The NVMe disappears, a new accelerator appears (taken from another tree).
    fs::remove(f.sysfs() + "/bus/pci/devices/0000:5e:00.0");
    hostgen::HostSpec extra;
    hostgen::DeviceSpec iax;
    iax.address = "0000:f1:02.0";
    iax.vendor = 0x8086;
    iax.device = 0x0cfe;
    iax.classCode = 0x088000;
    iax.pasid = hostgen::PasidSpec{20, false, true};
    extra.devices.push_back(iax);
    const std::string other = f.root() + "/other";
    hostgen::writeTree(extra, other);
    fs::copy(fs::canonical(other + "/sys/bus/pci/devices/0000:f1:02.0"),
             f.sysfs() + "/bus/pci/devices/0000:f1:02.0",
             fs::copy_options::recursive | fs::copy_options::copy_symlinks);

    f.proxy(kRoot)->callMethod("Rescan").onInterface(kManager);
    EXPECT_TRUE(watcher.waitRemoved("/org/svad/Svad1/device/0000_5e_00_0"));
    EXPECT_TRUE(watcher.waitAdded("/org/svad/Svad1/device/0000_f1_02_0"));
    EXPECT_EQ(f.property(kRoot, kManager, "DeviceCount").get<uint32_t>(), 7U);
    EXPECT_EQ(f.property(kRoot, kManager, "PasidDeviceCount").get<uint32_t>(), 3U);
    conn->leaveEventLoop();
}

TEST(Bus, SighupRescansAndSigtermStopsCleanly) {
    SvadFixture f(testHost());
    auto before = f.property(kRoot, kManager, "ScanCount").get<uint32_t>();
    f.svad().signal(SIGHUP);
    uint32_t after = before;
    for (int i = 0; i < 500 && after == before; ++i) {
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
        after = f.property(kRoot, kManager, "ScanCount").get<uint32_t>();
    }
    EXPECT_EQ(after, before + 1);
    f.svad().signal(SIGTERM);
    int st = f.svad().wait(5000);
    ASSERT_NE(st, -1) << "svad did not stop on SIGTERM";
    EXPECT_TRUE(WIFEXITED(st));
    EXPECT_EQ(WEXITSTATUS(st), 0);
}

// svad's threads carry names (ps -L, top -H): four workers for its kernel and
// plugin calls, one each for rescans, user lookups and the metrics endpoint,
// and no thread of its own left unnamed.
TEST(Bus, ThreadsAreNamedForTheAdministrator) {
    SvadFixture f(testHost(), {"--metrics-address", "127.0.0.1:0"});
    std::map<std::string, int> names;
    const std::string tasks = "/proc/" + std::to_string(f.svad().pid()) + "/task";
    for (const auto& task : fs::directory_iterator(tasks)) {
        std::ifstream in(task.path() / "comm");
        std::string name;
        std::getline(in, name);
        ++names[name];
    }
    EXPECT_EQ(names["svad-work"], 4);
    EXPECT_EQ(names["svad-rescan"], 1);
    EXPECT_EQ(names["svad-nss"], 1);
    EXPECT_EQ(names["svad-metrics"], 1);
    // The main thread keeps the program's name; every other is "svad-<what>",
    // but for TSan's own background thread in a TSan build, which keeps it too.
#if defined(__SANITIZE_THREAD__)
    constexpr int kRuntimeThreads = 1;
#else
    constexpr int kRuntimeThreads = 0;
#endif
    EXPECT_EQ(names["svad"], 1 + kRuntimeThreads);
    for (const auto& [name, count] : names) {
        EXPECT_TRUE(name == "svad" || name.starts_with("svad-"))
            << count << " thread(s) named '" << name << "'";
    }
}

TEST(Bus, SecondInstanceRefusesToStart) {
    SvadFixture f(testHost());
    // Metrics off: a port taken on this machine must not be what stops it.
    auto r = runCommand({SVAD_BINARY, "--bus", f.bus(), "--sysfs-root", f.sysfs(), "--dev-root",
                         f.root() + "/host/dev", "--metrics-address", "off"});
    EXPECT_NE(r.exitCode, 0);
    EXPECT_NE(r.errors.find("org.svad.Svad1"), std::string::npos) << r.errors;
}

TEST(Bus, SvactlListsAndShows) {
    SvadFixture f(testHost());
    auto devices = f.svactl({"devices"});
    ASSERT_EQ(devices.exitCode, 0) << devices.errors;
    EXPECT_NE(devices.output.find("0000:6a:01.0"), std::string::npos);
    EXPECT_NE(devices.output.find("8086:0b25"), std::string::npos);
    EXPECT_NE(devices.output.find("20b+p"), std::string::npos) << devices.output;

    auto pasid = f.svactl({"devices", "--pasid"});
    EXPECT_EQ(pasid.output.find("0000:5e:00.0"), std::string::npos);

    auto json = f.svactl({"--json", "groups"});
    ASSERT_EQ(json.exitCode, 0);
    EXPECT_EQ(json.output.front(), '[');
    EXPECT_NE(json.output.find("\"Viable\":false"), std::string::npos);

    auto show = f.svactl({"show", "6a:01.0"});
    ASSERT_EQ(show.exitCode, 0) << show.errors;
    EXPECT_NE(show.output.find("PasidMaxWidth:"), std::string::npos);
    EXPECT_NE(show.output.find(" 20\n"), std::string::npos);

    for (const char* what : {"units", "queues", "vdpa", "status"}) {
        auto r = f.svactl({what});
        EXPECT_EQ(r.exitCode, 0) << what << ": " << r.errors;
        EXPECT_FALSE(r.output.empty()) << what;
    }
    auto units = f.svactl({"units"});
    EXPECT_NE(units.output.find("dmar0"), std::string::npos);
    EXPECT_NE(units.output.find("Intel VT-d"), std::string::npos) << units.output;
    auto rescan = f.svactl({"rescan"});
    EXPECT_EQ(rescan.exitCode, 0) << rescan.errors;
}

// What a person sees: names for enumerations, dates for times, names for objects
// ("-" for none), and the plugins by name; --json keeps the exact values.
TEST(Bus, SvactlRendersPropertiesForAPerson) {
    SvadFixture f(testHost());
    // "Name:   value" of a `show` or `status` output.
    auto field = [](const std::string& out, const std::string& name) {
        auto at = out.find("\n" + name + ":");
        if (at == std::string::npos) {
            return std::string("<missing>");
        }
        auto start = out.find_first_not_of(' ', at + name.size() + 2);
        return out.substr(start, out.find('\n', start) - start);
    };
    auto status = f.svactl({"status"});
    ASSERT_EQ(status.exitCode, 0) << status.errors;
    EXPECT_EQ(field(status.output, "PluginRefusals"), "none") << status.output;
    EXPECT_EQ(status.output.find("<a("), std::string::npos) << status.output;
    const std::string plugins = field(status.output, "Plugins");
    EXPECT_NE(plugins.find("vfio"), std::string::npos) << plugins;
    EXPECT_NE(plugins.find("idxd"), std::string::npos) << plugins;
    const std::string scan = field(status.output, "LastScanTime");
    EXPECT_EQ(scan.size() > 20 && scan[4] == '-' && scan[13] == ':', true) << scan;
    EXPECT_NE(scan.find(" s ago)"), std::string::npos) << scan;

    auto dsa = f.svactl({"show", "6a:01.0"});
    ASSERT_EQ(dsa.exitCode, 0) << dsa.errors;
    EXPECT_EQ(field(dsa.output, "Kind"), "PCI function") << dsa.output;
    EXPECT_EQ(field(dsa.output, "HeldBy"), "-") << dsa.output;
    EXPECT_EQ(field(dsa.output, "ParentDevice"), "-") << dsa.output;
    EXPECT_EQ(field(dsa.output, "Queues").find("wq0.0 wq0.1"), 0U) << dsa.output;
    EXPECT_EQ(field(dsa.output, "HeaderType"), "endpoint") << dsa.output;
    auto vf = f.svactl({"show", "0000:3b:10.0"});
    EXPECT_EQ(field(vf.output, "PhysicalFunction"), "0000:3b:00.0") << vf.output;
    auto queue = f.svactl({"show", "wq0.1"});
    EXPECT_EQ(field(queue.output, "Mode"), "shared") << queue.output;
    EXPECT_EQ(field(queue.output, "Device"), "0000:6a:01.0") << queue.output;
    EXPECT_EQ(field(queue.output, "HeldBy"), "-") << queue.output;
    auto unit = f.svactl({"show", "dmar0"});
    EXPECT_EQ(field(unit.output, "Kind"), "Intel VT-d") << unit.output;

    // --json: the values as svad sends them.
    auto json = f.svactl({"--json", "show", "6a:01.0"});
    EXPECT_NE(json.output.find("\"Kind\":1"), std::string::npos) << json.output;
    EXPECT_NE(json.output.find("\"HeldBy\":\"/\""), std::string::npos) << json.output;
    EXPECT_NE(json.output.find("/org/svad/Svad1/queue/wq0_2e0"), std::string::npos) << json.output;
    auto statusJson = f.svactl({"--json", "status"});
    EXPECT_NE(statusJson.output.find("\"Plugins\":[{\"name\":"), std::string::npos)
        << statusJson.output;
    EXPECT_NE(statusJson.output.find("\"PluginRefusals\":[]"), std::string::npos)
        << statusJson.output;
}

TEST(Bus, SvactlErrorsAreOneLineAndNonZero) {
    SvadFixture f(testHost());
    auto unknown = f.svactl({"show", "0000:ff:1f.7"});
    EXPECT_EQ(unknown.exitCode, 1);
    EXPECT_NE(unknown.errors.find("0000:ff:1f.7"), std::string::npos);
    EXPECT_EQ(std::count(unknown.errors.begin(), unknown.errors.end(), '\n'), 1);

    auto badCommand = f.svactl({"frobnicate"});
    EXPECT_EQ(badCommand.exitCode, 2);

    f.svad().signal(SIGTERM);
    ASSERT_NE(f.svad().wait(5000), -1);
    auto down = f.svactl({"devices"});
    EXPECT_EQ(down.exitCode, 1);
    EXPECT_NE(down.errors.find("not running"), std::string::npos) << down.errors;
}

TEST(Bus, BusctlSeesPlainDbus) {
    SvadFixture f(testHost());
    auto r = runCommand({"busctl", "--address=" + f.bus(), "get-property", "org.svad.Svad1", kRoot,
                         kManager, "DeviceCount"});
    ASSERT_EQ(r.exitCode, 0) << r.errors;
    EXPECT_EQ(r.output, "u 7\n");
    auto intro =
        runCommand({"busctl", "--address=" + f.bus(), "introspect", "org.svad.Svad1", kDsa});
    EXPECT_NE(intro.output.find("PasidMaxWidth"), std::string::npos);
}

TEST(Daemon, RejectsBadArgumentsAndConfig) {
    TempDir dir;
    auto r = runCommand({SVAD_BINARY, "--backend", "qemu"});
    EXPECT_EQ(r.exitCode, 2);
    EXPECT_NE(r.errors.find("--backend"), std::string::npos);
    r = runCommand({SVAD_BINARY, "--sysfs-root", dir.path() + "/nope"});
    EXPECT_EQ(r.exitCode, 2);
    EXPECT_NE(r.errors.find("nope"), std::string::npos);

    const std::string bad = dir.path() + "/svad.yaml";
    std::ofstream(bad) << "plugins:\n  dir: [unclosed\n";
    r = runCommand(
        {SVAD_BINARY, "--config", bad, "--sysfs-root", dir.path(), "--dev-root", dir.path()});
    EXPECT_EQ(r.exitCode, 2);
    EXPECT_NE(r.errors.find(bad + ":"), std::string::npos) << r.errors;

    r = runCommand({SVAD_BINARY, "--version"});
    EXPECT_EQ(r.exitCode, 0);
    EXPECT_EQ(r.output.rfind("svad ", 0), 0U);
}

} // namespace
} // namespace svad::test
