#include "svad/linux/udev_monitor.h"

#include "svad/core/log.h"

#include <cerrno>
#include <cstring>
#include <fcntl.h>
#include <libudev.h>
#include <unistd.h>

namespace svad::linux_impl {

namespace {

// Events read in one turn of the loop at most, so that a storm cannot starve the bus.
constexpr int kBatch = 256;

// The monitor listens from before the first scan, and a burst (256 VFs made at
// once are several hundred events) should wait there rather than overflow into
// a full rescan: the receive buffer size systemd-udevd asks for its own monitor.
constexpr int kReceiveBuffer = 128 * 1024 * 1024;

std::string orEmpty(const char* s) {
    return s != nullptr ? std::string(s) : std::string();
}

} // namespace

const std::vector<std::string>& UdevMonitor::subsystems() {
    static const std::vector<std::string> list = {"pci", "vfio-dev", "vdpa", "dsa", "iommu"};
    return list;
}

UdevMonitor::UdevMonitor(boost::asio::io_context& io) : descriptor_(io) {
    udev_ = udev_new();
    if (udev_ == nullptr) {
        throw UdevError(std::string("udev_new: ") + std::strerror(errno));
    }
    monitor_ = udev_monitor_new_from_netlink(udev_, "udev");
    if (monitor_ == nullptr) {
        const int e = errno;
        udev_unref(udev_);
        throw UdevError(std::string("udev_monitor_new_from_netlink: ") + std::strerror(e));
    }
    auto fail = [this](const std::string& what, int r) {
        udev_monitor_unref(monitor_);
        udev_unref(udev_);
        throw UdevError(what + ": " + std::strerror(r < 0 ? -r : r));
    };
    for (const auto& s : subsystems()) {
        if (int r = udev_monitor_filter_add_match_subsystem_devtype(monitor_, s.c_str(), nullptr);
            r < 0) {
            fail("udev_monitor_filter_add_match_subsystem_devtype " + s, r);
        }
    }
    if (int r = udev_monitor_enable_receiving(monitor_); r < 0) {
        fail("udev_monitor_enable_receiving", r);
    }
    // Beyond net.core.rmem_max only with CAP_NET_ADMIN; without it the smaller
    // buffer serves, and an overflow is still caught (ENOBUFS: a full rescan).
    if (int r = udev_monitor_set_receive_buffer_size(monitor_, kReceiveBuffer); r < 0) {
        log::debug(std::string("udev monitor: receive buffer left as it is: ") + std::strerror(-r));
    }
    // The descriptor waits on a duplicate: the monitor keeps (and closes) its own fd.
    int fd = ::fcntl(udev_monitor_get_fd(monitor_), F_DUPFD_CLOEXEC, 0);
    if (fd < 0) {
        fail("dup of the monitor fd", errno);
    }
    descriptor_.assign(fd);
}

UdevMonitor::~UdevMonitor() {
    alive_.reset();
    boost::system::error_code ec;
    descriptor_.close(ec);
    udev_monitor_unref(monitor_);
    udev_unref(udev_);
}

void UdevMonitor::start(Handler handler) {
    handler_ = std::move(handler);
    wait();
}

void UdevMonitor::stop() {
    handler_ = nullptr;
    boost::system::error_code ec;
    descriptor_.cancel(ec);
}

void UdevMonitor::wait() {
    std::weak_ptr<int> alive = alive_;
    descriptor_.async_wait(boost::asio::posix::stream_descriptor::wait_read,
                           [this, alive](const boost::system::error_code& ec) {
                               if (ec || !alive.lock() || !handler_) {
                                   return;
                               }
                               drain();
                               wait();
                           });
}

void UdevMonitor::drain() {
    // The monitor's socket is non-blocking: receive returns null when it is empty.
    for (int i = 0; i < kBatch && handler_; ++i) {
        errno = 0;
        struct udev_device* dev = udev_monitor_receive_device(monitor_);
        if (dev == nullptr) {
            if (errno == ENOBUFS) {
                // The kernel dropped events for us: nobody can say which.
                ports::HotplugEvent lost;
                lost.lost = true;
                handler_(lost);
            }
            return;
        }
        ports::HotplugEvent ev;
        ev.action = orEmpty(udev_device_get_action(dev));
        ev.subsystem = orEmpty(udev_device_get_subsystem(dev));
        ev.sysname = orEmpty(udev_device_get_sysname(dev));
        ev.devpath = orEmpty(udev_device_get_devpath(dev));
        ev.driver = orEmpty(udev_device_get_driver(dev));
        udev_device_unref(dev);
        try {
            handler_(ev);
        } catch (const std::exception& e) {
            log::error(std::string("hotplug event handler failed: ") + e.what(),
                       {{"DEVICE", ev.sysname}, {"SUBSYSTEM", ev.subsystem}});
        }
    }
}

} // namespace svad::linux_impl
