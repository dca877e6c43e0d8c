#include "svad/linux/driver_binder_linux.h"

#include "svad/core/parse.h"
#include "svad/ports/sysfs_pci.h"

#include <cerrno>
#include <cstring>
#include <unistd.h>

namespace svad::linux_impl {

using sysfs_pci::currentDriver;
using sysfs_pci::readVfioNode;
using sysfs_pci::validDriverName;
using sysfs_pci::writeAttribute;

namespace {

ports::KernelError error(int err, const std::string& what) {
    return ports::KernelError{err, what + ": " + std::strerror(err)};
}

ports::Status checkNames(const std::string& address, const std::string& driver) {
    if (!core::isPciAddress(address)) {
        return error(EINVAL, "'" + address + "' is not a PCI address");
    }
    if (!driver.empty() && !validDriverName(driver)) {
        return error(EINVAL, "'" + driver + "' is not a driver name");
    }
    return ports::okStatus();
}

} // namespace

ports::Result<std::string> DriverBinderLinux::bind(const std::string& address,
                                                   const std::string& driver) {
    if (auto ok = checkNames(address, driver); !ok) {
        return ok.error();
    }
    const std::string dev = root_ + "/bus/pci/devices/" + address;
    std::string previous = currentDriver(dev);
    if (previous == driver) {
        return previous;
    }
    if (auto r = writeAttribute(dev + "/driver_override", driver); !r) {
        return r.error();
    }
    if (!previous.empty()) {
        if (auto r = writeAttribute(dev + "/driver/unbind", address); !r) {
            (void)writeAttribute(dev + "/driver_override", "\n");
            return r.error();
        }
    }
    if (auto r = writeAttribute(root_ + "/bus/pci/drivers_probe", address); !r) {
        (void)restore(address, previous, "");
        return r.error();
    }
    if (currentDriver(dev) != driver) {
        (void)restore(address, previous, "");
        return error(ENODEV, address + " did not bind to " + driver + " (is it built or loaded?)");
    }
    return previous;
}

ports::Result<ports::DriverState> DriverBinderLinux::state(const std::string& address) {
    if (auto ok = checkNames(address, ""); !ok) {
        return ok.error();
    }
    const std::string dev = root_ + "/bus/pci/devices/" + address;
    if (::access(dev.c_str(), F_OK) != 0) {
        return error(ENODEV, "no PCI function " + address);
    }
    return ports::DriverState{currentDriver(dev), sysfs_pci::currentOverride(dev)};
}

ports::Status DriverBinderLinux::restore(const std::string& address, const std::string& previous,
                                         const std::string& override) {
    if (auto ok = checkNames(address, previous); !ok) {
        return ok;
    }
    if (!override.empty() && !validDriverName(override)) {
        return error(EINVAL, "'" + override + "' is not a driver name");
    }
    const std::string dev = root_ + "/bus/pci/devices/" + address;
    // An empty line clears the override.
    if (auto r = writeAttribute(dev + "/driver_override", "\n"); !r) {
        return r;
    }
    std::string now = currentDriver(dev);
    if (now != previous) {
        if (!now.empty()) {
            if (auto r = writeAttribute(dev + "/driver/unbind", address); !r) {
                return r;
            }
        }
        if (!previous.empty()) {
            if (auto r = writeAttribute(root_ + "/bus/pci/drivers/" + previous + "/bind", address);
                !r) {
                return r;
            }
        }
    }
    // The override the function had before svad rebound it, set last: it
    // steers the next probe, not this one.
    return override.empty() ? ports::okStatus()
                            : writeAttribute(dev + "/driver_override", override);
}

ports::Result<std::string> DriverBinderLinux::vfioNode(const std::string& address) {
    if (!core::isPciAddress(address)) {
        return error(EINVAL, "'" + address + "' is not a PCI address");
    }
    return readVfioNode(root_ + "/bus/pci/devices/" + address, address);
}

} // namespace svad::linux_impl
