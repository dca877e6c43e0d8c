// The service manager's side of svad's life (sd_notify): READY=1 once the
// host is published and the name owned, STATUS= lines with counts, watchdog
// pings at half of WATCHDOG_USEC from an Asio timer, STOPPING=1 on the way
// out. Without NOTIFY_SOCKET every call is a no-op.
#pragma once

#include "svad/core/model.h"

#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>
#include <chrono>
#include <string>

namespace svad::dbus {

class ServiceManager {
public:
    explicit ServiceManager(boost::asio::io_context& io);
    ServiceManager(const ServiceManager&) = delete;
    ServiceManager& operator=(const ServiceManager&) = delete;

    void ready(const core::Host& host);
    void status(const core::Host& host);
    void stopping();

    // "12 devices (3 with PASID), 9 groups, 2 units, 4 queues, 1 vDPA"
    static std::string statusLine(const core::Host& host);

private:
    void armWatchdog();

    boost::asio::steady_timer watchdog_;
    std::chrono::microseconds interval_{0};
};

} // namespace svad::dbus
