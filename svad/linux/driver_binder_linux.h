// DriverBinder on a real sysfs: driver_override, unbind, drivers_probe.
#pragma once

#include "svad/ports/driver_binder.h"

#include <string>

namespace svad::linux_impl {

class DriverBinderLinux final : public ports::DriverBinder {
public:
    explicit DriverBinderLinux(std::string sysfsRoot) : root_(std::move(sysfsRoot)) {}
    ports::Result<std::string> bind(const std::string& address, const std::string& driver) override;
    ports::Result<ports::DriverState> state(const std::string& address) override;
    ports::Status restore(const std::string& address, const std::string& previous,
                          const std::string& override) override;
    ports::Result<std::string> vfioNode(const std::string& address) override;

private:
    std::string root_;
};

} // namespace svad::linux_impl
