// One PASID-width rule for the engine and the sim kernel.
#include "svad/core/pasid_width.h"
#include "svad/sim/kernel_sim.h"

#include <gtest/gtest.h>

namespace svad::core {
namespace {

PciDevice function(const std::string& address, const std::string& unit, uint32_t width,
                   const std::string& physfn = {}) {
    PciDevice d;
    d.address = address;
    d.iommuUnit = unit;
    d.physfn = physfn;
    d.caps.pasid.present = width > 0;
    d.caps.pasid.maxWidth = width;
    return d;
}

IommuUnit unit(const std::string& name, bool pasid, uint32_t width) {
    IommuUnit u;
    u.name = name;
    u.vtd = VtdCaps{};
    u.vtd->pasid = pasid;
    u.vtd->pasidWidth = width; // what PSS says, whether or not ECAP.PASID is set
    return u;
}

TEST(PasidWidth, OneRuleForTheEngineAndTheSim) {
    Host host;
    host.units = {unit("dmar0", true, 20), unit("dmar1", true, 8), unit("dmar2", false, 20)};
    host.devices = {
        function("0000:00:01.0", "dmar0", 16),                // its own: 16
        function("0000:00:02.0", "dmar1", 20),                // the unit's: 8
        function("0000:00:03.0", "dmar2", 20),                // a unit without PASIDs: 0
        function("0000:00:04.0", "dmar0", 0),                 // no capability: 0
        function("0000:00:05.0", "dmar0", 0, "0000:00:01.0"), // a VF: its PF's, 16
        function("0000:00:06.0", "dmar0", 31),                // a broken capability: 20 at most
        function("0000:00:07.0", "", 10),                     // no unit known: its own
    };
    const std::vector<uint32_t> expected = {16, 8, 0, 0, 16, 20, 10};
    for (size_t i = 0; i < host.devices.size(); ++i) {
        const PciDevice& d = host.devices[i];
        const PciDevice* pf = d.physfn.empty() ? nullptr : &host.devices[0];
        EXPECT_EQ(pasidWidth(d, pf, host.units), expected[i]) << d.address;
        // The sim kernel accepts exactly the range the engine hands out from.
        EXPECT_EQ(sim::SimConfig::pasidLog2(host, d.address), expected[i]) << d.address;
    }
}

} // namespace
} // namespace svad::core
