// What the service counts for Prometheus: the host and context gauges,
// allocations with their outcome and time, releases by reason, degradations.
// Observes the engine; every call is a no-op without a Metrics.
#pragma once

#include "svad/core/engine.h"

#include <chrono>
#include <optional>
#include <string>

namespace svad::metrics {
class Metrics;
} // namespace svad::metrics

namespace svad::dbus {

class ServiceMetrics final : public core::ContextObserver {
public:
    ServiceMetrics(metrics::Metrics* metrics, core::Engine& engine);
    ~ServiceMetrics() override;
    ServiceMetrics(const ServiceMetrics&) = delete;
    ServiceMetrics& operator=(const ServiceMetrics&) = delete;

    // The gauges again, from the engine's host and contexts.
    void observe();
    // One allocation answered; `plugins` ("idxd,vfio") on success.
    void allocation(std::chrono::steady_clock::time_point started,
                    const std::optional<core::Failure>& failure, const std::string& plugins = {});
    void pasidQuotaRefusal();

    void contextCreated(const core::Context& ctx) override;
    void contextStateChanged(const core::Context& ctx, const std::string& reason) override;
    void contextReleased(const core::Context& ctx, const std::string& reason) override;
    void contextsRestored() override;

private:
    metrics::Metrics* metrics_;
    core::Engine& engine_;
    uint64_t hostGeneration_ = 0; // the engine's host the gauges show (0: none yet)
};

} // namespace svad::dbus
