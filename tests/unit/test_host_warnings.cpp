// A host's warnings in the log: each once when it appears, once (info) when it
// clears, again when it comes back; nothing for a host applied again unchanged.
#include "log_capture.h"
#include "svad/core/host_warnings.h"

#include <gtest/gtest.h>
#include <string>
#include <vector>

namespace svad::core {
namespace {

using svad::test::LogCapture;

// A warning on each kind of object, and one of the host's own.
Host warned() {
    Host h;
    h.warnings.push_back("cannot read /sys/bus/dsa");
    PciDevice d;
    d.address = "0000:00:01.0";
    d.warnings.push_back("config: loop at 0x100");
    h.devices.push_back(d);
    PciDevice quiet;
    quiet.address = "0000:00:02.0";
    h.devices.push_back(quiet);
    IommuGroup g;
    g.id = 7;
    g.warnings.push_back("reserved_regions unreadable");
    h.groups.push_back(g);
    IommuUnit u;
    u.name = "dmar0";
    u.warnings.push_back("cap unreadable");
    h.units.push_back(u);
    SiovQueue q;
    q.name = "wq0.0";
    q.warnings.push_back("mode unreadable");
    h.queues.push_back(q);
    VdpaDevice v;
    v.name = "vdpa0";
    v.warnings.push_back("no management device");
    h.vdpa.push_back(v);
    return h;
}

TEST(HostWarnings, EachIsLoggedOnceWhileTheHostKeepsIt) {
    LogCapture log;
    HostWarnings warnings;
    warnings.update(warned());
    EXPECT_EQ(log.lines, (std::vector<std::string>{
                             "svad: warning: cannot read /sys/bus/dsa",
                             "svad: warning: config: loop at 0x100 [DEVICE=0000:00:01.0]",
                             "svad: warning: reserved_regions unreadable [GROUP=7]",
                             "svad: warning: cap unreadable [UNIT=dmar0]",
                             "svad: warning: mode unreadable [QUEUE=wq0.0]",
                             "svad: warning: no management device [DEVICE=vdpa0]",
                         }));
    EXPECT_EQ(warnings.size(), 6u);

    log.lines.clear();
    warnings.update(warned()); // a rescan or hotplug re-read that finds the same
    EXPECT_TRUE(log.lines.empty()) << log.all();

    // A new warning on a device that had none: only that one.
    Host more = warned();
    more.devices[1].warnings.push_back("config: truncated at 64 bytes");
    warnings.update(more);
    EXPECT_EQ(log.lines, (std::vector<std::string>{
                             "svad: warning: config: truncated at 64 bytes [DEVICE=0000:00:02.0]",
                         }));
    EXPECT_EQ(warnings.size(), 7u);
}

TEST(HostWarnings, ACleanHostClearsThemOnceAndAReturnIsToldAgain) {
    LogCapture log;
    HostWarnings warnings;
    Host h = warned();
    warnings.update(h);
    log.lines.clear();

    h.devices[0].warnings.clear();
    warnings.update(h);
    EXPECT_EQ(log.lines, (std::vector<std::string>{
                             "svad: info: warning cleared: config: loop at 0x100 "
                             "[DEVICE=0000:00:01.0]",
                         }));
    log.lines.clear();
    warnings.update(h);
    EXPECT_TRUE(log.lines.empty()) << log.all();

    warnings.update(warned()); // it came back
    EXPECT_EQ(log.lines, (std::vector<std::string>{
                             "svad: warning: config: loop at 0x100 [DEVICE=0000:00:01.0]",
                         }));
    log.lines.clear();

    warnings.update(Host{});
    EXPECT_EQ(log.lines.size(), 6u) << log.all();
    EXPECT_EQ(warnings.size(), 0u);
}

TEST(HostWarnings, TheSameTextOnAnotherObjectIsAnotherWarning) {
    LogCapture log;
    HostWarnings warnings;
    Host h;
    PciDevice d;
    d.address = "0000:00:01.0";
    d.warnings.push_back("unreadable");
    h.devices.push_back(d);
    warnings.update(h);
    log.lines.clear();

    // Moved to another function, to a vDPA device of the same name, to the host.
    Host moved;
    d.address = "0000:00:03.0";
    moved.devices.push_back(d);
    VdpaDevice v;
    v.name = "0000:00:01.0";
    v.warnings.push_back("unreadable");
    moved.vdpa.push_back(v);
    moved.warnings.push_back("unreadable");
    warnings.update(moved);
    EXPECT_EQ(log.lines, (std::vector<std::string>{
                             "svad: warning: unreadable",
                             "svad: warning: unreadable [DEVICE=0000:00:03.0]",
                             "svad: warning: unreadable [DEVICE=0000:00:01.0]",
                             "svad: info: warning cleared: unreadable [DEVICE=0000:00:01.0]",
                         }));
}

TEST(HostWarnings, WhatIsRememberedIsTheLastHostsNoMore) {
    LogCapture log;
    HostWarnings warnings;
    // Churn: every host has warnings on devices the last one did not have.
    for (int i = 0; i < 100; ++i) {
        Host h;
        for (int k = 0; k < 10; ++k) {
            PciDevice d;
            d.address = "0000:" + std::to_string(i) + ":00." + std::to_string(k);
            d.warnings.push_back("unreadable");
            d.warnings.push_back("unreadable"); // listed twice: one warning
            h.devices.push_back(d);
        }
        warnings.update(h);
        EXPECT_EQ(warnings.size(), 10u);
    }
    // 100 hosts of 10 new warnings each, and 99 times 10 cleared.
    EXPECT_EQ(log.lines.size(), 100u * 10u + 99u * 10u);
}

} // namespace
} // namespace svad::core
