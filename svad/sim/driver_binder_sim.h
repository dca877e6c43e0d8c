// DriverBinder on a generated host tree: what the kernel would do to sysfs
// and /dev when a function is rebound (the driver link, driver_override,
// vfio-dev/vfioN and /dev/vfio/devices/vfioN), and the sim kernel told of the
// new cdev, so that a rescan afterwards sees what a real host would show.
//
// Delays, for tests of what svad does while a rebind is slow (a real restore
// waits until the VMM closes its fds; a real bind can reset the function):
// when the sim host tree has the file
//   <sysfs root>/.sim/bind_delay_ms     bind blocks that many milliseconds first
//   <sysfs root>/.sim/restore_delay_ms  restore blocks that many milliseconds first
// and, while one of them blocks, <sysfs root>/.sim/<that name>.active exists.
// holding a decimal number (up to 60000), the call sleeps that long before it
// does anything. The files are read at each call, so a test can set, change or
// remove them while svad runs. Discovery never reads them; a real host has none.
#pragma once

#include "svad/ports/driver_binder.h"
#include "svad/sim/kernel_sim.h"

#include <functional>
#include <string>

namespace svad::sim {

class DriverBinderSim final : public ports::DriverBinder {
public:
    // pasidLog2: the PASID width the sim kernel gives a newly bound function.
    DriverBinderSim(std::string sysfsRoot, std::string devRoot, KernelSim& kernel,
                    std::function<uint8_t(const std::string& address)> pasidLog2);
    ports::Result<std::string> bind(const std::string& address, const std::string& driver) override;
    ports::Result<ports::DriverState> state(const std::string& address) override;
    ports::Status restore(const std::string& address, const std::string& previous,
                          const std::string& override) override;
    ports::Result<std::string> vfioNode(const std::string& address) override;

private:
    ports::Status setDriver(const std::string& address, const std::string& driver);
    // Sleeps for what <sysfs root>/.sim/<name> asks, if anything.
    void delay(const char* name) const;
    std::string sysfs_;
    std::string dev_;
    KernelSim& kernel_;
    std::function<uint8_t(const std::string&)> pasidLog2_;
};

} // namespace svad::sim
