// The host on the bus: one object per IOMMU unit, group, device (PCI function
// or vDPA device) and work queue, served from rows of model data. No object is
// registered on its own: each kind is one sd-bus fallback vtable over its path
// prefix, a find callback that looks the path up in the rows, and a node
// enumerator for introspection and GetManagedObjects. Publishes a scanned host
// and, on a rescan, only the differences (InterfacesAdded/Removed,
// PropertiesChanged). Everything here runs on the bus loop's thread, as every
// sd-bus call on svad's connection does.
#pragma once

#include "svad/core/engine.h"
#include "svad/core/model.h"
#include "svad/dbus/object_listing.h"
#include "svad/dbus/objects.h"

#include <functional>
#include <map>
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
    // Registers the kind's interface on `bus` for every path under `prefix`
    // ("/org/svad/Svad1/device/"); throws when sd-bus refuses.
    Subtree(sd_bus* bus, std::string_view prefix);
    ~Subtree();
    Subtree(const Subtree&) = delete;
    Subtree& operator=(const Subtree&) = delete;

    // Brings the rows in line with `next` in two steps, with signals when
    // `emit` is set: first the rows `next` lacks go, then the others are
    // added or updated (and `next` is emptied). Signals not sent are counted in `failed`.
    void removeMissing(const Rows& next, bool emit, EmitFailures& failed);
    void addOrUpdate(Rows& next, bool emit, EmitFailures& failed);
    // Announces that `property` of the object at `path` changed; false if there is none.
    bool announce(const std::string& path, const char* property);
    // The same for several properties, named in one PropertiesChanged.
    bool announce(const std::string& path, std::vector<const char*> properties);
    // One object at a time, with its InterfacesAdded or InterfacesRemoved (a
    // signal sd-bus cannot send is told in the log).
    void add(const std::string& path, Data data);
    void remove(const std::string& path);
    // Sends the interface's signal `member`, of one string argument, from `path`.
    void emitSignal(const std::string& path, const char* member, const std::string& text);
    const Rows& rows() const { return rows_; }
    // The objects at or after `start`, at most `limit` (0: all), appended to `out`.
    void list(const std::string& start, uint32_t limit, std::vector<ListedObject>& out) const;

private:
    static int find(sd_bus* bus, const char* path, const char* interface, void* userdata,
                    void** found, sd_bus_error* error);
    static int enumerate(sd_bus* bus, const char* path, void* userdata, char*** nodes,
                         sd_bus_error* error);

    sd_bus* bus_;
    std::string prefix_; // with its trailing '/'
    Rows rows_;
    sd_bus_slot* vtableSlot_ = nullptr;
    sd_bus_slot* enumeratorSlot_ = nullptr;
};

class HostPublisher {
public:
    // `bus` is the connection under the service's sdbus-c++ connection; call on its loop.
    HostPublisher(sd_bus* bus, std::string devRoot, const core::Engine& engine);
    const std::string& devRoot() const { return devRoot_; }
    HostPublisher(const HostPublisher&) = delete;
    HostPublisher& operator=(const HostPublisher&) = delete;

    // Brings the objects in line with `host`, with signals when `emit` is set. The
    // objects point into `host` and keep it.
    void publish(const std::shared_ptr<const core::Host>& host, bool emit);
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
