// The svad service on the bus: the Manager object at /org/svad/Svad1 with the
// ObjectManager. This file wires the parts together and answers the Manager's
// properties; each concern lives in a part of its own:
//   host_publisher   the unit, group, device and queue objects, and their diffs
//   rescan_queue     coalesced rescans on a worker
//   device_filter    the ListDevices filter
//   caller_identity  who calls (asked of the bus once per client) and admin checks
//   leases           a context lives as long as its owner (engine observer)
//   context_methods  AllocateContext and the other context calls, context objects
//                    (engine observer)
//   service_metrics  the Prometheus side (engine observer)
//   offload          the workers the engine's slow parts run on
#pragma once

#include "svad/core/engine.h"
#include "svad/core/host_warnings.h"
#include "svad/core/model.h"
#include "svad/core/rate_limit.h"
#include "svad/dbus/Manager_adaptor.h"
#include "svad/dbus/bus_loop.h"
#include "svad/dbus/caller_identity.h"
#include "svad/dbus/context_methods.h"
#include "svad/dbus/host_publisher.h"
#include "svad/dbus/leases.h"
#include "svad/dbus/object_listing.h"
#include "svad/dbus/objects.h"
#include "svad/dbus/offload.h"
#include "svad/dbus/rescan_queue.h"
#include "svad/dbus/service_metrics.h"

#include <boost/asio/io_context.hpp>
#include <chrono>
#include <functional>
#include <map>
#include <memory>
#include <sdbus-c++/sdbus-c++.h>
#include <string>
#include <systemd/sd-bus.h>
#include <vector>

namespace svad::metrics {
class Metrics;
} // namespace svad::metrics

