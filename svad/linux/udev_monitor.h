// The libudev monitor: the HotplugSource of a real host. It listens to udev's
// netlink group for the subsystems svad follows and waits for its fd on the
// Asio loop, so events are read on the loop thread without blocking it.
#pragma once

#include "svad/ports/hotplug.h"

#include <boost/asio/io_context.hpp>
#include <boost/asio/posix/stream_descriptor.hpp>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

struct udev;
struct udev_monitor;

namespace svad::linux_impl {

struct UdevError : std::runtime_error {
    using std::runtime_error::runtime_error;
};

class UdevMonitor final : public ports::HotplugSource {
public:
    // The subsystems svad follows.
    static const std::vector<std::string>& subsystems();

    // Throws UdevError when the monitor cannot be set up.
    explicit UdevMonitor(boost::asio::io_context& io);
    ~UdevMonitor() override;
    UdevMonitor(const UdevMonitor&) = delete;
    UdevMonitor& operator=(const UdevMonitor&) = delete;

    void start(Handler handler) override;
    void stop() override;

private:
    void wait();
    void drain();

    struct udev* udev_ = nullptr;
    struct udev_monitor* monitor_ = nullptr;
    boost::asio::posix::stream_descriptor descriptor_;
    Handler handler_;
    // Expires with the monitor, so that a completion arriving late is dropped.
    std::shared_ptr<int> alive_ = std::make_shared<int>(0);
};

} // namespace svad::linux_impl
