// The host index: every lookup finds what a walk of the host's lists would,
// points into the host it was built on, and follows no other.
#include "svad/core/host_index.h"

#include <gtest/gtest.h>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace svad::core {
namespace {

PciDevice function(const std::string& address, std::optional<uint32_t> group,
                   uint32_t pasidWidth = 0, const std::string& unit = "dmar0") {
    PciDevice d;
    d.address = address;
    d.group = group;
    d.iommuUnit = unit;
    if (pasidWidth != 0) {
        d.caps.pasid.present = true;
        d.caps.pasid.maxWidth = pasidWidth;
    }
    return d;
}

IommuGroup group(uint32_t id, std::vector<std::string> devices) {
    IommuGroup g;
    g.id = id;
    g.devices = std::move(devices);
    return g;
}

SiovQueue queue(const std::string& name, const std::string& parent) {
    SiovQueue q;
    q.name = name;
    q.parentDevice = parent;
    return q;
}

VdpaDevice vdpa(const std::string& name, const std::string& parent) {
    VdpaDevice v;
    v.name = name;
    v.parentDevice = parent;
    return v;
}

// dsa0's function with two queues, a NIC with a vDPA device, a PF and its VF,
// a software vDPA device, a function in no group and one whose group is not listed.
Host sample() {
    Host h;
    IommuUnit u;
    u.name = "dmar0";
    u.vtd = VtdCaps{};
    u.vtd->pasid = true;
    u.vtd->pasidWidth = 14;
    h.units.push_back(u);
    h.devices.push_back(function("0000:00:01.0", 1, 20));
    h.devices.push_back(function("0000:00:02.0", 2));
    h.devices.push_back(function("0000:00:03.0", 3, 8));
    PciDevice vf = function("0000:00:03.1", 3);
    vf.physfn = "0000:00:03.0";
    h.devices.push_back(vf);
    h.devices.push_back(function("0000:00:04.0", std::nullopt));
    h.devices.push_back(function("0000:00:05.0", 99));
    h.groups.push_back(group(1, {"0000:00:01.0"}));
    h.groups.push_back(group(2, {"0000:00:02.0"}));
    h.groups.push_back(group(3, {"0000:00:03.0", "0000:00:03.1"}));
    h.queues.push_back(queue("wq0.0", "0000:00:01.0"));
    h.queues.push_back(queue("wq0.1", "0000:00:01.0"));
    h.vdpa.push_back(vdpa("vdpa0", "0000:00:02.0"));
    h.vdpa.push_back(vdpa("vdpa1", ""));
    return h;
}

std::vector<std::string> strings(std::span<const std::string_view> views) {
    return {views.begin(), views.end()};
}

TEST(HostIndex, FindsEveryObjectOfItsHostInPlace) {
    const HostIndex index(std::make_shared<const Host>(sample()));
    const Host& h = index.host();
    for (const auto& d : h.devices) {
        EXPECT_EQ(index.pci(d.address), &d) << d.address;
        EXPECT_TRUE(index.has(d.address));
    }
    for (const auto& g : h.groups) {
        EXPECT_EQ(index.group(g.id), &g) << g.id;
    }
    for (const auto& q : h.queues) {
        EXPECT_EQ(index.queue(q.name), &q) << q.name;
        EXPECT_TRUE(index.has(q.name));
    }
    for (const auto& v : h.vdpa) {
        EXPECT_EQ(index.vdpa(v.name), &v) << v.name;
        EXPECT_TRUE(index.has(v.name));
    }
    EXPECT_EQ(index.groupOf(h.devices[3]), &h.groups[2]);
}

TEST(HostIndex, WhatTheHostLacksIsNull) {
    const HostIndex index(std::make_shared<const Host>(sample()));
    EXPECT_EQ(index.pci("0000:00:09.0"), nullptr);
    EXPECT_EQ(index.pci(""), nullptr);
    EXPECT_EQ(index.pci("0000:00:01"), nullptr); // no prefix match
    EXPECT_EQ(index.vdpa("vdpa9"), nullptr);
    EXPECT_EQ(index.queue("wq9.9"), nullptr);
    EXPECT_EQ(index.group(42), nullptr);
    // Each kind by its own name only.
    EXPECT_EQ(index.pci("vdpa0"), nullptr);
    EXPECT_EQ(index.vdpa("wq0.0"), nullptr);
    EXPECT_EQ(index.queue("0000:00:01.0"), nullptr);
    EXPECT_FALSE(index.has("0000:00:09.0"));
    EXPECT_FALSE(index.has(""));
    // In no group, or in one the host does not list.
    EXPECT_EQ(index.groupOf(*index.pci("0000:00:04.0")), nullptr);
    EXPECT_EQ(index.groupOf(*index.pci("0000:00:05.0")), nullptr);

    const HostIndex empty;
    EXPECT_TRUE(empty.host().devices.empty());
    EXPECT_EQ(empty.pci("0000:00:01.0"), nullptr);
    EXPECT_TRUE(empty.childrenOf("0000:00:01.0").empty());
    const HostIndex null(nullptr);
    EXPECT_EQ(null.queue("wq0.0"), nullptr);
}

TEST(HostIndex, ChildrenAreTheQueuesAndVdpaDevicesOnAFunction) {
    const HostIndex index(std::make_shared<const Host>(sample()));
    EXPECT_EQ(strings(index.childrenOf("0000:00:01.0")),
              (std::vector<std::string>{"wq0.0", "wq0.1"}));
    EXPECT_EQ(strings(index.childrenOf("0000:00:02.0")), std::vector<std::string>{"vdpa0"});
    EXPECT_TRUE(index.childrenOf("0000:00:03.0").empty());
    EXPECT_TRUE(index.childrenOf("0000:00:09.0").empty());
    // A software vDPA device has no parent function: it is no one's child.
    EXPECT_TRUE(index.childrenOf("").empty());
}

TEST(HostIndex, PasidWidthIsTheFunctionsOrItsPfsWithinItsUnit) {
    const HostIndex index(std::make_shared<const Host>(sample()));
    EXPECT_EQ(index.pasidWidth(*index.pci("0000:00:01.0")), 14u); // the unit's 14 < 20
    EXPECT_EQ(index.pasidWidth(*index.pci("0000:00:03.0")), 8u);
    EXPECT_EQ(index.pasidWidth(*index.pci("0000:00:03.1")), 8u); // its PF's
    EXPECT_EQ(index.pasidWidth(*index.pci("0000:00:02.0")), 0u);
    // A VF whose PF is gone from the host has none.
    Host orphan = sample();
    std::erase_if(orphan.devices, [](const PciDevice& d) { return d.address == "0000:00:03.0"; });
    const HostIndex o(std::make_shared<const Host>(orphan));
    EXPECT_EQ(o.pasidWidth(*o.pci("0000:00:03.1")), 0u);
}

TEST(HostIndex, ANameListedTwiceFindsTheFirstAsAWalkWould) {
    Host h = sample();
    PciDevice again = function("0000:00:01.0", 2);
    h.devices.push_back(again);
    const HostIndex index(std::make_shared<const Host>(h));
    ASSERT_NE(index.pci("0000:00:01.0"), nullptr);
    EXPECT_EQ(index.pci("0000:00:01.0"), &index.host().devices.front());
}

TEST(HostIndex, KeepsItsHostAliveAndFollowsNoOther) {
    auto shared = std::make_shared<const Host>(sample());
    const Host* raw = shared.get();
    const HostIndex index(shared);
    shared.reset(); // the index's own share keeps it
    EXPECT_EQ(&index.host(), raw);
    const PciDevice* d = index.pci("0000:00:02.0");
    ASSERT_NE(d, nullptr);
    EXPECT_EQ(d->address, "0000:00:02.0");
    ASSERT_NE(index.vdpa("vdpa0"), nullptr);
    EXPECT_EQ(index.vdpa("vdpa0")->parentDevice, "0000:00:02.0");

    // A host without 0000:00:02.0 and vdpa0: its index finds neither, the first still does.
    Host next = sample();
    std::erase_if(next.devices, [](const PciDevice& x) { return x.address == "0000:00:02.0"; });
    std::erase_if(next.vdpa, [](const VdpaDevice& x) { return x.name == "vdpa0"; });
    const HostIndex later(std::make_shared<const Host>(std::move(next)));
    EXPECT_EQ(later.pci("0000:00:02.0"), nullptr);
    EXPECT_EQ(later.vdpa("vdpa0"), nullptr);
    EXPECT_FALSE(later.has("vdpa0"));
    EXPECT_TRUE(later.childrenOf("0000:00:02.0").empty());
    EXPECT_EQ(index.pci("0000:00:02.0"), d);
}

} // namespace
} // namespace svad::core
