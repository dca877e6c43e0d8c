#include "svad/dbus/hotplug.h"

#include "svad/core/hotplug.h"
#include "svad/core/log.h"
#include "svad/dbus/service.h"
#include "svad/metrics/metrics.h"

#include <boost/asio/post.hpp>

namespace svad::dbus {

namespace {

std::string describe(const core::HostChanges& c) {
    std::string out;
    for (const auto& a : c.pci) {
        out += (out.empty() ? "" : ",") + a;
    }
    return out;
}

} // namespace

Hotplug::Hotplug(boost::asio::io_context& io, Service& service, ports::HotplugSource& source,
                 RefreshFunction refresh, metrics::Metrics* metrics,
                 std::chrono::milliseconds settle)
    : io_(io), service_(service), source_(source), refresh_(std::move(refresh)), metrics_(metrics),
      settle_(settle), timer_(io) {}

Hotplug::~Hotplug() {
    alive_.reset();
    try {
        source_.stop();
        timer_.cancel();
    } catch (const std::exception& e) {
        log::warning(std::string("hotplug: stopping: ") + e.what());
    }
    worker_.join();
}

void Hotplug::start() {
    std::weak_ptr<int> alive = alive_;
    source_.start([this, alive](const ports::HotplugEvent& event) {
        if (alive.lock()) {
            onEvent(event);
        }
    });
}

void Hotplug::onEvent(const ports::HotplugEvent& event) {
    if (metrics_ != nullptr) {
        metrics_->hotplugEvent(event.subsystem, event.action);
    }
    log::debug("hotplug event", {{"ACTION", event.action},
                                 {"SUBSYSTEM", event.subsystem},
                                 {"DEVICE", event.sysname},
                                 {"DEVPATH", event.devpath}});
    if (!core::addEvent(pending_, event)) {
        return;
    }
    ++pendingEvents_;
    if (!refreshing_) {
        arm();
    }
}

void Hotplug::arm() {
    if (armed_ || pending_.empty()) {
        return;
    }
    armed_ = true;
    std::weak_ptr<int> alive = alive_;
    timer_.expires_after(settle_);
    timer_.async_wait([this, alive](const boost::system::error_code& ec) {
        if (ec || !alive.lock()) {
            return;
        }
        armed_ = false;
        flush();
    });
}

void Hotplug::flush() {
    if (pending_.empty()) {
        return;
    }
    refreshing_ = true;
    core::HostChanges changes = std::move(pending_);
    pending_ = {};
    const size_t events = pendingEvents_;
    pendingEvents_ = 0;
    log::info("hotplug: reading the host again",
              {{"EVENTS", std::to_string(events)}, {"DEVICE", describe(changes)}});
    std::weak_ptr<int> alive = alive_;
    boost::asio::post(
        worker_, [this, alive, previous = service_.host(), changes = std::move(changes), events] {
            std::optional<core::Host> host;
            std::string error;
            try {
                host = refresh_(previous, changes);
            } catch (const std::exception& e) {
                error = e.what();
            }
            boost::asio::post(io_, [this, alive, host = std::move(host), error, events]() mutable {
                if (alive.lock()) {
                    finished(std::move(host), error, events);
                }
            });
        });
}

void Hotplug::finished(std::optional<core::Host> host, const std::string& error, size_t events) {
    refreshing_ = false;
    ++refreshes_;
    if (metrics_ != nullptr) {
        metrics_->hotplugRefresh();
    }
    if (host) {
        service_.applyRefreshed(std::move(*host));
    } else {
        log::error("hotplug: reading the host failed, a full rescan follows: " + error,
                   {{"EVENTS", std::to_string(events)}});
        service_.rescan();
    }
    // Events that came in meanwhile: the next batch.
    arm();
}

} // namespace svad::dbus
