#include "svad/dbus/service_metrics.h"

#include "svad/metrics/metrics.h"
#include "svad/names.h"

namespace svad::dbus {

ServiceMetrics::ServiceMetrics(metrics::Metrics* metrics, core::Engine& engine)
    : metrics_(metrics), engine_(engine) {
    engine_.addObserver(this);
}

ServiceMetrics::~ServiceMetrics() {
    engine_.removeObserver(this);
}

void ServiceMetrics::observe() {
    if (metrics_ == nullptr) {
        return;
    }
    // The host's gauges only when there is a new host: a context's coming and
    // going costs what the contexts do, not what the host does.
    if (engine_.hostGeneration() != hostGeneration_) {
        metrics_->updateHost(engine_.host());
        hostGeneration_ = engine_.hostGeneration();
    }
    push();
}

ServiceMetrics::Share ServiceMetrics::shareOf(const core::Context& ctx) {
    Share share;
    for (const auto& d : ctx.devices) {
        share.labels.emplace(d.plugin.empty() ? "none" : d.plugin, ctx.mode);
    }
    share.faultQueue = ctx.faultQueueFd.valid();
    return share;
}

void ServiceMetrics::add(uint64_t id, Share share) {
    if (metrics_ == nullptr) {
        return;
    }
    remove(id);
    for (const auto& key : share.labels) {
        counts_[key] += 1;
    }
    faultQueues_ += share.faultQueue ? 1 : 0;
    shares_.emplace(id, std::move(share));
}

void ServiceMetrics::remove(uint64_t id) {
    auto it = shares_.find(id);
    if (it == shares_.end()) {
        return;
    }
    for (const auto& key : it->second.labels) {
        if (auto c = counts_.find(key); c != counts_.end() && (c->second -= 1) <= 0) {
            counts_.erase(c);
        }
    }
    faultQueues_ -= it->second.faultQueue ? 1 : 0;
    shares_.erase(it);
}

void ServiceMetrics::recount() {
    shares_.clear();
    counts_.clear();
    faultQueues_ = 0;
    for (const auto& [id, ctx] : engine_.contexts()) {
        add(id, shareOf(*ctx));
    }
}

void ServiceMetrics::push() {
    if (metrics_ != nullptr) {
        metrics_->setContexts(counts_, faultQueues_, static_cast<double>(engine_.pasidCount()));
    }
}

void ServiceMetrics::allocation(std::chrono::steady_clock::time_point started,
                                const std::optional<core::Failure>& failure,
                                const std::string& plugins) {
    if (metrics_ == nullptr) {
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
            metrics_->policyDenial(plugin);
        }
    }
    metrics_->allocation(result, plugin, seconds);
    observe();
}

void ServiceMetrics::pasidQuotaRefusal() {
    if (metrics_ != nullptr) {
        metrics_->pasidQuotaRefusal();
    }
}

void ServiceMetrics::contextCreated(const core::Context& ctx) {
    if (!engine_.restoring()) { // else all at once, at contextsRestored
        add(ctx.id, shareOf(ctx));
        observe();
    }
}

void ServiceMetrics::contextsRestored() {
    recount();
    observe();
}

void ServiceMetrics::contextStateChanged(const core::Context& ctx, const std::string& /*reason*/) {
    if (metrics_ != nullptr && ctx.state == core::ContextState::Degraded) {
        metrics_->contextDegraded();
    }
    add(ctx.id, shareOf(ctx));
    observe();
}

void ServiceMetrics::contextReleased(const core::Context& ctx, const std::string& reason) {
    if (metrics_ != nullptr) {
        metrics_->release(reason);
    }
    remove(ctx.id);
    observe();
}

} // namespace svad::dbus
