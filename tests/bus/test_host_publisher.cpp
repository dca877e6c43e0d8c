// The host's rows are worked out off the loop (Subtree::prepare) and swapped in
// on it: what a change names is the difference from the rows published when it
// goes in, even when another change went in after it was worked out.
#include "fixture.h"
#include "svad/core/paths.h"
#include "svad/dbus/host_publisher.h"

#include <gtest/gtest.h>
#include <memory>
#include <string>
#include <systemd/sd-bus.h>
#include <vector>

namespace svad::dbus {
namespace {

using Units = Subtree<core::IommuUnit>;

// A connection of its own to a private bus, with svad's object manager (the
// InterfacesAdded and InterfacesRemoved signals go out from it).
struct Bus {
    explicit Bus(const std::string& address) {
        EXPECT_GE(sd_bus_new(&bus), 0);
        EXPECT_GE(sd_bus_set_address(bus, address.c_str()), 0);
        EXPECT_GE(sd_bus_set_bus_client(bus, 1), 0);
        EXPECT_GE(sd_bus_start(bus), 0);
        EXPECT_GE(sd_bus_add_object_manager(bus, nullptr, "/org/svad/Svad1"), 0);
    }
    ~Bus() { sd_bus_flush_close_unref(bus); }
    Bus(const Bus&) = delete;
    Bus& operator=(const Bus&) = delete;
    sd_bus* bus = nullptr;
};

Units::Rows rowsOf(const std::vector<core::IommuUnit>& units) {
    Units::Rows out;
    for (const auto& u : units) {
        out.emplace(core::unitPath(u.name), u);
    }
    return out;
}

core::IommuUnit unit(const std::string& name, const std::string& version = "1:0") {
    core::IommuUnit u;
    u.name = name;
    u.kind = core::UnitKind::IntelVtd;
    u.version = version;
    return u;
}

// The units' subtree served on a private bus of its own.
struct UnitsOnABus {
    svad::test::TempDir dir;
    svad::test::PrivateBus daemon{dir.path()};
    Bus connection{daemon.address()};
    Units units{connection.bus, "/org/svad/Svad1/unit/"};
    EmitFailures failed;
};

TEST(HostPublisher, AChangeNamesWhatGoesWhatComesAndWhatDiffers) {
    UnitsOnABus t;
    Units& units = t.units;
    EmitFailures& failed = t.failed;

    auto first = units.prepare(rowsOf({unit("dmar0"), unit("dmar1")}));
    EXPECT_EQ(first.added,
              (std::vector<std::string>{core::unitPath("dmar0"), core::unitPath("dmar1")}));
    units.removeGone(first, true, failed);
    (void)units.addOrUpdate(first, true, failed);
    ASSERT_EQ(units.rows().size(), 2U);

    auto next = units.prepare(rowsOf({unit("dmar1", "6:0"), unit("dmar2")}));
    EXPECT_EQ(next.removed, std::vector<std::string>{core::unitPath("dmar0")});
    EXPECT_EQ(next.added, std::vector<std::string>{core::unitPath("dmar2")});
    EXPECT_EQ(next.changed, std::vector<std::string>{core::unitPath("dmar1")});
    units.removeGone(next, true, failed);
    auto replaced = units.addOrUpdate(next, true, failed);
    ASSERT_NE(replaced, nullptr);
    EXPECT_EQ(replaced->count(core::unitPath("dmar0")), 1U); // the rows it took the place of
    EXPECT_EQ(units.rows().count(core::unitPath("dmar0")), 0U);
    EXPECT_EQ(units.rows().at(core::unitPath("dmar1")).version, "6:0");
    EXPECT_EQ(failed.count, 0U);
}

// Two changes worked out against the same rows (a hotplug re-read and a
// rescan that crossed): the second goes in after the first, and must name
// what differs from the first, not from the rows both started from.
TEST(HostPublisher, AChangeWorkedOutAgainstReplacedRowsIsWorkedOutAgain) {
    UnitsOnABus t;
    Units& units = t.units;
    EmitFailures& failed = t.failed;

    auto a = units.prepare(rowsOf({unit("dmar0")}));
    auto b = units.prepare(rowsOf({unit("dmar1")}));
    EXPECT_EQ(b.removed, std::vector<std::string>{}); // against the empty rows both saw

    units.removeGone(a, true, failed);
    (void)units.addOrUpdate(a, true, failed);
    units.removeGone(b, true, failed);
    EXPECT_EQ(b.removed, std::vector<std::string>{core::unitPath("dmar0")});
    EXPECT_EQ(b.added, std::vector<std::string>{core::unitPath("dmar1")});
    (void)units.addOrUpdate(b, true, failed);
    ASSERT_EQ(units.rows().size(), 1U);
    EXPECT_EQ(units.rows().count(core::unitPath("dmar1")), 1U);
    EXPECT_EQ(failed.count, 0U);
}

} // namespace
} // namespace svad::dbus
