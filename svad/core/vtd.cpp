// Intel VT-d CAP_REG / ECAP_REG decoding (see vtd.h).
//
// Bit positions from the Intel VT-d specification (rev 4.x/5.x, sections
// 11.4.2 and 11.4.3), cross-checked with the cap_* / ecap_* macros of Linux's
// drivers/iommu/intel/iommu.h.
#include "svad/core/vtd.h"

namespace svad::core {
namespace {

constexpr bool bit(uint64_t reg, unsigned pos) {
    return ((reg >> pos) & 1u) != 0;
}

constexpr uint32_t field(uint64_t reg, unsigned low, unsigned width) {
    return static_cast<uint32_t>((reg >> low) & ((uint64_t{1} << width) - 1));
}

// Capability Register.
constexpr unsigned kCapSagawLow = 8; // 12:8
constexpr unsigned kCapSagawWidth = 5;
constexpr unsigned kCapMgawLow = 16; // 21:16
constexpr unsigned kCapMgawWidth = 6;
constexpr unsigned kCapFl1gp = 56;
constexpr unsigned kCapFl5lp = 60;

// Extended Capability Register.
constexpr unsigned kEcapQi = 1;
constexpr unsigned kEcapDt = 2;
constexpr unsigned kEcapIr = 3;
constexpr unsigned kEcapPt = 6;
constexpr unsigned kEcapNest = 26;
constexpr unsigned kEcapPrs = 29;
constexpr unsigned kEcapPssLow = 35; // 39:35
constexpr unsigned kEcapPssWidth = 5;
constexpr unsigned kEcapPasid = 40;
constexpr unsigned kEcapSmts = 43;
constexpr unsigned kEcapSlts = 46;
constexpr unsigned kEcapFlts = 47;

} // namespace

VtdCaps decodeVtd(uint64_t cap, uint64_t ecap) {
    VtdCaps v;
    v.cap = cap;
    v.ecap = ecap;

    v.queuedInvalidation = bit(ecap, kEcapQi);
    v.deviceTlb = bit(ecap, kEcapDt);
    v.interruptRemapping = bit(ecap, kEcapIr);
    v.passThrough = bit(ecap, kEcapPt);
    v.nesting = bit(ecap, kEcapNest);
    v.pageRequest = bit(ecap, kEcapPrs);
    v.pasid = bit(ecap, kEcapPasid);
    // PSS is the supported PASID width minus one; it means nothing without PASID.
    v.pasidWidth = v.pasid ? field(ecap, kEcapPssLow, kEcapPssWidth) + 1 : 0;
    v.scalableMode = bit(ecap, kEcapSmts);
    v.secondLevel = bit(ecap, kEcapSlts);
    v.firstLevel = bit(ecap, kEcapFlts);

    v.sagaw = field(cap, kCapSagawLow, kCapSagawWidth);
    v.maxAddressWidth = field(cap, kCapMgawLow, kCapMgawWidth) + 1;
    v.firstLevel1GiB = bit(cap, kCapFl1gp);
    v.firstLevel5Level = bit(cap, kCapFl5lp);
    return v;
}

} // namespace svad::core
