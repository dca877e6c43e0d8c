// Hotplug on the loop: events from a HotplugSource are counted, gathered
// into one set of changes and read again in part on a worker thread; the new
// host goes through the Service's diff, which emits InterfacesAdded/
// InterfacesRemoved/PropertiesChanged. The first event after a quiet spell
// (no event for `settle`) is read at once, with whatever arrived in the same
// turn of the loop; the events that follow it are gathered until the burst
// settles (an Asio timer), so a burst of a thousand is read a few times, not
// a thousand.
#pragma once

#include "svad/core/discovery.h"
#include "svad/dbus/host_publisher.h"
#include "svad/ports/hotplug.h"

#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/thread_pool.hpp>
#include <chrono>
#include <functional>
#include <memory>
#include <optional>

namespace svad::metrics {
class Metrics;
} // namespace svad::metrics

namespace svad::dbus {

class Service;

// Reads the host again in part; runs on a worker thread, touching nothing shared.
using RefreshFunction =
    std::function<core::Host(const core::Host& previous, const core::HostChanges& changes)>;

class Hotplug {
public:
    // Events within `settle` of each other are handled together (the first of a
    // burst at once).
    static constexpr std::chrono::milliseconds kDefaultSettle{50};

    Hotplug(boost::asio::io_context& io, Service& service, ports::HotplugSource& source,
            RefreshFunction refresh, metrics::Metrics* metrics,
            std::chrono::milliseconds settle = kDefaultSettle);
    ~Hotplug();
    Hotplug(const Hotplug&) = delete;
    Hotplug& operator=(const Hotplug&) = delete;

    void start();
    // How many partial re-reads ran (each covering one or more events).
    uint64_t refreshes() const { return refreshes_; }

private:
    void onEvent(const ports::HotplugEvent& event);
    void arm();
    void flush();
    void finished(std::optional<ReadyHost> host, const std::string& error,
                  const core::HostChanges& changes, size_t events);
    void publishPending();

    boost::asio::io_context& io_;
    Service& service_;
    ports::HotplugSource& source_;
    RefreshFunction refresh_;
    metrics::Metrics* metrics_;
    std::chrono::milliseconds settle_;
    std::chrono::steady_clock::time_point lastEvent_{};
    bool leading_ = false; // a read at once is posted
    boost::asio::steady_timer timer_;
    boost::asio::thread_pool worker_{1};

    core::HostChanges pending_;
    size_t pendingEvents_ = 0;
    size_t refreshingEvents_ = 0; // the events of the re-read under way
    bool armed_ = false;
    bool refreshing_ = false;
    uint64_t refreshes_ = 0;
    uint32_t scansAtFlush_ = 0;
    std::shared_ptr<int> alive_ = std::make_shared<int>(0);
};

} // namespace svad::dbus
