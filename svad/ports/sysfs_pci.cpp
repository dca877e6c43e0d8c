#include "svad/ports/sysfs_pci.h"

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <dirent.h>
#include <fcntl.h>
#include <fstream>
#include <limits.h>
#include <unistd.h>
#include <vector>

namespace svad::sysfs_pci {

namespace {

ports::KernelError error(int err, const std::string& what) {
    return ports::KernelError{err, what + ": " + std::strerror(err)};
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

std::string currentOverride(const std::string& deviceDir) {
    std::ifstream in(deviceDir + "/driver_override");
    std::string line;
    if (!std::getline(in, line) || line == "(null)") {
        return "";
    }
    return line;
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

} // namespace svad::sysfs_pci
