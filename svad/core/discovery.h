// Discovery: reads the host's IOMMU topology through the Sysfs port and
// returns a snapshot. Pure with respect to the port: no other I/O.
#pragma once

#include "svad/core/model.h"
#include "svad/ports/sysfs.h"

#include <functional>
#include <memory>

namespace svad::core {

Host discover(const ports::Sysfs& sysfs);

// The same scan with `threads` readers, each from `makeSysfs` (a reader is
// used by one thread at a time). Reading sysfs is syscall-bound, so a second
// reader roughly halves a large host's scan on two cores.
using SysfsFactory = std::function<std::unique_ptr<ports::Sysfs>()>;
Host discover(const SysfsFactory& makeSysfs, unsigned threads);

} // namespace svad::core
