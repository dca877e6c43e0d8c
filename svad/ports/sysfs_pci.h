// What both DriverBinder implementations (svad/linux and svad/sim) do to a
// sysfs tree's PCI layout, so that the sim never includes the linux backend.
// Not part of libsvad_core (it reads and writes files): the svad_sysfs_pci
// library, linked by svad_linux and svad_sim.
#pragma once

#include "svad/ports/kernel.h"

#include <string>

namespace svad::sysfs_pci {

// A name sysfs may carry (no '/', not '.' or '..').
bool validDriverName(const std::string& name);
// Writes `value` to an existing sysfs attribute in one write(2).
ports::Status writeAttribute(const std::string& path, const std::string& value);
// The basename of the driver link of a PCI function; empty when unbound.
std::string currentDriver(const std::string& deviceDir);
// The function's driver_override, empty when none is set ("(null)") or the
// attribute cannot be read.
std::string currentOverride(const std::string& deviceDir);
// The first entry of deviceDir/vfio-dev, or an error naming the address.
ports::Result<std::string> readVfioNode(const std::string& deviceDir, const std::string& address);

} // namespace svad::sysfs_pci
