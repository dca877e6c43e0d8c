#include "svad/core/pasid_width.h"

#include <algorithm>

namespace svad::core {

uint32_t pasidWidth(const PciDevice& dev, const PciDevice* pf,
                    const std::vector<IommuUnit>& units) {
    const PasidCap* cap = &dev.caps.pasid;
    // VFs share their PF's PASID capability.
    if (!cap->present && !dev.physfn.empty() && pf != nullptr) {
        cap = &pf->caps.pasid;
    }
    if (!cap->present) {
        return 0;
    }
    uint32_t width = std::min(cap->maxWidth, kMaxPasidWidth);
    for (const auto& u : units) {
        if (u.name == dev.iommuUnit && u.vtd) {
            width = u.vtd->pasid ? std::min(width, u.vtd->pasidWidth) : 0;
        }
    }
    return width;
}

} // namespace svad::core
