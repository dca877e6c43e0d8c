#include "svad/metrics/metrics.h"

#include "svad/core/listen_address.h"
#include "svad/core/parse.h"
#include "svad/core/text.h"

#include <algorithm>
#include <arpa/inet.h>
#include <atomic>
#include <chrono>
#ifdef SVAD_HAVE_CIVETWEB
#include <civetweb.h>
#endif
#include <netinet/in.h>
#include <prometheus/counter.h>
#include <prometheus/exposer.h>
#include <prometheus/gauge.h>
#include <prometheus/histogram.h>
#include <prometheus/registry.h>
#include <set>
#include <sys/socket.h>
#include <thread>
#include <unistd.h>

namespace svad::metrics {

namespace {

// Allocation latency buckets, in seconds: from 100 µs to 10 s.
const prometheus::Histogram::BucketBoundaries& latencyBuckets() {
    static const prometheus::Histogram::BucketBoundaries b = {
        0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1, 2.5, 10};
    return b;
}

const char* modeLabel(core::ContextMode m) {
    switch (m) {
    case core::ContextMode::Handoff:
        return "handoff";
    case core::ContextMode::Attached:
        return "attached";
    default:
        return "unknown";
    }
}

// Opens and closes a connection to host:port, without waiting for it.
void poke(const std::string& host, bool ipv6, uint16_t port) {
    const int fd =
        ::socket(ipv6 ? AF_INET6 : AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        return;
    }
    if (ipv6) {
        struct sockaddr_in6 sa {};
        sa.sin6_family = AF_INET6;
        sa.sin6_port = htons(port);
        if (::inet_pton(AF_INET6, host.c_str(), &sa.sin6_addr) == 1) {
            (void)::connect(fd, reinterpret_cast<struct sockaddr*>(&sa), sizeof sa);
        }
    } else {
        struct sockaddr_in sa {};
        sa.sin_family = AF_INET;
        sa.sin_port = htons(port);
        if (::inet_pton(AF_INET, host.c_str(), &sa.sin_addr) == 1) {
            (void)::connect(fd, reinterpret_cast<struct sockaddr*>(&sa), sizeof sa);
        }
    }
    ::close(fd);
}

} // namespace

bool httpServerHasIpv6() {
#ifdef SVAD_HAVE_CIVETWEB
    constexpr unsigned kIpv6Feature = 8; // civetweb.h: mg_check_feature
    return mg_check_feature(kIpv6Feature) != 0;
#else
    return true;
#endif
}

std::optional<std::string> unservable(const std::string& address) {
    std::string err;
    auto a = core::parseListenAddress(address, &err);
    if (!a) {
        return err;
    }
    if (a->ipv6 && !httpServerHasIpv6()) {
        return "'" + core::echo(address) +
               "': this build's HTTP server (civetweb) has no IPv6 support; use an IPv4 address";
    }
    return std::nullopt;
}

Metrics::Metrics(const std::string& version, const std::string& backend)
    : registry_(std::make_shared<prometheus::Registry>()) {
    using namespace prometheus;
    auto& r = *registry_;
    BuildGauge()
        .Name("svad_build_info")
        .Help("svad's version and kernel backend; always 1")
        .Register(r)
        .Add({{"version", version}, {"backend", backend}})
        .Set(1);
    devices_ = &BuildGauge()
                    .Name("svad_devices")
                    .Help("Devices on the host, by kind (pci, vdpa) and bound driver")
                    .Register(r);
    pasidDevices_ = &BuildGauge()
                         .Name("svad_pasid_capable_devices")
                         .Help("PCI functions with a PASID capability")
                         .Register(r)
                         .Add({});
    groups_ = &BuildGauge()
                   .Name("svad_iommu_groups")
                   .Help("IOMMU groups, by viability for VFIO (viable=true|false)")
                   .Register(r);
    contexts_ = &BuildGauge()
                     .Name("svad_contexts")
                     .Help("Contexts held, by deciding plugin and mode (handoff, attached)")
                     .Register(r);
    pasids_ = &BuildGauge()
                   .Name("svad_pasids_allocated")
                   .Help("PASIDs allocated to contexts")
                   .Register(r)
                   .Add({});
    faultQueues_ = &BuildGauge()
                        .Name("svad_fault_queues_open")
                        .Help("IOMMU fault queues open in contexts")
                        .Register(r)
                        .Add({});
    quotaRefusals_ = &BuildCounter()
                          .Name("svad_pasid_quota_refusals_total")
                          .Help("PASID requests refused because the VM's quota was reached")
                          .Register(r)
                          .Add({});
    allocations_ = &BuildCounter()
                        .Name("svad_allocations_total")
                        .Help("Context allocations, by result (ok or the error) and plugin")
                        .Register(r);
    latency_ = &BuildHistogram()
                    .Name("svad_allocation_duration_seconds")
                    .Help("Time to answer AllocateContext, by plugin")
                    .Register(r);
    denials_ = &BuildCounter()
                    .Name("svad_policy_denials_total")
                    .Help("Requests a policy plugin denied, by plugin")
                    .Register(r);
    hotplugEvents_ = &BuildCounter()
                          .Name("svad_hotplug_events_total")
                          .Help("Hotplug events received, by subsystem and action")
                          .Register(r);
    hotplugRefreshes_ = &BuildCounter()
                             .Name("svad_hotplug_refreshes_total")
                             .Help("Partial re-reads of the host after a batch of hotplug events")
                             .Register(r)
                             .Add({});
    hotplugPending_ = &BuildGauge()
                           .Name("svad_hotplug_pending_events")
                           .Help("Hotplug events read whose re-read is not applied yet")
                           .Register(r)
                           .Add({});
    releases_ = &BuildCounter()
                     .Name("svad_releases_total")
                     .Help("Contexts released, by reason (owner, owner_exited, "
                           "owner_left_bus, other)")
                     .Register(r);
    degraded_ = &BuildCounter()
                     .Name("svad_contexts_degraded_total")
                     .Help("Contexts that lost a device while held")
                     .Register(r)
                     .Add({});
}

Metrics::~Metrics() {
    stopServer();
}

void Metrics::stopServer() {
    if (!exposer_) {
        return;
    }
    // civetweb's accept thread sees its stop flag only when its poll of the listening
    // socket returns, which it does every 2 s (SOCKET_TIMEOUT_QUANTUM in civetweb.c) or
    // on a new connection; the workers see it within kHttpRequestTimeoutMs. Connections
    // made while the exposer stops end that poll, so svad stops in milliseconds.
    const std::vector<uint16_t> listening = ports();
    std::atomic<bool> stopped{false};
    std::thread waker([&stopped, listening, host = wakeHost_, ipv6 = wakeIpv6_] {
        while (!stopped.load()) {
            for (uint16_t port : listening) {
                poke(host, ipv6, port);
            }
            std::this_thread::sleep_for(std::chrono::milliseconds(5));
        }
    });
    exposer_.reset();
    stopped = true;
    waker.join();
}

void Metrics::serve(const std::string& address) {
    if (auto err = unservable(address)) {
        throw MetricsError(*err);
    }
    if (address == core::kListenOff) {
        return;
    }
    auto parsed = core::parseListenAddress(address);
    if (!parsed) {
        throw MetricsError("cannot serve metrics on " + address);
    }
    wakeIpv6_ = parsed->ipv6;
    if (parsed->host == "0.0.0.0" || parsed->host == "::") {
        wakeHost_ = wakeIpv6_ ? "::1" : "127.0.0.1";
    } else {
        wakeHost_ = parsed->host;
    }
    try {
        // civetweb's options (see metrics.h); its other defaults stay: keep-alive off,
        // no linger on close (a close never waits for the client).
        exposer_ = std::make_unique<prometheus::Exposer>(std::vector<std::string>{
            "listening_ports", address, "num_threads", std::to_string(kHttpThreads),
            "request_timeout_ms", std::to_string(kHttpRequestTimeoutMs), "connection_queue",
            std::to_string(kHttpConnectionQueue), "listen_backlog",
            std::to_string(kHttpListenBacklog)});
    } catch (const std::exception& e) {
        throw MetricsError("cannot serve metrics on " + address + ": " + e.what());
    }
    exposer_->RegisterCollectable(registry_);
}

std::vector<uint16_t> Metrics::ports() const {
    std::vector<uint16_t> out;
    if (exposer_) {
        for (int p : exposer_->GetListeningPorts()) {
            out.push_back(static_cast<uint16_t>(p));
        }
    }
    return out;
}

void Metrics::setSeries(prometheus::Family<prometheus::Gauge>& family,
                        std::map<Labels, prometheus::Gauge*>& series,
                        const std::map<Labels, double>& values) {
    for (auto it = series.begin(); it != series.end();) {
        if (values.find(it->first) == values.end()) {
            family.Remove(it->second);
            it = series.erase(it);
        } else {
            ++it;
        }
    }
    for (const auto& [labels, value] : values) {
        auto it = series.find(labels);
        if (it == series.end()) {
            it = series.emplace(labels, &family.Add(labels)).first;
        }
        it->second->Set(value);
    }
}

void Metrics::updateHost(const core::Host& host) {
    std::map<Labels, double> devices;
    double pasid = 0;
    for (const auto& d : host.devices) {
        devices[{{"kind", "pci"}, {"driver", d.driver.empty() ? "none" : d.driver}}] += 1;
        pasid += d.caps.pasid.present ? 1 : 0;
    }
    for (const auto& v : host.vdpa) {
        devices[{{"kind", "vdpa"}, {"driver", v.driver.empty() ? "none" : v.driver}}] += 1;
    }
    setSeries(*devices_, deviceSeries_, devices);
    pasidDevices_->Set(pasid);
    std::map<Labels, double> groups = {{{{"viable", "true"}}, 0}, {{{"viable", "false"}}, 0}};
    for (const auto& g : host.groups) {
        groups[{{"viable", g.viable ? "true" : "false"}}] += 1;
    }
    setSeries(*groups_, groupSeries_, groups);
}

void Metrics::updateContexts(const core::Engine& engine) {
    ContextCounts counts;
    double faultQueues = 0;
    for (const auto& [id, ctx] : engine.contexts()) {
        std::set<std::string> plugins;
        for (const auto& d : ctx->devices) {
            plugins.insert(d.plugin.empty() ? "none" : d.plugin);
        }
        for (const auto& plugin : plugins) {
            counts[{plugin, ctx->mode}] += 1;
        }
        faultQueues += ctx->faultQueueFd.valid() ? 1 : 0;
    }
    setContexts(counts, faultQueues, static_cast<double>(engine.pasidCount()));
}

void Metrics::setContexts(const ContextCounts& counts, double faultQueues, double pasids) {
    std::map<Labels, double> contexts;
    for (const auto& [key, n] : counts) {
        if (n > 0) {
            contexts[{{"plugin", key.first}, {"mode", modeLabel(key.second)}}] += n;
        }
    }
    setSeries(*contexts_, contextSeries_, contexts);
    pasids_->Set(pasids);
    faultQueues_->Set(faultQueues);
}

void Metrics::allocation(const std::string& result, const std::string& plugin, double seconds) {
    allocations_->Add({{"result", result}, {"plugin", plugin}}).Increment();
    latency_->Add({{"plugin", plugin}}, latencyBuckets()).Observe(seconds);
}

void Metrics::policyDenial(const std::string& plugin) {
    denials_->Add({{"plugin", plugin}}).Increment();
}

void Metrics::pasidQuotaRefusal() {
    quotaRefusals_->Increment();
}

void Metrics::hotplugEvent(const std::string& subsystem, const std::string& action) {
    hotplugEvents_->Add({{"subsystem", subsystem}, {"action", action}}).Increment();
}

void Metrics::hotplugPending(size_t events) {
    hotplugPending_->Set(static_cast<double>(events));
}

void Metrics::hotplugRefresh() {
    hotplugRefreshes_->Increment();
}

void Metrics::release(const std::string& reason) {
    releases_->Add({{"reason", releaseLabel(reason)}}).Increment();
}

void Metrics::contextDegraded() {
    degraded_->Increment();
}

std::string Metrics::releaseLabel(const std::string& reason) {
    if (reason == "released by the owner") {
        return "owner";
    }
    if (reason == "owner process exited") {
        return "owner_exited";
    }
    if (reason == "owner left the bus") {
        return "owner_left_bus";
    }
    return "other";
}

} // namespace svad::metrics
