// svad's Prometheus metrics: a prometheus-cpp registry, and svad's HTTP endpoint
// (http_endpoint.h) serving it. The loop thread updates the metrics (counters
// and gauges are atomic); the endpoint's own thread only reads them, collecting
// the registry at each scrape.
#pragma once

#include "svad/core/engine.h"
#include "svad/core/model.h"

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

namespace prometheus {
class Counter;
class Gauge;
class Histogram;
class Registry;
template <typename T> class Family;
} // namespace prometheus

namespace svad::metrics {

struct MetricsError : std::runtime_error {
    using std::runtime_error::runtime_error;
};

// The default of --metrics-address; "off" turns the endpoint off.
inline constexpr const char* kDefaultAddress = "127.0.0.1:9464";

// What keeps `address` from being served: the one listen-address check
// (core::parseListenAddress). --check-config, --metrics-address and serve()
// all ask this.
std::optional<std::string> unservable(const std::string& address);

class HttpEndpoint;

class Metrics {
public:
    Metrics(const std::string& version, const std::string& backend);
    ~Metrics();
    Metrics(const Metrics&) = delete;
    Metrics& operator=(const Metrics&) = delete;

    // Serves GET /metrics on `address` (as core::parseListenAddress reads it; "off"
    // serves nothing), on a thread of its own; throws MetricsError (bad address,
    // port taken).
    void serve(const std::string& address);
    // The ports the endpoint listens on (one once serve() succeeded).
    std::vector<uint16_t> ports() const;
    const std::shared_ptr<prometheus::Registry>& registry() const { return registry_; }

    // Gauges recomputed from a snapshot, on the loop thread.
    void updateHost(const core::Host& host);
    void updateContexts(const core::Engine& engine);
    // The context gauges from counts kept elsewhere: contexts by (plugin, mode),
    // a context counting once under each plugin that prepared one of its devices.
    using ContextCounts = std::map<std::pair<std::string, core::ContextMode>, double>;
    void setContexts(const ContextCounts& counts, double faultQueues, double pasids);

    // Events. `plugin` is the policy plugin that decided ("config" for the rules, "none" before any
    // was asked).
    void allocation(const std::string& result, const std::string& plugin, double seconds);
    void policyDenial(const std::string& plugin);
    void pasidQuotaRefusal();
    void hotplugEvent(const std::string& subsystem, const std::string& action);
    void hotplugRefresh();
    // Events read that still wait for their re-read to be applied.
    void hotplugPending(size_t events);
    void release(const std::string& reason);
    void contextDegraded();

    // A stable label for a release reason ("owner process exited" -> "owner_exited").
    static std::string releaseLabel(const std::string& reason);

private:
    using Labels = std::map<std::string, std::string>;
    // Sets the gauges of `family` to `values`; series no longer there are removed.
    static void setSeries(prometheus::Family<prometheus::Gauge>& family,
                          std::map<Labels, prometheus::Gauge*>& series,
                          const std::map<Labels, double>& values);

    std::shared_ptr<prometheus::Registry> registry_;
    std::unique_ptr<HttpEndpoint> endpoint_;

    prometheus::Family<prometheus::Gauge>* devices_;
    prometheus::Gauge* pasidDevices_;
    prometheus::Family<prometheus::Gauge>* groups_;
    prometheus::Family<prometheus::Gauge>* contexts_;
    prometheus::Gauge* pasids_;
    prometheus::Gauge* faultQueues_;
    prometheus::Counter* quotaRefusals_;
    prometheus::Family<prometheus::Counter>* allocations_;
    prometheus::Family<prometheus::Histogram>* latency_;
    prometheus::Family<prometheus::Counter>* denials_;
    prometheus::Family<prometheus::Counter>* hotplugEvents_;
    prometheus::Counter* hotplugRefreshes_;
    prometheus::Gauge* hotplugPending_;
    prometheus::Family<prometheus::Counter>* releases_;
    prometheus::Counter* degraded_;

    std::map<Labels, prometheus::Gauge*> deviceSeries_;
    std::map<Labels, prometheus::Gauge*> groupSeries_;
    std::map<Labels, prometheus::Gauge*> contextSeries_;
};

} // namespace svad::metrics
