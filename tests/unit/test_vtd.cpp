// Unit tests of the VT-d CAP/ECAP decoder.
#include "svad/core/vtd.h"

#include <cstdint>
#include <functional>
#include <gtest/gtest.h>
#include <string>
#include <vector>

namespace {

using svad::core::decodeVtd;
using svad::core::VtdCaps;

constexpr uint64_t bit(unsigned n) {
    return uint64_t{1} << n;
}

TEST(Vtd, ZeroRegisters) {
    const VtdCaps v = decodeVtd(0, 0);
    EXPECT_EQ(v.cap, 0u);
    EXPECT_EQ(v.ecap, 0u);
    EXPECT_FALSE(v.scalableMode);
    EXPECT_FALSE(v.pasid);
    EXPECT_EQ(v.pasidWidth, 0u);
    EXPECT_FALSE(v.nesting);
    EXPECT_FALSE(v.pageRequest);
    EXPECT_FALSE(v.firstLevel);
    EXPECT_FALSE(v.secondLevel);
    EXPECT_FALSE(v.deviceTlb);
    EXPECT_FALSE(v.queuedInvalidation);
    EXPECT_FALSE(v.interruptRemapping);
    EXPECT_FALSE(v.passThrough);
    EXPECT_EQ(v.maxAddressWidth, 1u); // MGAW + 1
    EXPECT_EQ(v.sagaw, 0u);
    EXPECT_FALSE(v.firstLevel1GiB);
    EXPECT_FALSE(v.firstLevel5Level);
}

// A real pair read from /sys/class/iommu/dmar0/intel-iommu on a Xeon W-1290P
// (Comet Lake, legacy mode only): cap d2008c40660462, ecap f050da.
TEST(Vtd, CometLakeLegacyUnit) {
    const VtdCaps v = decodeVtd(0xd2008c40660462ull, 0xf050daull);
    EXPECT_EQ(v.cap, 0xd2008c40660462ull);
    EXPECT_EQ(v.ecap, 0xf050daull);
    EXPECT_EQ(v.maxAddressWidth, 39u); // MGAW 0x26
    EXPECT_EQ(v.sagaw, 0x4u);          // 4-level second-level tables
    EXPECT_FALSE(v.firstLevel1GiB);
    EXPECT_FALSE(v.firstLevel5Level);
    EXPECT_TRUE(v.queuedInvalidation); // 0xda: bits 1, 3, 4, 6, 7
    EXPECT_TRUE(v.interruptRemapping);
    EXPECT_TRUE(v.passThrough);
    EXPECT_FALSE(v.deviceTlb);
    EXPECT_FALSE(v.scalableMode);
    EXPECT_FALSE(v.pasid);
    EXPECT_EQ(v.pasidWidth, 0u);
    EXPECT_FALSE(v.pageRequest);
    EXPECT_FALSE(v.nesting);
    EXPECT_FALSE(v.firstLevel);
    EXPECT_FALSE(v.secondLevel);
}

// A scalable-mode unit of the kind SVA needs (Sapphire Rapids-like).
TEST(Vtd, ScalableModeUnitWithPasid) {
    const uint64_t cap = bit(60) | bit(56) | (uint64_t{0x33} << 16) | (uint64_t{0x0c} << 8);
    const uint64_t ecap = bit(47) | bit(46) | bit(43) | bit(40) | (uint64_t{0x13} << 35) | bit(29) |
                          bit(26) | bit(6) | bit(3) | bit(2) | bit(1);
    const VtdCaps v = decodeVtd(cap, ecap);
    EXPECT_EQ(v.maxAddressWidth, 52u);
    EXPECT_EQ(v.sagaw, 0x0cu);
    EXPECT_TRUE(v.firstLevel1GiB);
    EXPECT_TRUE(v.firstLevel5Level);
    EXPECT_TRUE(v.scalableMode);
    EXPECT_TRUE(v.pasid);
    EXPECT_EQ(v.pasidWidth, 20u); // PSS 19
    EXPECT_TRUE(v.pageRequest);
    EXPECT_TRUE(v.nesting);
    EXPECT_TRUE(v.firstLevel);
    EXPECT_TRUE(v.secondLevel);
    EXPECT_TRUE(v.deviceTlb);
    EXPECT_TRUE(v.queuedInvalidation);
    EXPECT_TRUE(v.interruptRemapping);
    EXPECT_TRUE(v.passThrough);
}

TEST(Vtd, PssIgnoredWithoutPasid) {
    const VtdCaps v = decodeVtd(0, uint64_t{0x13} << 35);
    EXPECT_FALSE(v.pasid);
    EXPECT_EQ(v.pasidWidth, 0u);
}

TEST(Vtd, PssFieldExtremes) {
    EXPECT_EQ(decodeVtd(0, bit(40)).pasidWidth, 1u);
    EXPECT_EQ(decodeVtd(0, bit(40) | (uint64_t{0x1f} << 35)).pasidWidth, 32u);
}

TEST(Vtd, MgawAndSagawFieldsAreIsolated) {
    // All other bits set: the fields must not pick up their neighbours.
    const uint64_t others = ~((uint64_t{0x3f} << 16) | (uint64_t{0x1f} << 8));
    const VtdCaps v = decodeVtd(others | (uint64_t{0x2f} << 16) | (uint64_t{0x06} << 8), 0);
    EXPECT_EQ(v.maxAddressWidth, 48u);
    EXPECT_EQ(v.sagaw, 0x06u);
    EXPECT_EQ(decodeVtd(uint64_t{0x3f} << 16, 0).maxAddressWidth, 64u);
    EXPECT_EQ(decodeVtd(uint64_t{0x1f} << 8, 0).sagaw, 0x1fu);
}

// Each flag is driven by exactly one bit, and no other bit changes it.
struct FlagCase {
    std::string name;
    bool inEcap;
    unsigned bitNo;
    std::function<bool(const VtdCaps&)> get;
};

class VtdFlag : public testing::TestWithParam<FlagCase> {};

TEST_P(VtdFlag, SetByItsBitOnly) {
    const FlagCase& f = GetParam();
    const uint64_t only = bit(f.bitNo);
    const VtdCaps on = f.inEcap ? decodeVtd(0, only) : decodeVtd(only, 0);
    EXPECT_TRUE(f.get(on)) << f.name;
    const uint64_t allBut = ~only;
    const VtdCaps off =
        f.inEcap ? decodeVtd(~uint64_t{0}, allBut) : decodeVtd(allBut, ~uint64_t{0});
    EXPECT_FALSE(f.get(off)) << f.name;
}

INSTANTIATE_TEST_SUITE_P(
    VtdBits, VtdFlag,
    testing::Values(FlagCase{"QI", true, 1, [](const VtdCaps& v) { return v.queuedInvalidation; }},
                    FlagCase{"DT", true, 2, [](const VtdCaps& v) { return v.deviceTlb; }},
                    FlagCase{"IR", true, 3, [](const VtdCaps& v) { return v.interruptRemapping; }},
                    FlagCase{"PT", true, 6, [](const VtdCaps& v) { return v.passThrough; }},
                    FlagCase{"NEST", true, 26, [](const VtdCaps& v) { return v.nesting; }},
                    FlagCase{"PRS", true, 29, [](const VtdCaps& v) { return v.pageRequest; }},
                    FlagCase{"PASID", true, 40, [](const VtdCaps& v) { return v.pasid; }},
                    FlagCase{"SMTS", true, 43, [](const VtdCaps& v) { return v.scalableMode; }},
                    FlagCase{"SLTS", true, 46, [](const VtdCaps& v) { return v.secondLevel; }},
                    FlagCase{"FLTS", true, 47, [](const VtdCaps& v) { return v.firstLevel; }},
                    FlagCase{"FL1GP", false, 56, [](const VtdCaps& v) { return v.firstLevel1GiB; }},
                    FlagCase{"FL5LP", false, 60,
                             [](const VtdCaps& v) { return v.firstLevel5Level; }}),
    [](const testing::TestParamInfo<FlagCase>& info) { return info.param.name; });

} // namespace
