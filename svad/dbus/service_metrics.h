// What the service counts for Prometheus: the host and context gauges,
// allocations with their outcome and time, releases by reason, degradations.
// Observes the engine; every call is a no-op without a Metrics.
#pragma once

#include "svad/core/engine.h"
#include "svad/metrics/metrics.h"

#include <chrono>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <utility>

namespace svad::dbus {

class ServiceMetrics final : public core::ContextObserver {
public:
    ServiceMetrics(metrics::Metrics* metrics, core::Engine& engine);
    ~ServiceMetrics() override;
    ServiceMetrics(const ServiceMetrics&) = delete;
    ServiceMetrics& operator=(const ServiceMetrics&) = delete;

    // The gauges again: the host's when the engine has a new one, the
    // contexts' from the counts kept as they come and go (no walk over them).
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
    // What one context adds to the gauges.
    struct Share {
        std::set<std::pair<std::string, core::ContextMode>> labels;
        bool faultQueue = false;
        bool operator==(const Share&) const = default;
    };
    static Share shareOf(const core::Context& ctx);
    void add(uint64_t id, Share share);
    void remove(uint64_t id);
    // All shares again from the engine's contexts (after a restore).
    void recount();
    void push();

    metrics::Metrics* metrics_;
    core::Engine& engine_;
    uint64_t hostGeneration_ = 0; // the engine's host the gauges show (0: none yet)
    std::map<uint64_t, Share> shares_;
    metrics::Metrics::ContextCounts counts_;
    double faultQueues_ = 0;
};

} // namespace svad::dbus
