// The Service's live-host hooks: hotplug refreshes, metrics, and contexts
// that lose a device while held. Kept apart from service.cpp, which wires
// them in with one call each.
#include "svad/core/log.h"
#include "svad/dbus/service.h"
#include "svad/metrics/metrics.h"

#include <iterator>
#include <set>

namespace svad::dbus {

void Service::applyRefreshed(core::Host host) {
    apply(std::move(host), true);
    // A full scan in flight may have read the tree before this change: one more follows.
    if (scanning_) {
        nextRequested_ = true;
    }
    loop_.kick();
}

void Service::stopping() {
    auto waiting = std::move(waitingCurrent_);
    waiting.insert(waiting.end(), std::make_move_iterator(waitingNext_.begin()),
                   std::make_move_iterator(waitingNext_.end()));
    waitingCurrent_.clear();
    waitingNext_.clear();
    nextRequested_ = false;
    for (auto& done : waiting) {
        done(std::string("svad is stopping: the rescan was not finished"));
    }
}

void Service::observe() {
    if (options_.metrics == nullptr) {
        return;
    }
    options_.metrics->updateHost(engine_.host());
    options_.metrics->updateContexts(engine_);
}

void Service::recordAllocation(std::chrono::steady_clock::time_point started,
                               const std::optional<core::Failure>& failure,
                               const std::string& plugins) {
    if (options_.metrics == nullptr) {
        return;
    }
    const double seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
    std::string result = "ok";
    std::string plugin = plugins.empty() ? "none" : plugins;
    if (failure) {
        // org.svad.Svad1.Error.QuotaExceeded -> QuotaExceeded
        const std::string_view name = names::errorInfo(failure->error).dbusName;
        result = std::string(name.substr(name.rfind('.') + 1));
        plugin = failure->plugin.empty() ? "none" : failure->plugin;
        if (failure->error == names::Error::PolicyDenied) {
            options_.metrics->policyDenial(plugin);
        }
    }
    options_.metrics->allocation(result, plugin, seconds);
    observe();
}

void Service::contextStateChanged(uint64_t id, bool emit) {
    const core::Context* ctx = engine_.find(id);
    if (ctx == nullptr) {
        return;
    }
    auto object = contextObjects_.find(id);
    if (ctx->state != core::ContextState::Degraded) {
        if (object != contextObjects_.end() && emit) {
            object->second->announceChanged({"State"});
        }
        log::notice("the devices of the context are back: context active",
                    {{"VM", ctx->vm}, {"CONTEXT", std::to_string(id)}});
        return;
    }
    std::set<std::string> present;
    for (const auto& d : engine_.host().devices) {
        present.insert(d.address);
    }
    for (const auto& v : engine_.host().vdpa) {
        present.insert(v.name);
    }
    for (const auto& q : engine_.host().queues) {
        present.insert(q.name);
    }
    std::string gone;
    for (const auto& d : ctx->devices) {
        if (present.count(d.id) == 0) {
            gone += (gone.empty() ? "" : ",") + d.id;
        }
    }
    const std::string reason = "device " + gone + " removed from the host";
    if (object != contextObjects_.end() && emit) {
        object->second->announceDegraded(reason);
    }
    if (options_.metrics != nullptr) {
        options_.metrics->contextDegraded();
    }
    log::warning("context degraded: " + reason,
                 {{"VM", ctx->vm}, {"CONTEXT", std::to_string(id)}, {"DEVICE", gone}});
}

} // namespace svad::dbus
