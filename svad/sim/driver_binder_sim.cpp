#include "svad/sim/driver_binder_sim.h"

#include "svad/core/parse.h"
#include "svad/ports/sysfs_pci.h"

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sys/stat.h>
#include <system_error>
#include <thread>
#include <unistd.h>

namespace svad::sim {

namespace fs = std::filesystem;

namespace {

ports::KernelError error(int err, const std::string& what) {
    return ports::KernelError{err, what + ": " + std::strerror(err)};
}

ports::Status writeFile(const std::string& path, const std::string& text) {
    std::ofstream out(path, std::ios::trunc);
    out << text;
    out.flush();
    if (!out) {
        return error(EIO, "write " + path);
    }
    return ports::okStatus();
}

constexpr unsigned long kMaxDelayMs = 60000;

} // namespace

void DriverBinderSim::delay(const char* name) const {
    std::ifstream in(sysfs_ + "/.sim/" + name);
    unsigned long ms = 0;
    if (!(in >> ms) || ms == 0) {
        return;
    }
    // While it blocks, <name>.active says so (a test waits for it to know the call is under way).
    const std::string active = sysfs_ + "/.sim/" + name + ".active";
    std::ofstream(active) << "1\n";
    std::this_thread::sleep_for(std::chrono::milliseconds(std::min(ms, kMaxDelayMs)));
    std::error_code ec;
    fs::remove(active, ec);
}

DriverBinderSim::DriverBinderSim(std::string sysfsRoot, std::string devRoot, KernelSim& kernel,
                                 std::function<uint8_t(const std::string&)> pasidLog2)
    : sysfs_(std::move(sysfsRoot)), dev_(std::move(devRoot)), kernel_(kernel),
      pasidLog2_(std::move(pasidLog2)) {}

ports::Status DriverBinderSim::setDriver(const std::string& address, const std::string& driver) {
    const std::string dev = sysfs_ + "/bus/pci/devices/" + address;
    std::error_code ec;
    fs::remove(dev + "/driver", ec);
    if (driver.empty()) {
        return ports::okStatus();
    }
    const std::string drvDir = sysfs_ + "/bus/pci/drivers/" + driver;
    fs::create_directories(drvDir, ec);
    if (::symlink(drvDir.c_str(), (dev + "/driver").c_str()) != 0) {
        return error(errno, "link " + dev + "/driver");
    }
    return ports::okStatus();
}

ports::Result<std::string> DriverBinderSim::bind(const std::string& address,
                                                 const std::string& driver) {
    if (!core::isPciAddress(address) || !sysfs_pci::validDriverName(driver)) {
        return error(EINVAL, "bind '" + address + "' to '" + driver + "'");
    }
    delay("bind_delay_ms");
    const std::string dev = sysfs_ + "/bus/pci/devices/" + address;
    if (::access(dev.c_str(), F_OK) != 0) {
        return error(ENODEV, "bind " + address);
    }
    std::string previous = sysfs_pci::currentDriver(dev);
    if (previous == driver) {
        return previous;
    }
    if (auto r = writeFile(dev + "/driver_override", driver + "\n"); !r) {
        return r.error();
    }
    if (auto r = setDriver(address, driver); !r) {
        return r.error();
    }
    if (driver == "vfio-pci") {
        // The next free cdev number, as the kernel's minor allocator would pick.
        unsigned n = 0;
        while (::access((dev_ + "/vfio/devices/vfio" + std::to_string(n)).c_str(), F_OK) == 0) {
            ++n;
        }
        const std::string name = "vfio" + std::to_string(n);
        std::error_code ec;
        fs::create_directories(dev + "/vfio-dev/" + name, ec);
        fs::create_directories(dev_ + "/vfio/devices", ec);
        if (ec) {
            return error(ec.value(), "create the cdev of " + address);
        }
        (void)writeFile(dev + "/vfio-dev/" + name + "/dev", "511:" + std::to_string(n) + "\n");
        (void)writeFile(dev_ + "/vfio/devices/" + name, "");
        kernel_.addVfioDevice(name, pasidLog2_ ? pasidLog2_(address) : 0);
    }
    return previous;
}

ports::Result<ports::DriverState> DriverBinderSim::state(const std::string& address) {
    if (!core::isPciAddress(address)) {
        return error(EINVAL, "'" + address + "' is not a PCI address");
    }
    const std::string dev = sysfs_ + "/bus/pci/devices/" + address;
    if (::access(dev.c_str(), F_OK) != 0) {
        return error(ENODEV, "no PCI function " + address);
    }
    return ports::DriverState{sysfs_pci::currentDriver(dev), sysfs_pci::currentOverride(dev)};
}

ports::Status DriverBinderSim::restore(const std::string& address, const std::string& previous,
                                       const std::string& override) {
    if (!core::isPciAddress(address) ||
        (!previous.empty() && !sysfs_pci::validDriverName(previous)) ||
        (!override.empty() && !sysfs_pci::validDriverName(override))) {
        return error(EINVAL, "restore '" + address + "' to '" + previous + "'");
    }
    delay("restore_delay_ms");
    const std::string dev = sysfs_ + "/bus/pci/devices/" + address;
    if (auto r = writeFile(dev + "/driver_override", "(null)\n"); !r) {
        return r;
    }
    if (sysfs_pci::currentDriver(dev) == "vfio-pci" && previous != "vfio-pci") {
        if (auto node = sysfs_pci::readVfioNode(dev, address)) {
            std::error_code ec;
            fs::remove(dev_ + "/vfio/devices/" + node.value(), ec);
        }
        std::error_code ec;
        fs::remove_all(dev + "/vfio-dev", ec);
    }
    if (auto r = setDriver(address, previous); !r) {
        return r;
    }
    return override.empty() ? ports::okStatus()
                            : writeFile(dev + "/driver_override", override + "\n");
}

ports::Result<std::string> DriverBinderSim::vfioNode(const std::string& address) {
    if (!core::isPciAddress(address)) {
        return error(EINVAL, "'" + address + "' is not a PCI address");
    }
    return sysfs_pci::readVfioNode(sysfs_ + "/bus/pci/devices/" + address, address);
}

} // namespace svad::sim
