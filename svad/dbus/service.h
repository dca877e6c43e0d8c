// The svad service on the bus: the Manager object at /org/svad/Svad1 with
// the ObjectManager, and one object per unit, group, device and queue. It
// publishes a discovered Host and, on a rescan, only the differences.
#pragma once

#include "svad/core/engine.h"
#include "svad/core/model.h"
#include "svad/core/rate_limit.h"
#include "svad/dbus/Manager_adaptor.h"
#include "svad/dbus/bus_loop.h"
#include "svad/dbus/object_listing.h"
#include "svad/dbus/objects.h"

#include <boost/asio/io_context.hpp>
#include <boost/asio/posix/stream_descriptor.hpp>
#include <boost/asio/thread_pool.hpp>
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
    // Where the service counts what it does; may be null (live_host.cpp).
    metrics::Metrics* metrics = nullptr;
    // Probes the kernel again after each rescan (a vhost-vdpa or VFIO cdev node may
    // have appeared since start-up); may be empty.
    std::function<ports::KernelFeatures()> probe;
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

    const core::Host& host() const { return host_; }
    // How many hosts were published (scans, rescans, hotplug re-reads).
    uint32_t scanCount() const { return scanCount_; }
    // Publishes a host from a partial re-read (hotplug) through the rescan's diff.
    void applyRefreshed(core::Host host);
    // svad is stopping: callers still waiting for a rescan get an error now.
    void stopping();

