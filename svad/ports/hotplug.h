// The port through which svad hears of a changing host: devices added and
// removed, drivers bound and unbound. The linux implementation is a libudev
// monitor on the daemon's Asio loop; tests may feed events of their own.
#pragma once

#include <functional>
#include <string>

namespace svad::ports {

struct HotplugEvent {
    std::string action;    // add, remove, change, bind, unbind, move, online, offline
    std::string subsystem; // pci, vfio-dev, vdpa, dsa, iommu
    std::string sysname;   // 0000:6a:01.0, vfio3, vdpa0, wq0.1, dmar0
    std::string devpath;   // /devices/pci0000:6a/0000:6a:01.0 (below the sysfs root)
    std::string driver;    // the bound driver, if the event says
    // Events were lost (the socket overflowed): what changed is unknown.
    bool lost = false;
};

class HotplugSource {
public:
    using Handler = std::function<void(const HotplugEvent&)>;
    virtual ~HotplugSource() = default;
    // Starts delivering events to `handler`, on the loop thread, until stop().
    virtual void start(Handler handler) = 0;
    virtual void stop() = 0;
};

} // namespace svad::ports
