// DriverBinder on a real sysfs: driver_override, unbind, drivers_probe.
#pragma once

#include "svad/ports/driver_binder.h"

#include <string>

namespace svad::linux_impl {

class DriverBinderLinux final : public ports::DriverBinder {
public:
    explicit DriverBinderLinux(std::string sysfsRoot) : root_(std::move(sysfsRoot)) {}
    ports::Result<std::string> bind(const std::string& address, const std::string& driver) override;
    ports::Status restore(const std::string& address, const std::string& previous) override;
    ports::Result<std::string> vfioNode(const std::string& address) override;

private:
    std::string root_;
};

// Shared by both binders: a name sysfs may carry (no '/', not '.' or '..').
bool validDriverName(const std::string& name);
// Writes `value` to an existing sysfs attribute in one write(2).
ports::Status writeAttribute(const std::string& path, const std::string& value);
// The basename of the driver link of a PCI function; empty when unbound.
std::string currentDriver(const std::string& deviceDir);
// The first entry of deviceDir/vfio-dev, or an error naming the address.
ports::Result<std::string> readVfioNode(const std::string& deviceDir, const std::string& address);

} // namespace svad::linux_impl
