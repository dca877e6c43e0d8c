// Hotplug through the real libudev: svad runs on a umockdev testbed, the test
// changes the tree the way the kernel would and sends the uevent; svad's
// libudev monitor receives it, reads the affected devices again and tells
// its clients (svactl monitor stands for them).
#include "fixture.h"
#include "testbed.h"

#include <chrono>
#include <functional>
#include <gtest/gtest.h>
#include <signal.h>
#include <sstream>
#include <thread>

namespace svad::test {
namespace {

constexpr const char* kRoot = "/org/svad/Svad1";
constexpr const char* kManager = "org.svad.Svad1.Manager";
constexpr const char* kGroup = "org.svad.Svad1.Group";
constexpr const char* kContext = "org.svad.Svad1.Context";
constexpr const char* kDevice = "org.svad.Svad1.Device";
constexpr const char* kGpu = "0000:17:00.0";
constexpr const char* kAudio = "0000:17:00.1";

// The test host with group 3 viable: the GPU's audio function on vfio-pci too.
hostgen::HostSpec baseHost() {
    auto h = testHost();
    for (auto& d : h.devices) {
        if (d.address == kAudio) {
            d.driver = "vfio-pci";
        }
    }
    return h;
}

// svad on a testbed, with metrics on a free port and `svactl monitor --json` listening.
std::vector<std::string> withMetrics(std::vector<std::string> args, uint16_t port) {
    args.emplace_back("--metrics-address");
    args.push_back("127.0.0.1:" + std::to_string(port));
    return args;
}

class Live {
public:
    explicit Live(const hostgen::HostSpec& host, std::vector<std::string> extraArgs = {})
        : port_(freePort()),
          fixture_(host, withMetrics(std::move(extraArgs), port_), testbed_.root()) {
        monitor_ = std::make_unique<Process>(
            std::vector<std::string>{SVACTL_BINARY, "--bus", fixture_.bus(), "monitor", "--json"},
            fixture_.root() + "/monitor.log");
        if (!waitUntil([this] {
                return monitor_->log().find("printing the events") != std::string::npos;
            })) {
            throw std::runtime_error("svactl monitor did not start: " + monitor_->log());
        }
    }
    ~Live() {
        monitor_->signal(SIGTERM);
        monitor_->wait(5000);
    }
    Testbed& testbed() { return testbed_; }
    SvadFixture& f() { return fixture_; }
    std::string metrics() { return httpGet(port_); }
    double metric(const std::string& series) { return metricValue(metrics(), series); }
    std::string events() { return monitor_->log(); }
    bool sawEvent(const std::string& a, const std::string& b = {}) {
        std::istringstream in(events());
        std::string line;
        while (std::getline(in, line)) {
            if (line.find(a) != std::string::npos && line.find(b) != std::string::npos) {
                return true;
            }
        }
        return false;
    }
    bool hasObject(const std::string& path) {
        std::map<sdbus::ObjectPath, std::map<std::string, std::map<std::string, sdbus::Variant>>>
            objects;
        fixture_.proxy(kRoot)
            ->callMethod("GetManagedObjects")
            .onInterface("org.freedesktop.DBus.ObjectManager")
            .storeResultsTo(objects);
        return objects.count(sdbus::ObjectPath(path)) != 0;
    }

private:
    Testbed testbed_;
    uint16_t port_;
    SvadFixture fixture_;
    std::unique_ptr<Process> monitor_;
};

std::string devicePathOf(const std::string& address) {
    std::string p = std::string(kRoot) + "/device/";
    for (char c : address) {
        p += (c == ':' || c == '.') ? '_' : c;
    }
    return p;
}

// A DSA function on vfio-pci with PASID, for the tests that hot-add one.
hostgen::DeviceSpec hotAddedDsa() {
    hostgen::DeviceSpec dev;
    dev.address = "0000:6a:02.0";
    dev.vendor = 0x8086;
    dev.device = 0x0b25;
    dev.classCode = 0x088000;
    dev.driver = "vfio-pci";
    dev.group = 5; // declared by the test host, empty until now
    dev.iommu = "dmar0";
    dev.vfio = 7;
    dev.pasid = hostgen::PasidSpec{20, false, true};
    dev.ats = true;
    return dev;
}

TEST(Hotplug, AddedPasidDeviceAppears) {
    Live live(baseHost());
    EXPECT_EQ(live.f().property(kRoot, kManager, "PasidDeviceCount").get<uint32_t>(), 2U);

    auto after = baseHost();
    const hostgen::DeviceSpec dev = hotAddedDsa();
    after.devices.push_back(dev);
    live.testbed().replaceTree(after);
    live.testbed().uevent(pciDevpath(dev.address), "add");

    const std::string path = devicePathOf(dev.address);
    ASSERT_TRUE(waitUntil([&] { return live.hasObject(path); })) << live.f().svad().log();
    EXPECT_TRUE(live.f().property(path, kDevice, "Pasid").get<bool>());
    EXPECT_EQ(live.f().property(path, kDevice, "VfioDevice").get<std::string>(), "vfio7");
    EXPECT_EQ(live.f().property(kRoot, kManager, "PasidDeviceCount").get<uint32_t>(), 3U);
    EXPECT_TRUE(live.f().property(std::string(kRoot) + "/group/5", kGroup, "Viable").get<bool>());
    // A client saw the new objects; the metrics counted the event and one re-read.
    EXPECT_TRUE(waitUntil([&] { return live.sawEvent("\"event\":\"add\"", path); }))
        << live.events();
    EXPECT_TRUE(live.sawEvent("\"event\":\"change\"", "/group/5")) << live.events();
    EXPECT_FALSE(live.sawEvent("/group/6")) << "nothing else changed: " << live.events();
    EXPECT_EQ(live.metric("svad_hotplug_events_total{action=\"add\",subsystem=\"pci\"}"), 1);
    EXPECT_EQ(live.metric("svad_hotplug_refreshes_total"), 1);
    EXPECT_EQ(live.metric("svad_pasid_capable_devices"), 3);
}

// A lone event is read at once, not after the settle window: here a minute,
// which the wait below never reaches.
TEST(Hotplug, ALoneEventIsReadAtOnce) {
    Live live(baseHost(), {"--hotplug-settle", "60000"});
    auto after = baseHost();
    const hostgen::DeviceSpec dev = hotAddedDsa();
    after.devices.push_back(dev);
    live.testbed().replaceTree(after);
    live.testbed().uevent(pciDevpath(dev.address), "add");
    EXPECT_TRUE(waitUntil([&] { return live.hasObject(devicePathOf(dev.address)); }, 10000))
        << live.f().svad().log();
    EXPECT_EQ(live.metric("svad_hotplug_refreshes_total"), 1);
}

TEST(Hotplug, HostDriverOnAGroupMemberMakesTheGroupNotViable) {
    Live live(baseHost());
    const std::string group = std::string(kRoot) + "/group/3";
    ASSERT_TRUE(live.f().property(group, kGroup, "Viable").get<bool>());

    // The audio function leaves vfio-pci for its host driver: unbind, then bind.
    auto after = baseHost();
    for (auto& d : after.devices) {
        if (d.address == kAudio) {
            d.driver = "snd_hda_intel";
        }
    }
    live.testbed().replaceTree(after);
    live.testbed().uevent(pciDevpath(kAudio), "unbind");
    live.testbed().uevent(pciDevpath(kAudio), "bind");

    ASSERT_TRUE(waitUntil([&] { return !live.f().property(group, kGroup, "Viable").get<bool>(); }))
        << live.f().svad().log();
    auto blockers = live.f().property(group, kGroup, "Blockers").get<std::vector<std::string>>();
    ASSERT_EQ(blockers.size(), 1U);
    EXPECT_EQ(blockers[0], std::string(kAudio) + " is bound to snd_hda_intel");
    EXPECT_EQ(live.f().property(devicePathOf(kAudio), kDevice, "Driver").get<std::string>(),
              "snd_hda_intel");
    EXPECT_TRUE(waitUntil([&] { return live.sawEvent("\"event\":\"change\"", group); }))
        << live.events();
    EXPECT_TRUE(live.sawEvent("\"Viable\":false")) << live.events();
    EXPECT_EQ(live.metric("svad_hotplug_events_total{action=\"unbind\",subsystem=\"pci\"}"), 1);
    EXPECT_EQ(live.metric("svad_hotplug_events_total{action=\"bind\",subsystem=\"pci\"}"), 1);
    EXPECT_EQ(live.metric("svad_iommu_groups{viable=\"false\"}"), 5);
}

TEST(Hotplug, RemovingAHeldDeviceDegradesItsContext) {
    Live live(baseHost());
    sdbus::ObjectPath context;
    sdbus::UnixFd iommufd;
    std::map<std::string, sdbus::UnixFd> fds;
    std::map<std::string, sdbus::Variant> info;
    live.f()
        .proxy(kRoot)
        ->callMethod("AllocateContext")
        .onInterface(kManager)
        .withArguments(std::string("vm1"), std::vector<std::string>{kGpu},
                       std::map<std::string, sdbus::Variant>{})
        .storeResultsTo(context, iommufd, fds, info);
    ASSERT_EQ(live.f().property(context, kContext, "State").get<uint32_t>(), 1U);

    // The GPU goes (surprise removal): the kernel sends "remove" as it tears the device down.
    auto after = baseHost();
    std::erase_if(after.devices, [](const hostgen::DeviceSpec& d) { return d.address == kGpu; });
    live.testbed().replaceTree(after, {pciDevpath(kGpu)});
    live.testbed().uevent(pciDevpath(kGpu), "remove");

    ASSERT_TRUE(waitUntil([&] { return !live.hasObject(devicePathOf(kGpu)); }))
        << live.f().svad().log();
    EXPECT_EQ(live.f().property(context, kContext, "State").get<uint32_t>(), 2U);
    EXPECT_TRUE(waitUntil([&] {
        return live.sawEvent("\"event\":\"degraded\"", "device 0000:17:00.0 removed");
    })) << live.events();
    EXPECT_TRUE(live.sawEvent("\"event\":\"remove\"", devicePathOf(kGpu))) << live.events();
    EXPECT_EQ(live.metric("svad_contexts_degraded_total"), 1);
    EXPECT_EQ(live.metric("svad_hotplug_events_total{action=\"remove\",subsystem=\"pci\"}"), 1);
    // The group now holds the audio function alone.
    auto members = live.f()
                       .property(std::string(kRoot) + "/group/3", kGroup, "Devices")
                       .get<std::vector<sdbus::ObjectPath>>();
    EXPECT_EQ(members.size(), 1U);

    // The context stays until its owner lets it go; svad keeps serving.
    live.f()
        .proxy(kRoot)
        ->callMethod("ReleaseContext")
        .onInterface(kManager)
        .withArguments(context);
    EXPECT_FALSE(live.hasObject(context));
    EXPECT_TRUE(live.f().svad().running());
    EXPECT_EQ(live.metric("svad_releases_total{reason=\"owner\"}"), 1);
}

TEST(Hotplug, QueueEnabledAndVdpaDeviceCreated) {
    Live live(baseHost());
    const std::string queue = std::string(kRoot) + "/queue/wq0_2e2";
    ASSERT_EQ(live.f().property(queue, "org.svad.Svad1.Queue", "State").get<uint32_t>(), 1U);

    // accel-config enables wq0.2 as a user queue; the vdpa tool makes vdpa1 on a VF.
    auto after = baseHost();
    for (auto& d : after.devices) {
        if (d.address == "0000:6a:01.0") {
            d.queues[2].state = "enabled";
            d.queues[2].type = "user";
            d.queues[2].charDevice = true;
        }
        if (d.address == "0000:3b:00.0") {
            d.sriov->vfs[1].vdpa.push_back(hostgen::VdpaSpec{"vdpa1", "vhost_vdpa", ""});
        }
    }
    live.testbed().replaceTree(after);
    live.testbed().uevent("/sys/devices/pci0000:6a/0000:6a:01.0/dsa0/wq0.2", "change");
    live.testbed().uevent("/sys/devices/pci0000:3b/0000:3b:10.1/vdpa1", "add");

    ASSERT_TRUE(waitUntil([&] { return live.hasObject(std::string(kRoot) + "/vdpa/vdpa1"); }))
        << live.f().svad().log();
    EXPECT_EQ(live.f().property(queue, "org.svad.Svad1.Queue", "State").get<uint32_t>(), 2U);
    EXPECT_EQ(live.f().property(queue, "org.svad.Svad1.Queue", "CharDevice").get<std::string>(),
              live.f().devRoot() + "/dsa/wq0.2");
    EXPECT_EQ(live.metric("svad_hotplug_events_total{action=\"change\",subsystem=\"dsa\"}"), 1);
    EXPECT_EQ(live.metric("svad_hotplug_events_total{action=\"add\",subsystem=\"vdpa\"}"), 1);
    EXPECT_EQ(live.metric("svad_devices{driver=\"vhost_vdpa\",kind=\"vdpa\"}"), 3);
}

TEST(Hotplug, ABurstOfEventsIsReadOnceOrAFewTimes) {
    Live live(baseHost());
    const auto scansBefore = live.f().property(kRoot, kManager, "ScanCount").get<uint32_t>();
    auto after = baseHost();
    for (auto& d : after.devices) {
        if (d.address == "0000:5e:00.0") {
            d.driver = "vfio-pci";
        }
    }
    live.testbed().replaceTree(after);
    constexpr int kEvents = 1000;
    // umockdev's sender aborts on a full socket (a datagram queue holds 10 here), so the
    // burst comes in runs of 8, each sent once svad has read the previous ones.
    const std::string counter = "svad_hotplug_events_total{action=\"change\",subsystem=\"pci\"}";
    constexpr int kRun = 8;
    for (int sent = 0; sent < kEvents;) {
        for (int i = 0; i < kRun && sent < kEvents; ++i, ++sent) {
            live.testbed().uevent(pciDevpath("0000:5e:00.0"), "change");
        }
        ASSERT_TRUE(waitUntil([&] { return live.metric(counter) == sent; }, 5000))
            << sent << " sent\n"
            << live.metrics();
    }
    ASSERT_TRUE(waitUntil([&] {
        return live.f().property(std::string(kRoot) + "/group/4", kGroup, "Viable").get<bool>();
    }));
    // Every event read has had its re-read applied: then count the re-reads.
    ASSERT_TRUE(waitUntil([&] { return live.metric("svad_hotplug_pending_events") == 0; }, 5000))
        << live.metrics();
    const double refreshes = live.metric("svad_hotplug_refreshes_total");
    const auto scans = live.f().property(kRoot, kManager, "ScanCount").get<uint32_t>();
    EXPECT_GE(refreshes, 1);
    EXPECT_LE(refreshes, 100) << "1000 events should be coalesced";
    EXPECT_EQ(scans - scansBefore, static_cast<uint32_t>(refreshes));
    EXPECT_TRUE(live.f().svad().running());
}

} // namespace
} // namespace svad::test
