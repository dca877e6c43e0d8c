#include "svad/core/hotplug.h"

#include "svad/core/parse.h"

#include <vector>

namespace svad::core {

namespace {

// The last PCI function named in a device path: the function itself, or the
// one a VFIO cdev, a work queue or a vDPA device hangs below.
std::string pciFunctionIn(const std::string& devpath) {
    std::string found;
    size_t start = 0;
    while (start < devpath.size()) {
        size_t end = devpath.find('/', start);
        if (end == std::string::npos) {
            end = devpath.size();
        }
        std::string part = devpath.substr(start, end - start);
        if (isPciAddress(part)) {
            found = std::move(part);
        }
        start = end + 1;
    }
    return found;
}

} // namespace

bool addEvent(HostChanges& changes, const ports::HotplugEvent& event) {
    if (event.action.empty()) {
        return false;
    }
    const std::string& s = event.subsystem;
    if (s == "pci") {
        std::string address =
            isPciAddress(event.sysname) ? event.sysname : pciFunctionIn(event.devpath);
        if (address.empty()) {
            return false;
        }
        changes.pci.insert(address);
        if (event.action == "add" || event.action == "remove") {
            changes.pciAddedOrRemoved = true;
        }
        return true;
    }
    if (s == "vfio-dev") {
        std::string address = pciFunctionIn(event.devpath);
        if (address.empty()) {
            return false;
        }
        changes.pci.insert(address);
        return true;
    }
    if (s == "vdpa") {
        changes.vdpa = true;
        return true;
    }
    if (s == "dsa") {
        changes.queues = true;
        return true;
    }
    if (s == "iommu") {
        changes.units = true;
        return true;
    }
    return false;
}

} // namespace svad::core
