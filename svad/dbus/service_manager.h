// The service manager's side of svad's life (sd_notify): READY=1 once the
// host is published and the name owned, STATUS= lines with counts, watchdog
// pings, STOPPING=1 on the way out. Without NOTIFY_SOCKET every call is a
// no-op.
//
// A watchdog ping says that svad is serving, not only that a timer fired: at
// half of WATCHDOG_USEC a round trip goes through the bus (setRoundTrip), and
// WATCHDOG=1 is sent when it comes back. A loop that does not dispatch, or a
// bus that does not deliver, sends none, and systemd restarts svad.
#pragma once

#include "svad/core/model.h"

#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>
#include <chrono>
#include <functional>
#include <string>

namespace svad::dbus {

class ServiceManager {
public:
    explicit ServiceManager(boost::asio::io_context& io);
    ServiceManager(const ServiceManager&) = delete;
    ServiceManager& operator=(const ServiceManager&) = delete;

    // How to prove that svad serves: start a round trip, call done(true) when
    // it came back. Without one, the pings follow the timer alone.
    using RoundTrip = std::function<void(std::function<void(bool)> done)>;
    void setRoundTrip(RoundTrip roundTrip);

    void ready(const core::Host& host);
    void status(const core::Host& host);
    void stopping();

    // "12 devices (3 with PASID), 9 groups, 2 units, 4 queues, 1 vDPA"
    static std::string statusLine(const core::Host& host);

private:
    void armWatchdog();

    boost::asio::steady_timer watchdog_;
    std::chrono::microseconds interval_{0};
    RoundTrip roundTrip_;
    bool awaiting_ = false; // a round trip is under way
    bool stopped_ = false;
};

} // namespace svad::dbus
