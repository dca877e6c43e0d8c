// The port for rebinding a PCI function to another driver (driver_override),
// which the vfio plugin uses for auto_bind. linux: sysfs writes under the
// sysfs root; sim: the same change made to a generated tree, and the sim
// kernel told of the new VFIO cdev.
#pragma once

#include "svad/ports/kernel.h"

#include <string>

namespace svad::ports {

// A PCI function's driver as sysfs shows it.
struct DriverState {
    std::string driver;   // empty: unbound
    std::string override; // driver_override, empty when none is set
};

class DriverBinder {
public:
    virtual ~DriverBinder() = default;
    // The driver `address` has now, and its driver_override.
    virtual Result<DriverState> state(const std::string& address) = 0;
    // Binds `address` to `driver` (driver_override, unbind, drivers_probe);
    // returns the driver it had, empty when it had none. Already bound to
    // `driver`: nothing changes and the answer is `driver`.
    virtual Result<std::string> bind(const std::string& address, const std::string& driver) = 0;
    // Gives `address` back to `previous` (empty: leaves it unbound), and its
    // driver_override back to `override` (empty: none).
    virtual Status restore(const std::string& address, const std::string& previous,
                           const std::string& override) = 0;
    // The VFIO cdev (vfioN) sysfs shows for `address` now.
    virtual Result<std::string> vfioNode(const std::string& address) = 0;
};

} // namespace svad::ports