namespace svad::dbus {

struct ServiceOptions {
    std::string backend;
    std::string sysfsRoot;
    std::string devRoot;
    // Called on the loop thread with every newly scanned host (the sim kernel follows it).
    std::function<void(const core::Host&)> onHostChanged;
    // Reloads the configuration, reading and checking the file off the loop: calls
    // `done` on the loop thread with the errors (empty: the new one is in force).
    using ReloadDone = std::function<void(std::vector<std::string> errors)>;
    std::function<void(ReloadDone done)> reload;
    // The loaded plugins and the refused files, for the Plugins properties.
    std::function<std::vector<
        sdbus::Struct<std::string, std::string, std::string, uint32_t, std::vector<std::string>>>()>
        plugins;
    std::function<std::vector<sdbus::Struct<std::string, std::string>>()> pluginRefusals;
    // Where the service counts what it does; may be null.
    metrics::Metrics* metrics = nullptr;
    // Probes the kernel again after each rescan (a vhost-vdpa or VFIO cdev node may
    // have appeared since start-up); may be empty.
    std::function<ports::KernelFeatures()> probe;
    // A process's uid (nullopt: no such process), for a reservation's owner.
    std::function<std::optional<uid_t>(pid_t)> processUid;
};

// Runs discovery; called on a worker thread, so it must touch nothing shared.
using ScanFunction = std::function<core::Host()>;

class Service final
    : public sdbus::AdaptorInterfaces<org::svad::Svad1::Manager_adaptor,
                                      sdbus::ObjectManager_adaptor, sdbus::Properties_adaptor> {
public:
    Service(boost::asio::io_context& io, sdbus::IConnection& connection, BusLoop& loop,
            ServiceOptions options, ScanFunction scan, core::Engine& engine,
            ports::KernelFeatures features);
    ~Service();

    // Publishes a host (the first scan): objects appear without signals.
    void publishInitial(core::Host host);
    // Rescans in the background; `done` runs on the loop thread afterwards.
    // `done` gets an error message when the scan failed (the old host stays).
    using ScanDone = std::function<void(const std::optional<std::string>& error)>;
    void rescan(ScanDone done = {});

    const core::Host& host() const { return engine_.host(); }
    std::shared_ptr<const core::Host> sharedHost() const { return engine_.sharedHost(); }
    // How many hosts were published (scans, rescans, hotplug re-reads).
    uint32_t scanCount() const { return scanCount_; }
    // Any thread: a scanned host's rows, their differences from those published,
    // and its index, so that publishing it costs the loop only what changed.
    ReadyHost prepare(core::Host host) const;
    // Publishes a host from a partial re-read (hotplug), prepared, through the rescan's diff.
    void applyRefreshed(ReadyHost host);
    // svad is stopping: callers still waiting for a rescan get an error now.
    void stopping();

private:
    std::vector<sdbus::ObjectPath>
    ListDevices(const std::map<std::string, sdbus::Variant>& filter) override;
    std::tuple<ObjectTree, std::string> ListObjects(const std::string& start,
                                                    const uint32_t& limit) override;
    std::tuple<ObjectTree, std::string>
    ListObjectsWithProperties(const std::string& start, const uint32_t& limit,
                              const std::vector<std::string>& properties) override;
    void Rescan(sdbus::Result<>&& result) override;
    using AllocateResult =
        sdbus::Result<sdbus::ObjectPath, sdbus::UnixFd, std::map<std::string, sdbus::UnixFd>,
                      std::map<std::string, sdbus::Variant>>;
    void AllocateContext(AllocateResult&& result, std::string vm, std::vector<std::string> devices,
                         std::map<std::string, sdbus::Variant> options) override;
    void ReleaseContext(sdbus::Result<>&& result, sdbus::ObjectPath context) override;
    void AllocatePasid(sdbus::Result<uint32_t>&& result, sdbus::ObjectPath context,
                       std::string device, std::map<std::string, sdbus::Variant> options) override;
    void ReleasePasid(sdbus::Result<>&& result, sdbus::ObjectPath context, uint32_t pasid) override;
    void SetVirtualId(sdbus::Result<>&& result, sdbus::ObjectPath context, std::string device,
                      uint64_t virtId) override;
    void Reload(sdbus::Result<>&& result) override;
    void ReserveDevices(ContextMethods::ReserveResult&& result, std::string vm,
                        std::vector<std::string> devices,
                        std::map<std::string, sdbus::Variant> options) override;
    void SetVmOwner(sdbus::Result<std::vector<sdbus::ObjectPath>>&& result, std::string vm,
                    uint32_t pid) override;
    void ReleaseVm(sdbus::Result<uint32_t>&& result, std::string vm) override;
    std::vector<
        sdbus::Struct<std::string, std::string, std::string, uint32_t, std::vector<std::string>>>
    Plugins() override;
    std::vector<sdbus::Struct<std::string, std::string>> PluginRefusals() override;
    std::string ConfigFile() override;
    std::string AdminGroup() override;
    std::string DefaultPolicy() override;
    std::map<std::string, bool> KernelFeatures() override;
    std::map<std::string, std::string> KernelFeatureNotes() override;
    uint32_t ContextCount() override { return static_cast<uint32_t>(engine_.contexts().size()); }
    uint32_t PasidCount() override { return static_cast<uint32_t>(engine_.pasidCount()); }
    std::string Version() override;
    std::string Backend() override { return options_.backend; }
    std::string SysfsRoot() override;
    std::string DevRoot() override;
    uint32_t DeviceCount() override { return static_cast<uint32_t>(host().devices.size()); }
    uint32_t VdpaDeviceCount() override { return static_cast<uint32_t>(host().vdpa.size()); }
    uint32_t GroupCount() override { return static_cast<uint32_t>(host().groups.size()); }
    uint32_t UnitCount() override { return static_cast<uint32_t>(host().units.size()); }
    uint32_t QueueCount() override { return static_cast<uint32_t>(host().queues.size()); }
    uint32_t PasidDeviceCount() override;
    uint32_t WarningCount() override;
    std::vector<std::string> Warnings() override { return host().warnings; }
    uint64_t LastScanTime() override { return lastScanUsec_; }
    uint32_t ScanCount() override { return scanCount_; }

    // The published objects at or after `start` in path order, at most `limit` of
    // each kind (for ListObjects), or all of them (limit 0).
    std::vector<ListedObject> listedObjects(const std::string& start, uint32_t limit);
    // Sees every message before sdbus-c++ and sd-bus dispatch it:
    // - GetManagedObjects is answered by sd-bus; the filter answers it first
    //   with TooLarge when its reply could pass what a bus message may carry;
    // - Manager.ListObjects and ListObjectsWithProperties are answered here,
    //   their pages written straight into the reply (the methods below answer
    //   only a call the filter let by).
    static int busFilter(sd_bus_message* m, void* userdata, sd_bus_error* error);
    int refuseLargeTree(sd_bus_message* m);
    int answerListObjects(sd_bus_message* m, bool withProperties);

    void apply(ReadyHost host, bool emit);
    // Probes the kernel again; announces KernelFeatures when they changed.
    void reprobe();
    // The sender of the call being handled; PermissionDenied without one.
    std::string sender();
    // Runs `then` once the caller of the call being handled is known to be an admin;
    // answers `result` with the refusal otherwise.
    void asAdmin(const std::string& action, const std::shared_ptr<sdbus::Result<>>& result,
                 std::function<void()> then);

    boost::asio::io_context& io_;
    sdbus::IConnection& connection_;
    BusLoop& loop_;
    ServiceOptions options_;
    core::Engine& engine_;
    ports::KernelFeatures features_;
    uint64_t lastScanUsec_ = 0;
    uint32_t scanCount_ = 0;
    // The warnings of the host last applied, each logged once.
    core::HostWarnings warnings_;

    // Declared in the order they depend on each other; they go in reverse.
    AsioOffload offload_;
    std::unique_ptr<sdbus::IProxy> busProxy_;
    HostPublisher hostObjects_;
    ServiceMetrics metrics_;
    CallerIdentity identity_;
    Leases leases_;
    ContextMethods contexts_;
    RescanQueue rescans_;
    sd_bus_slot* treeFilter_ = nullptr;
    // Expires with the service, so that an answer finishing late is dropped.
    std::shared_ptr<int> alive_ = std::make_shared<int>(0);
};

} // namespace svad::dbus