private:
    std::vector<sdbus::ObjectPath>
    ListDevices(const std::map<std::string, sdbus::Variant>& filter) override;
    std::tuple<ObjectTree, std::string> ListObjects(const std::string& start,
                                                    const uint32_t& limit) override;
    void Rescan(sdbus::Result<>&& result) override;
    using AllocateResult =
        sdbus::Result<sdbus::ObjectPath, sdbus::UnixFd, std::map<std::string, sdbus::UnixFd>,
                      std::map<std::string, sdbus::Variant>>;
    void AllocateContext(AllocateResult&& result, std::string vm, std::vector<std::string> devices,
                         std::map<std::string, sdbus::Variant> options) override;
    void ReleaseContext(const sdbus::ObjectPath& context) override;
    uint32_t AllocatePasid(const sdbus::ObjectPath& context, const std::string& device,
                           const std::map<std::string, sdbus::Variant>& options) override;
    void ReleasePasid(const sdbus::ObjectPath& context, const uint32_t& pasid) override;
    void SetVirtualId(const sdbus::ObjectPath& context, const std::string& device,
                      const uint64_t& virtId) override;
    void Reload(sdbus::Result<>&& result) override;
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
    uint32_t DeviceCount() override { return static_cast<uint32_t>(host_.devices.size()); }
    uint32_t VdpaDeviceCount() override { return static_cast<uint32_t>(host_.vdpa.size()); }
    uint32_t GroupCount() override { return static_cast<uint32_t>(host_.groups.size()); }
    uint32_t UnitCount() override { return static_cast<uint32_t>(host_.units.size()); }
    uint32_t QueueCount() override { return static_cast<uint32_t>(host_.queues.size()); }
    uint32_t PasidDeviceCount() override;
    uint32_t WarningCount() override;
    std::vector<std::string> Warnings() override { return host_.warnings; }
    uint64_t LastScanTime() override { return lastScanUsec_; }
    uint32_t ScanCount() override { return scanCount_; }

    // The published objects at or after `start` in path order, at most `limit` of
    // each kind (for ListObjects), or all of them (limit 0).
    std::vector<ListedObject> listedObjects(const std::string& start, uint32_t limit);
    // GetManagedObjects is answered by sd-bus; this filter answers it first with
    // TooLarge when its reply could pass what a bus message may carry.
    static int objectManagerFilter(sd_bus_message* m, void* userdata, sd_bus_error* error);

    void apply(core::Host host, bool emit);
    void startScan();
    // Probes the kernel again; announces KernelFeatures when they changed.
    void reprobe();
    void scanFinished(std::optional<core::Host> host, const std::string& error);
    void logWarnings(const core::Host& host) const;
    // Live-host hooks (live_host.cpp): metrics, and contexts whose devices left.
    void observe();
    // plugins: the plugins that prepared the context's devices ("idxd,vfio"), on success.
    void recordAllocation(std::chrono::steady_clock::time_point started,
                          const std::optional<core::Failure>& failure,
                          const std::string& plugins = {});
    void contextStateChanged(uint64_t id, bool emit);

    // Contexts.
    core::Caller caller();
    // The caller, when it is root or in the admin group; PermissionDenied otherwise.
    core::Caller admin(const std::string& action);
    uint64_t contextFromPath(const std::string& path) const;
    void watchOwner(const core::Context& ctx);
    void onNameLost(const std::string& name);
    // Stops following the owner of a context (its pidfd or its bus name).
    void forgetLease(uint64_t id);
    // Announces and forgets a context: Released(reason), InterfacesRemoved, HeldBy.
    void finishRelease(uint64_t id, const std::string& reason);
    void announceHolders(const std::vector<std::string>& devices);
    // Follows a sent reply that carries a context's fds until the bus has passed it on;
    // if the bus refuses it (onBusError), the context is taken back.
    void watchDelivery(uint64_t id, uint64_t cookie, sdbus::MethodCall call);
    void onBusError(sdbus::Message& message);
    void announceContext(uint64_t id, const std::vector<std::string>& properties);
    // Builds the reply and publishes the context's object and lease; may throw.
    std::tuple<sdbus::ObjectPath, sdbus::UnixFd, std::map<std::string, sdbus::UnixFd>,
               std::map<std::string, sdbus::Variant>>
    publishContext(const core::Context& ctx, const std::vector<std::string>& devices,
                   const core::Caller& caller);

    boost::asio::io_context& io_;
    sdbus::IConnection& connection_;
    BusLoop& loop_;
    ServiceOptions options_;
    ScanFunction scan_;
    boost::asio::thread_pool worker_{1};

    core::Host host_;
    uint64_t lastScanUsec_ = 0;
    uint32_t scanCount_ = 0;
    std::map<std::string, std::unique_ptr<UnitObject>> units_;
    std::map<std::string, std::unique_ptr<GroupObject>> groups_;
    std::map<std::string, std::unique_ptr<DeviceObject>> devices_;
    std::map<std::string, std::unique_ptr<QueueObject>> queues_;

    core::Engine& engine_;
    ports::KernelFeatures features_;
    std::map<uint64_t, std::unique_ptr<ContextObject>> contextObjects_;
    // Leases: a pidfd per owner process, or the owner's bus name when there is none.
    std::map<uint64_t, std::unique_ptr<boost::asio::posix::stream_descriptor>> pidWatches_;
    std::map<std::string, std::vector<uint64_t>> nameWatches_;
    std::unique_ptr<sdbus::IProxy> busProxy_;
    // Credentials by unique bus name, asked of the bus once per client, dropped when it leaves.
    struct Credentials {
        uid_t uid = 0;
        pid_t pid = 0;
        std::vector<gid_t> gids;
    };
    std::map<std::string, Credentials> credentials_;
    // Refusals of non-admin callers go to the log at a bounded rate, per uid.
    core::RateLimit refusalLog_;
    // Replies carrying fds, by cookie, until the bus has handled them.
    struct PendingReply {
        uint64_t context = 0;
        sdbus::MethodCall call; // to answer with an error when the reply is refused
    };
    std::map<uint64_t, PendingReply> pendingReplies_;
    sdbus::Slot busErrors_;
    sd_bus_slot* treeFilter_ = nullptr;

    // Rescans: callers waiting for the scan in flight, and for the next one.
    bool scanning_ = false;
    std::vector<ScanDone> waitingCurrent_;
    std::vector<ScanDone> waitingNext_;
    bool nextRequested_ = false;
    // Expires with the service, so that a scan finishing late is dropped.
    std::shared_ptr<int> alive_ = std::make_shared<int>(0);
};

} // namespace svad::dbus
