#include "svad/metrics/metrics.h"

#include "svad/core/listen_address.h"
#include "svad/metrics/http_endpoint.h"

#include <prometheus/counter.h>
#include <prometheus/gauge.h>
#include <prometheus/histogram.h>
#include <prometheus/registry.h>
#include <prometheus/text_serializer.h>
#include <set>

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

} // namespace

std::optional<std::string> unservable(const std::string& address) {
    std::string err;
    if (!core::parseListenAddress(address, &err)) {
        return err;
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

// The endpoint stops first (its thread reads the registry).
Metrics::~Metrics() {
    endpoint_.reset();
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
    try {
        endpoint_ = std::make_unique<HttpEndpoint>(*parsed, [registry = registry_] {
            return prometheus::TextSerializer().Serialize(registry->Collect());
        });
    } catch (const std::exception& e) {
        throw MetricsError("cannot serve metrics on " + address + ": " + e.what());
    }
}

std::vector<uint16_t> Metrics::ports() const {
    std::vector<uint16_t> out;
    if (endpoint_) {
        out.push_back(endpoint_->port());
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
