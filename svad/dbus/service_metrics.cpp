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
    metrics_->updateContexts(engine_);
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

void ServiceMetrics::contextCreated(const core::Context& /*ctx*/) {
    if (!engine_.restoring()) { // else once, at contextsRestored
        observe();
    }
}

void ServiceMetrics::contextsRestored() {
    observe();
}

void ServiceMetrics::contextStateChanged(const core::Context& ctx, const std::string& /*reason*/) {
    if (metrics_ != nullptr && ctx.state == core::ContextState::Degraded) {
        metrics_->contextDegraded();
    }
    observe();
}

void ServiceMetrics::contextReleased(const core::Context& /*ctx*/, const std::string& reason) {
    if (metrics_ != nullptr) {
        metrics_->release(reason);
    }
    observe();
}

} // namespace svad::dbus
