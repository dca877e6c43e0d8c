// Discovery: reads the host's IOMMU topology through the Sysfs port and
// returns a snapshot. Pure with respect to the port: no other I/O.
#pragma once

#include "svad/core/model.h"
#include "svad/ports/sysfs.h"

namespace svad::core {

Host discover(const ports::Sysfs& sysfs);

} // namespace svad::core
