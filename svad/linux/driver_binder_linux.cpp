#include "svad/linux/driver_binder_linux.h"

#include "svad/core/parse.h"

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <dirent.h>
#include <fcntl.h>
#include <limits.h>
#include <unistd.h>
#include <vector>

namespace svad::linux_impl {

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

bool validDriverName(const std::string& name) {
    return !name.empty() && name.size() < NAME_MAX && name != "." && name != ".." &&
           name.find('/') == std::string::npos && name.find('\n') == std::string::npos;
}

ports::Status writeAttribute(const std::string& path, const std::string& value) {
    int fd = ::open(path.c_str(), O_WRONLY | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0) {
        return error(errno, "open " + path);
    }
    ssize_t n = ::write(fd, value.data(), value.size());
    int err = errno;
    ::close(fd);
    if (n < 0) {
        return error(err, "write '" + value + "' to " + path);
    }
    if (static_cast<size_t>(n) != value.size()) {
        return error(EIO, "short write to " + path);
    }
    return ports::okStatus();
}

std::string currentDriver(const std::string& deviceDir) {
    std::vector<char> buf(PATH_MAX);
    ssize_t n = ::readlink((deviceDir + "/driver").c_str(), buf.data(), buf.size() - 1);
    if (n <= 0) {
        return "";
    }
    std::string target(buf.data(), static_cast<size_t>(n));
    auto slash = target.rfind('/');
    return slash == std::string::npos ? target : target.substr(slash + 1);
}

ports::Result<std::string> readVfioNode(const std::string& deviceDir, const std::string& address) {
    DIR* dir = ::opendir((deviceDir + "/vfio-dev").c_str());
    if (dir == nullptr) {
        return error(errno, address + " has no vfio-dev");
    }
    std::vector<std::string> names;
    while (struct dirent* e = ::readdir(dir)) {
        std::string n = e->d_name;
        if (n.rfind("vfio", 0) == 0) {
            names.push_back(n);
        }
    }
    ::closedir(dir);
    if (names.empty()) {
        return error(ENOENT, address + " has no VFIO cdev under vfio-dev");
    }
    std::sort(names.begin(), names.end());
    return names.front();
}

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
        (void)restore(address, previous);
        return r.error();
    }
    if (currentDriver(dev) != driver) {
        (void)restore(address, previous);
        return error(ENODEV, address + " did not bind to " + driver + " (is it built or loaded?)");
    }
    return previous;
}

ports::Status DriverBinderLinux::restore(const std::string& address, const std::string& previous) {
    if (auto ok = checkNames(address, previous); !ok) {
        return ok;
    }
    const std::string dev = root_ + "/bus/pci/devices/" + address;
    // An empty line clears the override.
    if (auto r = writeAttribute(dev + "/driver_override", "\n"); !r) {
        return r;
    }
    std::string now = currentDriver(dev);
    if (now == previous) {
        return ports::okStatus();
    }
    if (!now.empty()) {
        if (auto r = writeAttribute(dev + "/driver/unbind", address); !r) {
            return r;
        }
    }
    if (previous.empty()) {
        return ports::okStatus();
    }
    return writeAttribute(root_ + "/bus/pci/drivers/" + previous + "/bind", address);
}

ports::Result<std::string> DriverBinderLinux::vfioNode(const std::string& address) {
    if (!core::isPciAddress(address)) {
        return error(EINVAL, "'" + address + "' is not a PCI address");
    }
    return readVfioNode(root_ + "/bus/pci/devices/" + address, address);
}

} // namespace svad::linux_impl
