// svad's Prometheus metrics: a prometheus-cpp registry, and a pull exposer
// serving it over HTTP. The loop thread updates the metrics (counters and
// gauges are atomic); the exposer's own threads only read them.
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
class Exposer;
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

// The HTTP server's settings (civetweb options, through prometheus-cpp's Exposer).
// civetweb's accept thread moves each accepted connection into a queue of
// kHttpConnectionQueue, and kHttpThreads workers take them from it in order, one
// connection per worker, until its request is answered or kHttpRequestTimeoutMs
// passes without the whole request head (civetweb's request_timeout_ms). A scrape
// waits behind the connections accepted before it, so a client that sends nothing,
// or one byte every few seconds, must lose its worker quickly:
//  - kHttpThreads: metrics are a side job of svad, and a scrape takes a worker for
//    a few ms; four threads (each with a request buffer) keep scrapes flowing
//    while some are held by slow clients, without a pool sized for an attack.
//  - kHttpRequestTimeoutMs: a scraper sends its request with the connection (it is
//    there when a worker takes it); an idle or slow client is dropped after 100 ms
//    (each read waits up to the timeout, and the time is checked after it, so under
//    200 ms when a byte came just before), so a burst of N such connections costs
//    about N * 100 ms / kHttpThreads before a scrape behind it is answered.
//    Keep-alive stays off (civetweb's default): each connection is one request.
//  - kHttpConnectionQueue: accepted connections waiting for a worker. svad holds at
//    most kHttpThreads + kHttpConnectionQueue + 1 client sockets (the +1 is the one
//    the accept thread holds while the queue is full), whatever the number of clients.
//  - kHttpListenBacklog: connections the kernel completes before civetweb accepts
//    them (capped by net.core.somaxconn); they cost kernel memory, not svad's fds,
//    and a burst beyond it makes the clients retry their SYN.
inline constexpr int kHttpThreads = 4;
inline constexpr int kHttpRequestTimeoutMs = 100;
inline constexpr int kHttpConnectionQueue = 16;
inline constexpr int kHttpListenBacklog = 1024;

// Whether the HTTP server (civetweb) of this build can listen on IPv6.
bool httpServerHasIpv6();

// What keeps `address` from being served by this build, or nothing: first the
// one listen-address check (core::parseListenAddress), then what the HTTP
// server lacks (IPv6, when civetweb was built without it). --check-config,
// --metrics-address and serve() all ask this.
std::optional<std::string> unservable(const std::string& address);

class Metrics {
public:
    Metrics(const std::string& version, const std::string& backend);
    ~Metrics();
    Metrics(const Metrics&) = delete;
    Metrics& operator=(const Metrics&) = delete;

    // Serves GET /metrics on `address` (as core::parseListenAddress reads it; "off"
    // serves nothing); throws MetricsError (bad address, port taken).
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

    // Stops the HTTP server without waiting out its accept thread's poll.
    void stopServer();

    std::shared_ptr<prometheus::Registry> registry_;
    std::unique_ptr<prometheus::Exposer> exposer_;
    // Where a connection reaches the endpoint (a wildcard address as loopback).
    std::string wakeHost_;
    bool wakeIpv6_ = false;

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
