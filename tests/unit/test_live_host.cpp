// The live-host pieces that need no bus: the partial re-read after hotplug
// events, the mapping of events to changes, the journal's fields and the
// metrics address check.
#include "scratch_dir.h"
#include "svad/core/discovery.h"
#include "svad/core/hotplug.h"
#include "svad/hostgen/hostgen.h"
#include "svad/linux/journal_sink.h"
#include "svad/linux/sysfs_reader.h"
#include "svad/metrics/metrics.h"

#include <algorithm>
#include <filesystem>
#include <gtest/gtest.h>
#include <prometheus/registry.h>
#include <prometheus/text_serializer.h>
#include <stdexcept>
#include <unistd.h>

namespace svad {
namespace {

// A scratch directory of this file's tests.
class Dir : public test::ScratchDir {
public:
    Dir() : ScratchDir("svad-live-test") {}
};

hostgen::HostSpec host() {
    using namespace hostgen;
    HostSpec h;
    h.name = "live";
    h.units.push_back(UnitSpec{"dmar0", 0x00d2008c40660462ULL, 0xf0ULL, "6:0"});
    for (uint32_t g : {1U, 2U, 3U}) {
        h.groups.push_back(GroupSpec{g, "DMA", {}});
    }
    DeviceSpec nic;
    nic.address = "0000:3b:00.0";
    nic.vendor = 0x15b3;
    nic.device = 0x101d;
    nic.driver = "mlx5_core";
    nic.group = 1;
    nic.iommu = "dmar0";
    nic.sriov = SriovSpec{8, 2, 0x101e, "vfio-pci"};
    h.devices.push_back(nic);
    DeviceSpec gpu;
    gpu.address = "0000:17:00.0";
    gpu.device = 0x2236;
    gpu.driver = "vfio-pci";
    gpu.group = 2;
    gpu.iommu = "dmar0";
    gpu.pasid = PasidSpec{20, true, true};
    h.devices.push_back(gpu);
    DeviceSpec audio = gpu;
    audio.address = "0000:17:00.1";
    audio.pasid.reset();
    h.devices.push_back(audio);
    DeviceSpec nvme;
    nvme.address = "0000:5e:00.0";
    nvme.driver = "nvme";
    nvme.group = 3;
    nvme.iommu = "dmar0";
    h.devices.push_back(nvme);
    return h;
}

core::Host discoverAt(const std::string& root) {
    return core::discover(linux_impl::SysfsReader(root + "/sys"));
}

// The re-read after `changes` of the tree written at `root`, from `previous`.
core::Host refreshAt(const std::string& root, const core::Host& previous,
                     const core::HostChanges& changes) {
    return core::refresh(linux_impl::SysfsReader(root + "/sys"), previous, changes);
}

hostgen::DeviceSpec& device(hostgen::HostSpec& h, const std::string& address) {
    for (auto& d : h.devices) {
        if (d.address == address) {
            return d;
        }
    }
    throw std::runtime_error("no " + address);
}

TEST(Refresh, AfterRebindEqualsAFullScan) {
    Dir before;
    Dir after;
    auto spec = host();
    hostgen::writeTree(spec, before.path());
    device(spec, "0000:17:00.1").driver = "snd_hda_intel";
    hostgen::writeTree(spec, after.path());

    const core::Host previous = discoverAt(before.path());
    ASSERT_TRUE(previous.groups[1].viable);
    core::HostChanges changes;
    changes.pci.insert("0000:17:00.1");
    const core::Host next = refreshAt(after.path(), previous, changes);
    const core::Host full = discoverAt(after.path());
    EXPECT_EQ(next.devices, full.devices);
    EXPECT_EQ(next.groups, full.groups);
    EXPECT_EQ(next.units, full.units);
    EXPECT_FALSE(next.groups[1].viable);
    ASSERT_EQ(next.groups[1].blockers.size(), 1U);
}

TEST(Refresh, ReadsOnlyWhatChangedAndWhatDependsOnIt) {
    Dir before;
    Dir after;
    auto spec = host();
    hostgen::writeTree(spec, before.path());
    // Two changes on the host, but only the NVMe's event arrives.
    device(spec, "0000:5e:00.0").driver = "vfio-pci";
    device(spec, "0000:17:00.0").driver = "nouveau";
    hostgen::writeTree(spec, after.path());

    const core::Host previous = discoverAt(before.path());
    core::HostChanges changes;
    changes.pci.insert("0000:5e:00.0");
    const core::Host next = refreshAt(after.path(), previous, changes);
    for (const auto& d : next.devices) {
        if (d.address == "0000:5e:00.0") {
            EXPECT_EQ(d.driver, "vfio-pci");
        }
        if (d.address == "0000:17:00.0") {
            EXPECT_EQ(d.driver, "vfio-pci") << "not read again: no event named it";
        }
    }
    EXPECT_TRUE(next.groups[2].viable);
}

TEST(Refresh, FollowsAddedAndRemovedFunctionsAndAPfsVfs) {
    Dir before;
    Dir after;
    auto spec = host();
    hostgen::writeTree(spec, before.path());
    // One VF more on the NIC, and the NVMe gone.
    spec.devices[0].sriov->numVfs = 3;
    std::erase_if(spec.devices, [](const auto& d) { return d.address == "0000:5e:00.0"; });
    hostgen::writeTree(spec, after.path());

    const core::Host previous = discoverAt(before.path());
    const core::Host full = discoverAt(after.path());
    core::HostChanges changes;
    changes.pci.insert("0000:5e:00.0");
    changes.pciAddedOrRemoved = true; // the NVMe's "remove"
    for (const auto& d : full.devices) {
        if (!d.physfn.empty()) {
            changes.pci.insert(d.address); // the new VF's "add"; its PF follows
        }
    }
    const core::Host next = refreshAt(after.path(), previous, changes);
    EXPECT_EQ(next.devices, full.devices);
    EXPECT_EQ(next.groups, full.groups);
    EXPECT_EQ(next.units, full.units);
}

// Two DSA functions with a queue each and a NIC with a vDPA device: after an event
// for one DSA function, its queue is read again; the other queue and the vDPA
// device are kept as they were (their own events read them), and a bind reads
// no unit.
TEST(Refresh, KeepsTheQueuesAndUnitsOfFunctionsNoEventNamed) {
    auto spec = host();
    for (const char* a : {"0000:6a:01.0", "0000:6b:01.0"}) {
        hostgen::DeviceSpec dsa;
        dsa.address = a;
        dsa.device = 0x0b25;
        dsa.driver = "idxd";
        dsa.group = 3;
        dsa.iommu = "dmar0";
        dsa.idxdName = a[6] == 'a' ? "dsa0" : "dsa1";
        hostgen::QueueSpec wq;
        wq.name = dsa.idxdName == "dsa0" ? "wq0.0" : "wq1.0";
        dsa.queues.push_back(wq);
        spec.devices.push_back(dsa);
    }
    device(spec, "0000:3b:00.0").vdpa.push_back(hostgen::VdpaSpec{"vdpa0", "vhost_vdpa", ""});
    Dir before;
    hostgen::writeTree(spec, before.path());
    const core::Host previous = discoverAt(before.path());
    ASSERT_EQ(previous.queues.size(), 2U);
    ASSERT_EQ(previous.vdpa.size(), 1U);

    // Both queues disabled, the vDPA device unbound, a unit's version changed; one event.
    for (auto& d : spec.devices) {
        for (auto& q : d.queues) {
            q.state = "disabled";
        }
        for (auto& v : d.vdpa) {
            v.driver = "";
        }
    }
    spec.units[0].version = "7:0";
    Dir after;
    hostgen::writeTree(spec, after.path());
    core::HostChanges changes;
    changes.pci.insert("0000:6a:01.0");
    const core::Host next = refreshAt(after.path(), previous, changes);
    ASSERT_EQ(next.queues.size(), 2U);
    for (const auto& q : next.queues) {
        EXPECT_EQ(q.state,
                  q.name == "wq0.0" ? core::QueueState::Disabled : core::QueueState::Enabled)
            << q.name;
    }
    ASSERT_EQ(next.vdpa.size(), 1U);
    EXPECT_EQ(next.vdpa[0].driver, "vhost_vdpa"); // kept
    EXPECT_EQ(next.units, previous.units);        // a bind: no unit read

    // A function that came: the units are read; an event of the queues: all of them.
    changes.pciAddedOrRemoved = true;
    changes.queues = true;
    changes.vdpa = true;
    const core::Host all = refreshAt(after.path(), previous, changes);
    const core::Host full = discoverAt(after.path());
    EXPECT_EQ(all.queues, full.queues);
    EXPECT_EQ(all.vdpa, full.vdpa);
    EXPECT_EQ(all.units, full.units);
    EXPECT_NE(all.units, previous.units);
}

// A reader that records what it is asked for, in order.
class RecordingSysfs final : public ports::Sysfs {
public:
    explicit RecordingSysfs(const std::string& root) : inner_(root) {}
    ports::Read<std::string> readText(const std::string& path) const override {
        asked.push_back("read " + path);
        return inner_.readText(path);
    }
    ports::Read<std::vector<uint8_t>> readBinary(const std::string& path,
                                                 size_t maxBytes) const override {
        asked.push_back("read " + path);
        return inner_.readBinary(path, maxBytes);
    }
    std::optional<std::vector<std::string>> list(const std::string& path) const override {
        asked.push_back("list " + path);
        return inner_.list(path);
    }
    std::optional<std::string> readLink(const std::string& path) const override {
        asked.push_back("link " + path);
        return inner_.readLink(path);
    }
    bool exists(const std::string& path) const override {
        asked.push_back("exists " + path);
        return inner_.exists(path);
    }
    bool askedFor(const std::string& what) const {
        return std::find(asked.begin(), asked.end(), what) != asked.end();
    }
    mutable std::vector<std::string> asked;

private:
    linux_impl::SysfsReader inner_;
};

// host() with a DSA function 0000:6a:01.0 and its queue wq0.0, and a vDPA
// device vdpa0 below the NIC.
hostgen::HostSpec hostWithQueueAndVdpa() {
    auto spec = host();
    hostgen::DeviceSpec dsa;
    dsa.address = "0000:6a:01.0";
    dsa.device = 0x0b25;
    dsa.driver = "idxd";
    dsa.group = 3;
    dsa.iommu = "dmar0";
    dsa.idxdName = "dsa0";
    hostgen::QueueSpec wq;
    wq.name = "wq0.0";
    dsa.queues.push_back(wq);
    spec.devices.push_back(dsa);
    device(spec, "0000:3b:00.0").vdpa.push_back(hostgen::VdpaSpec{"vdpa0", "vhost_vdpa", ""});
    return spec;
}

// A lone bind costs what changed, not what the host holds: neither the lists of
// functions and groups nor the links of queues and vDPA devices below other
// functions are read again, and the result is still that of a full scan.
TEST(Refresh, ABindListsNoFunctionsAndFollowsNoOtherLinks) {
    auto spec = hostWithQueueAndVdpa();
    Dir before;
    hostgen::writeTree(spec, before.path());
    // An entry that is no function: its warning is the listing's, and stays.
    std::filesystem::create_directory(before.path() + "/sys/bus/pci/devices/junk");
    const core::Host previous = discoverAt(before.path());
    ASSERT_EQ(previous.queues.size(), 1U);
    ASSERT_EQ(previous.vdpa.size(), 1U);
    ASSERT_EQ(previous.warnings.size(), 1U);

    device(spec, "0000:5e:00.0").driver = "vfio-pci";
    Dir after;
    hostgen::writeTree(spec, after.path());
    std::filesystem::create_directory(after.path() + "/sys/bus/pci/devices/junk");
    core::HostChanges changes;
    changes.pci.insert("0000:5e:00.0");
    const RecordingSysfs reader(after.path() + "/sys");
    const core::Host next = core::refresh(reader, previous, changes);
    EXPECT_FALSE(reader.askedFor("list bus/pci/devices"));
    EXPECT_FALSE(reader.askedFor("list kernel/iommu_groups"));
    EXPECT_FALSE(reader.askedFor("link bus/dsa/devices/wq0.0"));
    EXPECT_FALSE(reader.askedFor("link bus/vdpa/devices/vdpa0"));
    EXPECT_TRUE(reader.askedFor("link bus/pci/devices/0000:5e:00.0/driver"));
    const core::Host full = discoverAt(after.path());
    EXPECT_EQ(next.devices, full.devices);
    EXPECT_EQ(next.groups, full.groups);
    EXPECT_EQ(next.queues, full.queues);
    EXPECT_EQ(next.vdpa, full.vdpa);
    EXPECT_EQ(next.warnings, full.warnings);

    // An event for the DSA function reads its queue again, link and all.
    core::HostChanges dsaChanged;
    dsaChanged.pci.insert("0000:6a:01.0");
    const RecordingSysfs again(after.path() + "/sys");
    (void)core::refresh(again, previous, dsaChanged);
    EXPECT_TRUE(again.askedFor("link bus/dsa/devices/wq0.0"));
    EXPECT_FALSE(again.askedFor("link bus/vdpa/devices/vdpa0"));
}

// After PCI events the queue and vDPA listings are still read: an entry that
// went is dropped and one that came is read, whichever function the event named.
TEST(Refresh, QueuesAndVdpaDevicesThatCameOrWentFollowTheirListings) {
    auto spec = hostWithQueueAndVdpa();
    Dir before;
    hostgen::writeTree(spec, before.path());
    const core::Host previous = discoverAt(before.path());

    device(spec, "0000:6a:01.0").queues[0].name = "wq0.1";
    device(spec, "0000:3b:00.0").vdpa.clear();
    Dir after;
    hostgen::writeTree(spec, after.path());
    core::HostChanges changes;
    changes.pci.insert("0000:17:00.0");
    const core::Host next = refreshAt(after.path(), previous, changes);
    const core::Host full = discoverAt(after.path());
    ASSERT_EQ(next.queues.size(), 1U);
    EXPECT_EQ(next.queues, full.queues);
    EXPECT_TRUE(next.vdpa.empty());
}

// A function svad did not have is listed whatever its event said (a "bind" for
// it, its "add" never seen).
TEST(Refresh, AnUnknownFunctionIsListedEvenWithoutAnAdd) {
    auto spec = host();
    Dir before;
    hostgen::writeTree(spec, before.path());
    const core::Host previous = discoverAt(before.path());
    hostgen::DeviceSpec extra;
    extra.address = "0000:5e:00.1";
    extra.driver = "nvme";
    extra.group = 3;
    extra.iommu = "dmar0";
    spec.devices.push_back(extra);
    Dir after;
    hostgen::writeTree(spec, after.path());
    core::HostChanges changes;
    changes.pci.insert("0000:5e:00.1");
    const core::Host next = refreshAt(after.path(), previous, changes);
    EXPECT_EQ(next.devices, discoverAt(after.path()).devices);
    EXPECT_EQ(next.devices.size(), previous.devices.size() + 1);
}

// VFIO's no-IOMMU mode: binding vfio-pci makes a group and the unbind frees it,
// with no event but the function's. The refresh lists the groups after all.
TEST(Refresh, AGroupMadeOrFreedByABindIsFollowed) {
    auto without = host();
    device(without, "0000:5e:00.0").group.reset();
    device(without, "0000:5e:00.0").driver = "";
    auto with = without;
    with.groups.push_back(hostgen::GroupSpec{9, "DMA", {}});
    device(with, "0000:5e:00.0").group = 9;
    device(with, "0000:5e:00.0").driver = "vfio-pci";
    Dir a;
    Dir b;
    hostgen::writeTree(without, a.path());
    hostgen::writeTree(with, b.path());
    core::HostChanges changes;
    changes.pci.insert("0000:5e:00.0");

    const core::Host unbound = discoverAt(a.path());
    const core::Host bound = refreshAt(b.path(), unbound, changes);
    const core::Host fullBound = discoverAt(b.path());
    // The generator numbers VFIO cdevs in order: only the groups and the function
    // compare whole (the others' cdevs were renumbered, with no event).
    auto nvme = [](const core::Host& h) {
        for (const auto& d : h.devices) {
            if (d.address == "0000:5e:00.0") {
                return d;
            }
        }
        return core::PciDevice{};
    };
    EXPECT_EQ(bound.groups, fullBound.groups);
    EXPECT_EQ(nvme(bound), nvme(fullBound));
    EXPECT_EQ(nvme(bound).group, std::optional<uint32_t>(9));

    const core::Host freed = refreshAt(a.path(), fullBound, changes);
    EXPECT_EQ(freed.groups, unbound.groups);
    EXPECT_EQ(nvme(freed), nvme(unbound));
    EXPECT_FALSE(nvme(freed).group.has_value());
}

// Hot-unplug: the kernel sends "unbind" before "remove", and the function's
// directory may be gone when the unbind is read. Its group stays (another
// function is in it), so only the function itself tells: it is listed away.
TEST(Refresh, AFunctionGoneBeforeItsRemoveIsListedAway) {
    Dir before;
    Dir after;
    auto spec = host();
    hostgen::writeTree(spec, before.path());
    std::erase_if(spec.devices, [](const auto& d) { return d.address == "0000:17:00.1"; });
    hostgen::writeTree(spec, after.path());
    const core::Host previous = discoverAt(before.path());
    core::HostChanges changes;
    changes.pci.insert("0000:17:00.1"); // its "unbind"
    const core::Host next = refreshAt(after.path(), previous, changes);
    const core::Host full = discoverAt(after.path());
    EXPECT_EQ(next.devices, full.devices);
    EXPECT_EQ(next.groups, full.groups);
    EXPECT_EQ(next.devices.size(), previous.devices.size() - 1);
}

// A PF's event without its new VF's "add" (udev delivers them apart): the VF it
// names is a function svad did not have, so the functions are listed after all.
TEST(Refresh, AVfNamedByItsPfIsListedWithoutItsAdd) {
    Dir before;
    Dir after;
    auto spec = host();
    hostgen::writeTree(spec, before.path());
    spec.devices[0].sriov->numVfs = 3;
    hostgen::writeTree(spec, after.path());
    const core::Host previous = discoverAt(before.path());
    core::HostChanges changes;
    changes.pci.insert("0000:3b:00.0");
    const core::Host next = refreshAt(after.path(), previous, changes);
    const core::Host full = discoverAt(after.path());
    EXPECT_EQ(next.devices, full.devices);
    EXPECT_EQ(next.groups, full.groups);
    EXPECT_EQ(next.devices.size(), previous.devices.size() + 1);
}

TEST(Refresh, NoChangesCopiesThePreviousHost) {
    Dir before;
    hostgen::writeTree(host(), before.path());
    const core::Host previous = discoverAt(before.path());
    const core::Host next = refreshAt(before.path(), previous, core::HostChanges{});
    EXPECT_EQ(next.devices, previous.devices);
    EXPECT_EQ(next.groups, previous.groups);
}

TEST(HotplugEvents, MapToChanges) {
    core::HostChanges c;
    EXPECT_TRUE(
        core::addEvent(c, {"add", "pci", "0000:6a:02.0", "/devices/pci0000:6a/0000:6a:02.0", ""}));
    EXPECT_TRUE(core::addEvent(
        c, {"add", "vfio-dev", "vfio3", "/devices/pci0000:3b/0000:3b:10.1/vfio-dev/vfio3", ""}));
    EXPECT_EQ(c.pci, (std::set<std::string>{"0000:6a:02.0", "0000:3b:10.1"}));
    EXPECT_TRUE(c.pciAddedOrRemoved);
    EXPECT_FALSE(c.queues || c.vdpa || c.units);
    core::HostChanges bound;
    EXPECT_TRUE(core::addEvent(
        bound, {"bind", "pci", "0000:6a:02.0", "/devices/pci0000:6a/0000:6a:02.0", "idxd"}));
    EXPECT_TRUE(core::addEvent(bound, {"remove", "vfio-dev", "vfio3",
                                       "/devices/pci0000:3b/0000:3b:10.1/vfio-dev/vfio3", ""}));
    EXPECT_FALSE(bound.pciAddedOrRemoved) << "a bind, and a cdev that went: the functions stay";
    EXPECT_TRUE(core::addEvent(
        c, {"change", "dsa", "wq0.1", "/devices/pci0000:6a/0000:6a:01.0/dsa0/wq0.1", ""}));
    EXPECT_TRUE(
        core::addEvent(c, {"bind", "vdpa", "vdpa0", "/devices/vdpasim_net/vdpa0", "vhost_vdpa"}));
    EXPECT_TRUE(core::addEvent(c, {"add", "iommu", "dmar1", "/devices/virtual/iommu/dmar1", ""}));
    EXPECT_TRUE(c.queues && c.vdpa && c.units);

    core::HostChanges none;
    EXPECT_FALSE(core::addEvent(none, {"add", "usb", "1-1", "/devices/usb1/1-1", ""}));
    EXPECT_FALSE(
        core::addEvent(none, {"", "pci", "0000:00:01.0", "/devices/pci0000:00/0000:00:01.0", ""}));
    EXPECT_FALSE(
        core::addEvent(none, {"add", "vfio-dev", "vfio9", "/devices/virtual/vfio-dev/vfio9", ""}));
    EXPECT_TRUE(none.empty());
}

TEST(Journal, RecordFields) {
    auto f = linux_impl::journalFields(log::Priority::Warning, "context degraded",
                                       {{"VM", "vm1"},
                                        {"device", "0000:17:00.0"},
                                        {"_PID", "1"},
                                        {"MESSAGE", "spoof"},
                                        {"plugin-name", "x"}});
    std::vector<std::string> want = {
        "MESSAGE=context degraded", "PRIORITY=4", "SYSLOG_IDENTIFIER=svad", "VM=vm1",
        "DEVICE=0000:17:00.0",      "PID=1",      "SVAD_MESSAGE=spoof",     "PLUGIN_NAME=x"};
    EXPECT_EQ(f, want);
}

TEST(Journal, Targets) {
    EXPECT_EQ(linux_impl::parseLogTarget("auto"), linux_impl::LogTarget::Auto);
    EXPECT_EQ(linux_impl::parseLogTarget("journal"), linux_impl::LogTarget::Journal);
    EXPECT_EQ(linux_impl::parseLogTarget("stderr"), linux_impl::LogTarget::Stderr);
    EXPECT_FALSE(linux_impl::parseLogTarget("syslog"));
    EXPECT_TRUE(linux_impl::useJournal(linux_impl::LogTarget::Journal));
    EXPECT_FALSE(linux_impl::useJournal(linux_impl::LogTarget::Stderr));
    ::unsetenv("JOURNAL_STREAM");
    EXPECT_FALSE(linux_impl::useJournal(linux_impl::LogTarget::Auto));
}

std::string exposition(const metrics::Metrics& m) {
    return prometheus::TextSerializer().Serialize(m.registry()->Collect());
}

TEST(Metrics, SeriesFollowTheHost) {
    metrics::Metrics m("1.2.3", "sim");
    core::Host host;
    core::PciDevice a;
    a.address = "0000:00:01.0";
    a.driver = "nvme";
    host.devices.push_back(a);
    m.updateHost(host);
    std::string text = exposition(m);
    EXPECT_NE(text.find("svad_devices{driver=\"nvme\",kind=\"pci\"} 1"), std::string::npos) << text;
    EXPECT_NE(text.find("svad_build_info{backend=\"sim\",version=\"1.2.3\"} 1"), std::string::npos)
        << text;
    // The driver changes: the old series goes rather than staying at 0.
    host.devices[0].driver = "vfio-pci";
    m.updateHost(host);
    text = exposition(m);
    EXPECT_EQ(text.find("driver=\"nvme\""), std::string::npos) << text;
    EXPECT_NE(text.find("svad_devices{driver=\"vfio-pci\",kind=\"pci\"} 1"), std::string::npos)
        << text;
    EXPECT_NE(text.find("svad_iommu_groups{viable=\"true\"} 0"), std::string::npos) << text;
    EXPECT_TRUE(m.ports().empty()); // not serving
}

TEST(Metrics, ReleaseLabels) {
    EXPECT_EQ(metrics::Metrics::releaseLabel("released by the owner"), "owner");
    EXPECT_EQ(metrics::Metrics::releaseLabel("owner process exited"), "owner_exited");
    EXPECT_EQ(metrics::Metrics::releaseLabel("owner left the bus"), "owner_left_bus");
    EXPECT_EQ(metrics::Metrics::releaseLabel("anything else"), "other");
}

} // namespace
} // namespace svad
