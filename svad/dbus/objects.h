// What the bus shows of the model. The host's objects (devices, groups, units,
// queues) and the contexts are rows of data served through property tables,
// with no object of their own (host_publisher.h); a context's row reads its
// engine live.
#pragma once

#include "svad/core/engine.h"
#include "svad/core/model.h"
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

// What a vDPA device's row shows of PCI: nothing.
inline const core::PciDevice kNoFunction{};

// A row points into the published host, which it keeps alive: publishing a
// host copies none of its objects, and svad holds the model once.
struct DeviceData {
    std::string devRoot;
    const core::Engine* engine = nullptr;      // who holds what
    std::shared_ptr<const core::Host> host;    // what the pointers below point into
    const core::PciDevice* pci = &kNoFunction; // a PCI function ...
    const core::VdpaDevice* vdpa = nullptr;    // ... or a vDPA device
    DeviceLinks links;
    // The same values, whichever host they are in.
    bool operator==(const DeviceData& o) const {
        return devRoot == o.devRoot && engine == o.engine && *pci == *o.pci &&
               (vdpa == nullptr ? o.vdpa == nullptr : o.vdpa != nullptr && *vdpa == *o.vdpa) &&
               links == o.links;
    }
};

struct QueueData {
    std::string devRoot;
    const core::Engine* engine = nullptr;
    std::shared_ptr<const core::Host> host; // what `queue` points into
    const core::SiovQueue* queue = nullptr;
    bool operator==(const QueueData& o) const {
        return devRoot == o.devRoot && engine == o.engine && *queue == *o.queue;
    }
};

// The properties of the host's objects, served from this data (property_table.h):
// a PCI function or vDPA device (org.svad.Svad1.Device), an IOMMU group, an
// IOMMU unit and a work queue.
template <> const PropertyTable<DeviceData>& propertyTable<DeviceData>();
template <> const PropertyTable<core::IommuGroup>& propertyTable<core::IommuGroup>();
template <> const PropertyTable<core::IommuUnit>& propertyTable<core::IommuUnit>();
template <> const PropertyTable<QueueData>& propertyTable<QueueData>();

// A context, read live from the engine that owns it (served like the host's
// objects: one fallback vtable over the contexts' prefix, no object of its own).
// A context the engine has let go reads as an empty one until its row goes.
struct ContextData {
    const core::Engine* engine = nullptr;
    uint64_t id = 0;
    bool operator==(const ContextData&) const = default;
};
template <> const PropertyTable<ContextData>& propertyTable<ContextData>();

// The object path of context `id`, and back (0 if `path` is not one).
std::string contextPath(uint64_t id);
uint64_t contextIdOf(const std::string& path);

} // namespace svad::dbus
