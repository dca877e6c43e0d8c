// The port for rebinding a PCI function to another driver (driver_override),
// which the vfio plugin uses for auto_bind. linux: sysfs writes under the
// sysfs root; sim: the same change made to a generated tree, and the sim
// kernel told of the new VFIO cdev.
#pragma once

#include "svad/ports/kernel.h"

#include <string>

namespace svad::ports {

class DriverBinder {
public:
    virtual ~DriverBinder() = default;
    // Binds `address` to `driver` (driver_override, unbind, drivers_probe);
    // returns the driver it had, empty when it had none. Already bound to
    // `driver`: nothing changes and the answer is `driver`.
    virtual Result<std::string> bind(const std::string& address, const std::string& driver) = 0;
    // Clears driver_override and gives `address` back to `previous` (empty:
    // leaves it unbound).
    virtual Status restore(const std::string& address, const std::string& previous) = 0;
    // The VFIO cdev (vfioN) sysfs shows for `address` now.
    virtual Result<std::string> vfioNode(const std::string& address) = 0;
};

} // namespace svad::ports
