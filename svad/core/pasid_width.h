// How many PASID bits a PCI function can use: one rule, for the engine (the
// PASIDs it hands out) and the sim kernel (the range it accepts) alike.
#pragma once

#include "svad/core/model.h"

#include <cstdint>
#include <vector>

namespace svad::core {

// The most PCIe allows (the PASID capability's Max PASID Width goes to 20).
inline constexpr uint32_t kMaxPasidWidth = 20;

// The function's own PASID capability, or its PF's for a VF that has none
// (`pf`, may be null); no wider than its IOMMU unit's PASID width, and 0 when
// that unit is known not to support PASIDs; never more than kMaxPasidWidth.
// 0: no PASIDs.
uint32_t pasidWidth(const PciDevice& dev, const PciDevice* pf, const std::vector<IommuUnit>& units);

} // namespace svad::core
