// The host on the bus: one object per IOMMU unit, group, device (PCI function
// or vDPA device) and work queue. Publishes a scanned host and, on a rescan,
// only the differences (InterfacesAdded/Removed, PropertiesChanged).
#pragma once

#include "svad/core/engine.h"
#include "svad/core/model.h"
#include "svad/dbus/object_listing.h"
#include "svad/dbus/objects.h"

#include <map>
#include <memory>
#include <sdbus-c++/sdbus-c++.h>
#include <string>
#include <vector>

namespace svad::dbus {

class HostPublisher {
public:
    HostPublisher(sdbus::IConnection& connection, std::string devRoot, const core::Engine& engine);
    const std::string& devRoot() const { return devRoot_; }
    ~HostPublisher();
    HostPublisher(const HostPublisher&) = delete;
    HostPublisher& operator=(const HostPublisher&) = delete;

    // Brings the objects in line with `host`, with signals when `emit` is set.
    void publish(const core::Host& host, bool emit);
    // The HeldBy property of these devices or queues changed.
    void announceHolders(const std::vector<std::string>& devices);
    // The objects at or after `start` in path order, at most `limit` of each kind
    // (0: all of them), appended to `out` unsorted.
    void list(const std::string& start, uint32_t limit, std::vector<ListedObject>& out) const;
    const std::map<std::string, std::unique_ptr<DeviceObject>>& devices() const { return devices_; }

private:
    sdbus::IConnection& connection_;
    std::string devRoot_;
    const core::Engine& engine_;
    std::map<std::string, std::unique_ptr<UnitObject>> units_;
    std::map<std::string, std::unique_ptr<GroupObject>> groups_;
    std::map<std::string, std::unique_ptr<DeviceObject>> devices_;
    std::map<std::string, std::unique_ptr<QueueObject>> queues_;
};

// Writes every warning of a host to the log, with the object it is about.
void logWarnings(const core::Host& host);

} // namespace svad::dbus
