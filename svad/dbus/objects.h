// What the bus shows of the model. The host's objects (devices, groups, units,
// queues) are rows of data served through property tables, with no object of
// their own (host_publisher.h); a context is an sdbus-c++ object that reads its
// engine live.
#pragma once

#include "svad/core/engine.h"
#include "svad/core/model.h"
#include "svad/dbus/Context_adaptor.h"
#include "svad/dbus/object_listing.h"
#include "svad/dbus/property_table.h"
#include "svad/dbus/sdbus_compat.h"

#include <map>
#include <memory>
#include <sdbus-c++/sdbus-c++.h>
#include <string>
#include <vector>

namespace svad::dbus {

// A node under the device root ("/dev" and "vfio/devices/vfio0": "/dev/vfio/devices/vfio0");
// empty for an empty `rel`.
std::string underRoot(const std::string& root, const std::string& rel);

// What a PCI function's object shows besides the function itself.
struct DeviceLinks {
    std::vector<std::string> queues; // work queue names
    std::vector<std::string> vdpa;   // vDPA device names
    bool operator==(const DeviceLinks&) const = default;
};

struct DeviceData {
    std::string devRoot;
    const core::Engine* engine = nullptr; // who holds what
    core::PciDevice pci;                  // a PCI function ...
    std::optional<core::VdpaDevice> vdpa; // ... or a vDPA device
    DeviceLinks links;
    bool operator==(const DeviceData&) const = default;
};

struct QueueData {
    std::string devRoot;
    const core::Engine* engine = nullptr;
    core::SiovQueue queue;
    bool operator==(const QueueData&) const = default;
};

// The properties of the host's objects, served from this data (property_table.h):
// a PCI function or vDPA device (org.svad.Svad1.Device), an IOMMU group, an
// IOMMU unit and a work queue.
template <> const PropertyTable<DeviceData>& propertyTable<DeviceData>();
template <> const PropertyTable<core::IommuGroup>& propertyTable<core::IommuGroup>();
template <> const PropertyTable<core::IommuUnit>& propertyTable<core::IommuUnit>();
template <> const PropertyTable<QueueData>& propertyTable<QueueData>();

// A context, read live from the engine that owns it.
class ContextObject final
    : public sdbus::AdaptorInterfaces<org::svad::Svad1::Context_adaptor,
                                      sdbus::ManagedObject_adaptor, sdbus::Properties_adaptor> {
public:
    using Adaptor = org::svad::Svad1::Context_adaptor;
    // Calls v(name, value) for each property of the interface, in the XML's order.
    template <typename V> void visitProperties(V& v) {
        v("Vm", Vm());
        v("OwnerUid", OwnerUid());
        v("OwnerPid", OwnerPid());
        v("OwnerBusName", OwnerBusName());
        v("Devices", Devices());
        v("DeviceObjects", DeviceObjects());
        v("Pasids", Pasids());
        v("VirtualIds", VirtualIds());
        v("IoasId", IoasId());
        v("FaultQueueId", FaultQueueId());
        v("Mode", Mode());
        v("State", State());
        v("CreatedTime", CreatedTime());
        v("FdsHeld", FdsHeld());
    }
    ContextObject(sdbus::IConnection& connection, std::string path, const core::Engine& engine,
                  uint64_t id);
    ~ContextObject();
    uint64_t id() const { return id_; }
    // Emits Released(reason), then InterfacesRemoved; the object goes with the caller's reset.
    void announceRelease(const std::string& reason);
    void announceChanged(const std::vector<std::string>& properties) {
        emitPropertiesChangedSignal(Adaptor::INTERFACE_NAME, compat::propertyNames(properties));
    }
    // Emits Degraded(reason) and the State change.
    void announceDegraded(const std::string& reason);

private:
    const core::Context& ctx() const;
    std::string Vm() override { return ctx().vm; }
    uint32_t OwnerUid() override { return ctx().ownerUid; }
    uint32_t OwnerPid() override { return static_cast<uint32_t>(ctx().ownerPid); }
    std::string OwnerBusName() override { return ctx().ownerBusName; }
    std::vector<std::string> Devices() override;
    std::vector<sdbus::ObjectPath> DeviceObjects() override;
    std::vector<sdbus::Struct<uint32_t, std::string>> Pasids() override;
    std::vector<sdbus::Struct<std::string, uint64_t>> VirtualIds() override;
    uint32_t IoasId() override { return ctx().ioasId; }
    uint32_t FaultQueueId() override { return ctx().faultQueueId; }
    uint32_t Mode() override { return static_cast<uint32_t>(ctx().mode); }
    uint32_t State() override { return static_cast<uint32_t>(ctx().state); }
    uint64_t CreatedTime() override { return ctx().createdUsec; }
    bool FdsHeld() override { return ctx().fdsHeld; }

    const core::Engine& engine_;
    uint64_t id_;
    core::Context gone_; // answers reads after the engine forgot the context
};

// The object path of context `id`, and back (0 if `path` is not one).
std::string contextPath(uint64_t id);
uint64_t contextIdOf(const std::string& path);

} // namespace svad::dbus
