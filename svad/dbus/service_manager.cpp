#include "svad/dbus/service_manager.h"

#include "svad/core/log.h"

#include <systemd/sd-daemon.h>
#include <unistd.h>

namespace svad::dbus {

ServiceManager::ServiceManager(boost::asio::io_context& io) : watchdog_(io) {
    uint64_t usec = 0;
    if (sd_watchdog_enabled(0, &usec) > 0 && usec > 0) {
        interval_ = std::chrono::microseconds(usec / 2);
    }
}

std::string ServiceManager::statusLine(const core::Host& host) {
    size_t pasid = 0;
    for (const auto& d : host.devices) {
        pasid += d.caps.pasid.present ? 1 : 0;
    }
    return std::to_string(host.devices.size()) + " devices (" + std::to_string(pasid) +
           " with PASID), " + std::to_string(host.groups.size()) + " groups, " +
           std::to_string(host.units.size()) + " units, " + std::to_string(host.queues.size()) +
           " queues, " + std::to_string(host.vdpa.size()) + " vDPA";
}

void ServiceManager::ready(const core::Host& host) {
    const std::string msg =
        "READY=1\nSTATUS=" + statusLine(host) + "\nMAINPID=" + std::to_string(::getpid());
    if (sd_notify(0, msg.c_str()) < 0) {
        log::warning("sd_notify READY=1 failed");
    }
    armWatchdog();
}

void ServiceManager::status(const core::Host& host) {
    (void)sd_notify(0, ("STATUS=" + statusLine(host)).c_str());
}

void ServiceManager::setRoundTrip(RoundTrip roundTrip) {
    roundTrip_ = std::move(roundTrip);
}

void ServiceManager::stopping() {
    stopped_ = true;
    watchdog_.cancel();
    (void)sd_notify(0, "STOPPING=1\nSTATUS=stopping");
}

void ServiceManager::armWatchdog() {
    if (interval_.count() == 0) {
        return;
    }
    if (!roundTrip_) {
        (void)sd_notify(0, "WATCHDOG=1");
    } else if (!awaiting_) {
        // One at a time: while one is under way, the next turn sends nothing.
        awaiting_ = true;
        roundTrip_([this](bool answered) {
            awaiting_ = false;
            if (answered && !stopped_) {
                (void)sd_notify(0, "WATCHDOG=1");
            }
        });
    }
    watchdog_.expires_after(interval_);
    watchdog_.async_wait([this](const boost::system::error_code& ec) {
        if (!ec) {
            armWatchdog();
        }
    });
}

} // namespace svad::dbus
