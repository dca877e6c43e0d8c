// The host on the bus: one object per IOMMU unit, group, device (PCI function
// or vDPA device) and work queue, served from rows of model data. No object is
// registered on its own: each kind is one sd-bus fallback vtable over its path
// prefix, a find callback that looks the path up in the rows, and a node
// enumerator for introspection and GetManagedObjects. Publishes a scanned host
// and, on a rescan, only the differences (InterfacesAdded/Removed,
// PropertiesChanged). The rows of a host and their differences from those
// published are worked out on any thread (prepare); all else runs on the bus
// loop's thread, as every sd-bus call on svad's connection does, and costs what
// changed, not what the host holds.
#pragma once

#include "svad/core/engine.h"
#include "svad/core/host_index.h"
#include "svad/core/model.h"
#include "svad/dbus/object_listing.h"
#include "svad/dbus/objects.h"

#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <systemd/sd-bus.h>
#include <vector>

namespace svad::dbus {

// Signals sd-bus could not send in one publish: told once, not once an object.
struct EmitFailures {
    size_t count = 0;
    int firstError = 0;
    std::string firstObject;
};

// The objects of one kind: rows keyed by object path, all under `prefix`.
template <typename Data> class Subtree {
public:
    using Rows = std::map<std::string, Data, std::less<>>;
    // What a new set of rows changes in the published ones.
    struct Change {
        std::shared_ptr<const Rows> base; // the published rows it was worked out against
        std::shared_ptr<const Rows> next;
        std::vector<std::string> removed;
        std::vector<std::string> added;
        // Rows whose values differ; which properties is worked out on the loop, as a
        // property may read the engine (HeldBy), which only the loop may.
        std::vector<std::string> changed;
    };
    // Registers the kind's interface on `bus` for every path under `prefix`
    // ("/org/svad/Svad1/device/"); throws when sd-bus refuses.
    Subtree(sd_bus* bus, std::string_view prefix);
    ~Subtree();
    Subtree(const Subtree&) = delete;
    Subtree& operator=(const Subtree&) = delete;

    // Any thread: what `next` changes in the rows published now.
    Change prepare(Rows next) const;
    // On the loop, two steps that bring the rows in line with a change, with
    // signals when `emit` is set: first the rows that go (their
    // InterfacesRemoved while sd-bus can still find them), then the new rows
    // replace the old ones and what was added or changed is announced. A change
    // worked out against rows replaced since is worked out again here. Signals
    // not sent are counted in `failed`. Returns the rows replaced, for the
    // caller to free off the loop.
    void removeGone(Change& change, bool emit, EmitFailures& failed);
    std::shared_ptr<const Rows> addOrUpdate(Change& change, bool emit, EmitFailures& failed);
    // Announces that `property` of the object at `path` changed; false if there is none.
    bool announce(const std::string& path, const char* property);
    // The same for several properties, named in one PropertiesChanged.
    bool announce(const std::string& path, std::vector<const char*> properties);
    // One object at a time, with its InterfacesAdded or InterfacesRemoved (a
    // signal sd-bus cannot send is told in the log): for a kind never prepared
    // (contexts), as these change the published rows in place.
    void add(const std::string& path, Data data);
    void remove(const std::string& path);
    // Sends the interface's signal `member`, of one string argument, from `path`.
    void emitSignal(const std::string& path, const char* member, const std::string& text);
    const Rows& rows() const { return *rows_; }
    // The objects at or after `start`, at most `limit` (0: all), appended to `out`.
    void list(const std::string& start, uint32_t limit, std::vector<ListedObject>& out) const;

private:
    static int find(sd_bus* bus, const char* path, const char* interface, void* userdata,
                    void** found, sd_bus_error* error);
    static int enumerate(sd_bus* bus, const char* path, void* userdata, char*** nodes,
                         sd_bus_error* error);

    static void diff(const Rows& from, Change& change);

    sd_bus* bus_;
    std::string prefix_; // with its trailing '/'
    // Replaced whole by addOrUpdate (changed in place only by add and remove,
    // on a kind never prepared); the loop reads it freely, prepare under mu_,
    // which guards the pointer.
    std::shared_ptr<Rows> rows_ = std::make_shared<Rows>();
    bool prepared_ = false; // rows_ came from prepare: add and remove refuse
    mutable std::mutex mu_;
    sd_bus_slot* vtableSlot_ = nullptr;
    sd_bus_slot* enumeratorSlot_ = nullptr;
};

// A host worked out off the loop: its rows, and what they change.
struct PreparedHost {
    std::shared_ptr<const core::Host> host;
    Subtree<core::IommuUnit>::Change units;
    Subtree<core::IommuGroup>::Change groups;
    Subtree<DeviceData>::Change devices;
    Subtree<DeviceData>::Change vdpa;
    Subtree<QueueData>::Change queues;
};

// A scanned host made ready off the loop: the bus's rows and the engine's index.
struct ReadyHost {
    PreparedHost objects;
    std::shared_ptr<const core::HostIndex> index;
};

// What a publish replaced (rows, an index, a host): freed off the loop.
using Retired = std::vector<std::shared_ptr<const void>>;

class HostPublisher {
public:
    // `bus` is the connection under the service's sdbus-c++ connection; call on its loop.
    HostPublisher(sd_bus* bus, std::string devRoot, const core::Engine& engine);
    const std::string& devRoot() const { return devRoot_; }
    HostPublisher(const HostPublisher&) = delete;
    HostPublisher& operator=(const HostPublisher&) = delete;

    // Any thread: `host`'s rows and what they change. The rows point into
    // `host` and keep it.
    PreparedHost prepare(std::shared_ptr<const core::Host> host) const;
    // On the loop: brings the objects in line, with signals when `emit` is set;
    // adds what it replaced to `retired`.
    void publish(PreparedHost host, bool emit, Retired& retired);
    // The HeldBy property of these devices or queues changed.
    void announceHolders(const std::vector<std::string>& devices);
    // The objects at or after `start` in path order, at most `limit` of each kind
    // (0: all of them), appended to `out` unsorted.
    void list(const std::string& start, uint32_t limit, std::vector<ListedObject>& out) const;
    // PCI functions, then vDPA devices, each in path order.
    const Subtree<DeviceData>::Rows& pciDevices() const { return devices_.rows(); }
    const Subtree<DeviceData>::Rows& vdpaDevices() const { return vdpa_.rows(); }

private:
    std::string devRoot_;
    const core::Engine& engine_;
    // Objects that others point at appear first and go last.
    Subtree<core::IommuUnit> units_;
    Subtree<core::IommuGroup> groups_;
    Subtree<DeviceData> devices_;
    Subtree<DeviceData> vdpa_;
    Subtree<QueueData> queues_;
};

} // namespace svad::dbus
