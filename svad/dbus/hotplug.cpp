#include "svad/dbus/hotplug.h"

#include "svad/core/hotplug.h"
#include "svad/core/log.h"
#include "svad/dbus/service.h"
#include "svad/dbus/thread_pool_names.h"
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
      settle_(settle), timer_(io) {
    nameThreads(worker_, 1, "svad-hotplug");
}

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
    if (event.lost) {
        log::warning("hotplug: events were lost, rescanning the whole host");
        service_.rescan();
        return;
    }
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
    publishPending();
    const auto now = std::chrono::steady_clock::now();
    const bool quiet = now - lastEvent_ >= settle_;
    lastEvent_ = now;
    if (refreshing_) {
        return; // read when the running one is done
    }
    if (quiet && !armed_ && !leading_) {
        // A lone event is not kept waiting: read after this turn of the loop,
        // together with what else this turn brings.
        leading_ = true;
        std::weak_ptr<int> alive = alive_;
        boost::asio::post(io_, [this, alive] {
            if (!alive.lock()) {
                return;
            }
            leading_ = false;
            flush();
        });
        return;
    }
    arm();
}

void Hotplug::publishPending() {
    if (metrics_ != nullptr) {
        metrics_->hotplugPending(pendingEvents_ + refreshingEvents_);
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
    if (pending_.empty() || refreshing_) {
        return; // one read at a time: finished() arms again for what is pending
    }
    refreshing_ = true;
    core::HostChanges changes = std::move(pending_);
    pending_ = {};
    const size_t events = pendingEvents_;
    pendingEvents_ = 0;
    refreshingEvents_ = events;
    scansAtFlush_ = service_.scanCount();
    log::info("hotplug: reading the host again",
              {{"EVENTS", std::to_string(events)}, {"DEVICE", describe(changes)}});
    std::weak_ptr<int> alive = alive_;
    // The published host is shared, not copied: the loop does nothing here that
    // grows with the host.
    boost::asio::post(worker_, [this, alive, previous = service_.sharedHost(), changes, events] {
        std::optional<ReadyHost> host;
        std::string error;
        try {
            // Read, then made ready here too: the loop only swaps it in.
            host = service_.prepare(refresh_(*previous, changes));
        } catch (const std::exception& e) {
            error = e.what();
        }
        boost::asio::post(io_,
                          [this, alive, host = std::move(host), error, changes, events]() mutable {
                              if (alive.lock()) {
                                  finished(std::move(host), error, changes, events);
                              }
                          });
    });
}

void Hotplug::finished(std::optional<ReadyHost> host, const std::string& error,
                       const core::HostChanges& changes, size_t events) {
    refreshing_ = false;
    refreshingEvents_ = 0;
    if (host && service_.scanCount() != scansAtFlush_) {
        // A full scan landed meanwhile: what this read copied may be older. Read again.
        pending_.pci.insert(changes.pci.begin(), changes.pci.end());
        pending_.pciAddedOrRemoved = pending_.pciAddedOrRemoved || changes.pciAddedOrRemoved;
        pending_.units = pending_.units || changes.units;
        pending_.queues = pending_.queues || changes.queues;
        pending_.vdpa = pending_.vdpa || changes.vdpa;
        pendingEvents_ += events;
        arm();
        return;
    }
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
    publishPending();
    // Events that came in meanwhile: the next batch.
    arm();
}

} // namespace svad::dbus
