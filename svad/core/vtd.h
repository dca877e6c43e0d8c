// Intel VT-d capability (CAP_REG) and extended capability (ECAP_REG) decoding,
// as exposed by /sys/class/iommu/dmarN/intel-iommu/{cap,ecap}.
#pragma once

#include "svad/core/model.h"

#include <cstdint>

namespace svad::core {

VtdCaps decodeVtd(uint64_t cap, uint64_t ecap);

} // namespace svad::core
