#include "svad/dbus/objects.h"

#include "svad/core/parse.h"
#include "svad/core/paths.h"
#include "svad/dbus/Context_properties.h"
#include "svad/dbus/Device_properties.h"
#include "svad/dbus/Group_properties.h"
#include "svad/dbus/Queue_properties.h"
#include "svad/dbus/Unit_properties.h"

#include <cctype>

namespace svad::dbus {

std::string underRoot(const std::string& root, const std::string& rel) {
    if (rel.empty()) {
        return {};
    }
    if (root.empty() || root == "/") {
        return "/" + rel;
    }
    return root + "/" + rel;
}

namespace {

sdbus::ObjectPath none() {
    return sdbus::ObjectPath("/");
}

// The object paths of `names`, each made by `pathOf` (core::devicePath, ...).
std::vector<sdbus::ObjectPath> pathsOf(const std::vector<std::string>& names,
                                       std::string (*pathOf)(const std::string&)) {
    std::vector<sdbus::ObjectPath> out;
    out.reserve(names.size());
    for (const auto& n : names) {
        out.emplace_back(pathOf(n));
    }
    return out;
}

std::vector<sdbus::ObjectPath> devicePaths(const std::vector<std::string>& addresses) {
    return pathsOf(addresses, core::devicePath);
}

} // namespace

// ---- Device -------------------------------------------------------------------

namespace {

using Dvsec = sdbus::Struct<uint16_t, uint16_t, uint8_t>;

const std::string& idOf(const DeviceData& d) {
    return d.vdpa ? d.vdpa->name : d.pci->address;
}

const core::VtdCaps& vtdOf(const core::IommuUnit& u) {
    static const core::VtdCaps kNone{};
    return u.vtd ? *u.vtd : kNone;
}

} // namespace

template <> const PropertyTable<DeviceData>& propertyTable<DeviceData>() {
    using D = DeviceData;
    static const PropertyTable<D> table(
        spec::Device::kInterface, spec::Device::kProperties, spec::Device::kSignals,
        {
            property<D>("Address", [](const D& d) { return idOf(d); }),
            property<D>("Kind", [](const D& d) { return uint32_t{d.vdpa ? 2U : 1U}; }),
            property<D>("VendorId", [](const D& d) { return d.pci->vendor; }),
            property<D>("DeviceId", [](const D& d) { return d.pci->device; }),
            property<D>("SubsystemVendorId", [](const D& d) { return d.pci->subsystemVendor; }),
            property<D>("SubsystemDeviceId", [](const D& d) { return d.pci->subsystemDevice; }),
            property<D>("ClassCode", [](const D& d) { return d.pci->classCode; }),
            property<D>("Revision", [](const D& d) { return d.pci->revision; }),
            property<D>("Driver",
                        [](const D& d) { return d.vdpa ? d.vdpa->driver : d.pci->driver; }),
            property<D>("DriverOverride", [](const D& d) { return d.pci->driverOverride; }),
            property<D>("NumaNode", [](const D& d) { return d.pci->numaNode; }),
            property<D>("Group",
                        [](const D& d) {
                            return d.pci->group ? sdbus::ObjectPath(core::groupPath(*d.pci->group))
                                                : none();
                        }),
            property<D>("Unit",
                        [](const D& d) {
                            return d.pci->iommuUnit.empty()
                                       ? none()
                                       : sdbus::ObjectPath(core::unitPath(d.pci->iommuUnit));
                        }),
            property<D>("PhysicalFunction",
                        [](const D& d) {
                            return d.pci->physfn.empty()
                                       ? none()
                                       : sdbus::ObjectPath(core::devicePath(d.pci->physfn));
                        }),
            property<D>("VirtualFunctions", [](const D& d) { return devicePaths(d.pci->virtfns); }),
            property<D>("SriovTotalVfs", [](const D& d) { return d.pci->sriovTotalVfs; }),
            property<D>("SriovNumVfs", [](const D& d) { return d.pci->sriovNumVfs; }),
            property<D>("VfioDevice", [](const D& d) { return d.pci->vfioDevice; }),
            property<D>("VfioCdev",
                        [](const D& d) {
                            return d.pci->vfioDevice.empty()
                                       ? std::string()
                                       : underRoot(d.devRoot, "vfio/devices/" + d.pci->vfioDevice);
                        }),
            property<D>("HeaderType", [](const D& d) { return d.pci->headerType; }),
            property<D>("ConfigSize", [](const D& d) { return d.pci->configSize; }),
            property<D>("Pasid", [](const D& d) { return d.pci->caps.pasid.present; }),
            property<D>("PasidExec", [](const D& d) { return d.pci->caps.pasid.exec; }),
            property<D>("PasidPriv", [](const D& d) { return d.pci->caps.pasid.priv; }),
            property<D>("PasidMaxWidth", [](const D& d) { return d.pci->caps.pasid.maxWidth; }),
            property<D>("Ats", [](const D& d) { return d.pci->caps.ats.present; }),
            property<D>("AtsInvalidateQueueDepth",
                        [](const D& d) { return d.pci->caps.ats.invalidateQueueDepth; }),
            property<D>("Pri", [](const D& d) { return d.pci->caps.pri.present; }),
            property<D>("PriOutstandingCapacity",
                        [](const D& d) { return d.pci->caps.pri.outstandingCapacity; }),
            property<D>("Acs", [](const D& d) { return d.pci->caps.acs.present; }),
            property<D>("AcsCapability", [](const D& d) { return d.pci->caps.acs.capability; }),
            property<D>("Sriov", [](const D& d) { return d.pci->caps.sriov.present; }),
            property<D>("Siov", [](const D& d) { return d.pci->caps.siov; }),
            property<D>("Dvsecs",
                        [](const D& d) {
                            std::vector<Dvsec> out;
                            out.reserve(d.pci->caps.dvsecs.size());
                            for (const auto& v : d.pci->caps.dvsecs) {
                                out.emplace_back(v.vendor, v.id, v.revision);
                            }
                            return out;
                        }),
            property<D>("ExtendedCapabilities",
                        [](const D& d) {
                            std::vector<Dvsec> out;
                            out.reserve(d.pci->caps.extended.size());
                            for (const auto& c : d.pci->caps.extended) {
                                out.emplace_back(c.offset, c.id, c.version);
                            }
                            return out;
                        }),
            property<D>("Queues",
                        [](const D& d) { return pathsOf(d.links.queues, core::queuePath); }),
            property<D>("VdpaManagementDevice",
                        [](const D& d) { return d.vdpa ? d.vdpa->mgmtdev : std::string(); }),
            property<D>("ParentDevice",
                        [](const D& d) {
                            return d.vdpa && !d.vdpa->parentDevice.empty()
                                       ? sdbus::ObjectPath(core::devicePath(d.vdpa->parentDevice))
                                       : none();
                        }),
            property<D>("VhostDevice",
                        [](const D& d) {
                            return d.vdpa ? underRoot(d.devRoot, d.vdpa->vhostDevice)
                                          : std::string();
                        }),
            property<D>("VdpaDevices",
                        [](const D& d) { return pathsOf(d.links.vdpa, core::vdpaPath); }),
            property<D>("HeldBy",
                        [](const D& d) {
                            const uint64_t holder =
                                d.engine != nullptr ? d.engine->holderOf(idOf(d)) : 0;
                            return holder == 0 ? none() : sdbus::ObjectPath(contextPath(holder));
                        }),
            property<D>("Warnings",
                        [](const D& d) { return d.vdpa ? d.vdpa->warnings : d.pci->warnings; }),
        });
    return table;
}

// ---- Group --------------------------------------------------------------------

template <> const PropertyTable<core::IommuGroup>& propertyTable<core::IommuGroup>() {
    using G = core::IommuGroup;
    static const PropertyTable<G> table(
        spec::Group::kInterface, spec::Group::kProperties, spec::Group::kSignals,
        {
            property<G>("Id", [](const G& g) { return g.id; }),
            property<G>("Type", [](const G& g) { return static_cast<uint32_t>(g.type); }),
            property<G>("TypeName", [](const G& g) { return g.typeName; }),
            property<G>("ReservedRegions",
                        [](const G& g) {
                            std::vector<sdbus::Struct<uint64_t, uint64_t, std::string>> out;
                            out.reserve(g.reservedRegions.size());
                            for (const auto& r : g.reservedRegions) {
                                out.emplace_back(r.start, r.end, r.type);
                            }
                            return out;
                        }),
            property<G>("Devices", [](const G& g) { return devicePaths(g.devices); }),
            property<G>("Viable", [](const G& g) { return g.viable; }),
            property<G>("Blockers",
                        [](const G& g) {
                            std::vector<std::string> out;
                            out.reserve(g.blockers.size());
                            for (const auto& b : g.blockers) {
                                out.push_back(core::blockerText(b));
                            }
                            return out;
                        }),
            property<G>("Warnings", [](const G& g) { return g.warnings; }),
        });
    return table;
}

// ---- Unit ---------------------------------------------------------------------

template <> const PropertyTable<core::IommuUnit>& propertyTable<core::IommuUnit>() {
    using U = core::IommuUnit;
    static const PropertyTable<U> table(
        spec::Unit::kInterface, spec::Unit::kProperties, spec::Unit::kSignals,
        {
            property<U>("Name", [](const U& u) { return u.name; }),
            property<U>("Kind", [](const U& u) { return static_cast<uint32_t>(u.kind); }),
            property<U>("Version", [](const U& u) { return u.version; }),
            property<U>("Cap", [](const U& u) { return vtdOf(u).cap; }),
            property<U>("Ecap", [](const U& u) { return vtdOf(u).ecap; }),
            property<U>("ScalableMode", [](const U& u) { return vtdOf(u).scalableMode; }),
            property<U>("Pasid", [](const U& u) { return vtdOf(u).pasid; }),
            property<U>("PasidWidth", [](const U& u) { return vtdOf(u).pasidWidth; }),
            property<U>("Nesting", [](const U& u) { return vtdOf(u).nesting; }),
            property<U>("PageRequest", [](const U& u) { return vtdOf(u).pageRequest; }),
            property<U>("FirstLevel", [](const U& u) { return vtdOf(u).firstLevel; }),
            property<U>("SecondLevel", [](const U& u) { return vtdOf(u).secondLevel; }),
            property<U>("DeviceTlb", [](const U& u) { return vtdOf(u).deviceTlb; }),
            property<U>("MaxAddressWidth", [](const U& u) { return vtdOf(u).maxAddressWidth; }),
            property<U>("Devices", [](const U& u) { return devicePaths(u.devices); }),
            property<U>("Warnings", [](const U& u) { return u.warnings; }),
        });
    return table;
}

// ---- Queue --------------------------------------------------------------------

template <> const PropertyTable<QueueData>& propertyTable<QueueData>() {
    using Q = QueueData;
    static const PropertyTable<Q> table(
        spec::Queue::kInterface, spec::Queue::kProperties, spec::Queue::kSignals,
        {
            property<Q>("Name", [](const Q& q) { return q.queue->name; }),
            property<Q>("Device",
                        [](const Q& q) {
                            return q.queue->parentDevice.empty()
                                       ? none()
                                       : sdbus::ObjectPath(core::devicePath(q.queue->parentDevice));
                        }),
            property<Q>("IdxdDevice", [](const Q& q) { return q.queue->idxdDevice; }),
            property<Q>("Mode", [](const Q& q) { return static_cast<uint32_t>(q.queue->mode); }),
            property<Q>("Type", [](const Q& q) { return static_cast<uint32_t>(q.queue->type); }),
            property<Q>("State", [](const Q& q) { return static_cast<uint32_t>(q.queue->state); }),
            property<Q>("Size", [](const Q& q) { return q.queue->size; }),
            property<Q>("GroupId", [](const Q& q) { return q.queue->groupId; }),
            property<Q>("Priority", [](const Q& q) { return q.queue->priority; }),
            property<Q>("Threshold", [](const Q& q) { return q.queue->threshold; }),
            property<Q>("WqName", [](const Q& q) { return q.queue->wqName; }),
            property<Q>("CharDevice",
                        [](const Q& q) { return underRoot(q.devRoot, q.queue->charDevice); }),
            property<Q>("HeldBy",
                        [](const Q& q) {
                            std::vector<sdbus::ObjectPath> out;
                            if (q.engine != nullptr) {
                                for (uint64_t holder : q.engine->holdersOf(q.queue->name)) {
                                    out.emplace_back(contextPath(holder));
                                }
                            }
                            return out;
                        }),
            property<Q>("Warnings", [](const Q& q) { return q.queue->warnings; }),
        });
    return table;
}

// ---- Context ------------------------------------------------------------------

std::string contextPath(uint64_t id) {
    return std::string(names::kContextPrefix) + std::to_string(id);
}

uint64_t contextIdOf(const std::string& path) {
    const std::string prefix(names::kContextPrefix);
    if (path.rfind(prefix, 0) != 0 || path.size() == prefix.size() ||
        std::isdigit(static_cast<unsigned char>(path[prefix.size()])) == 0) {
        return 0;
    }
    auto id = core::parseDec(path.substr(prefix.size()));
    return id && *id > 0 ? static_cast<uint64_t>(*id) : 0;
}

namespace {

const core::Context& contextOf(const ContextData& c) {
    static const core::Context kGone{};
    const core::Context* found = c.engine != nullptr ? c.engine->find(c.id) : nullptr;
    return found != nullptr ? *found : kGone;
}

} // namespace

template <> const PropertyTable<ContextData>& propertyTable<ContextData>() {
    using C = ContextData;
    static const PropertyTable<C> table(
        spec::Context::kInterface, spec::Context::kProperties, spec::Context::kSignals,
        {
            property<C>("Vm", [](const C& c) { return contextOf(c).vm; }),
            property<C>("OwnerUid",
                        [](const C& c) { return static_cast<uint32_t>(contextOf(c).ownerUid); }),
            property<C>("OwnerPid",
                        [](const C& c) { return static_cast<uint32_t>(contextOf(c).ownerPid); }),
            property<C>("OwnerBusName", [](const C& c) { return contextOf(c).ownerBusName; }),
            property<C>("Devices",
                        [](const C& c) {
                            std::vector<std::string> out;
                            for (const auto& d : contextOf(c).devices) {
                                out.push_back(d.id);
                            }
                            return out;
                        }),
            property<C>("DeviceObjects",
                        [](const C& c) {
                            std::vector<sdbus::ObjectPath> out;
                            for (const auto& d : contextOf(c).devices) {
                                switch (d.kind) {
                                case core::HeldKind::Vfio:
                                    out.emplace_back(core::devicePath(d.id));
                                    break;
                                case core::HeldKind::Vdpa:
                                    out.emplace_back(core::vdpaPath(d.id));
                                    break;
                                case core::HeldKind::Queue:
                                    out.emplace_back(core::queuePath(d.id));
                                    break;
                                }
                            }
                            return out;
                        }),
            property<C>("Pasids",
                        [](const C& c) {
                            std::vector<sdbus::Struct<uint32_t, std::string>> out;
                            for (const auto& [pasid, device] : contextOf(c).pasids) {
                                out.emplace_back(pasid, device);
                            }
                            return out;
                        }),
            property<C>("VirtualIds",
                        [](const C& c) {
                            std::vector<sdbus::Struct<std::string, uint64_t>> out;
                            for (const auto& [device, id] : contextOf(c).virtualIds) {
                                out.emplace_back(device, id);
                            }
                            return out;
                        }),
            property<C>("IoasId", [](const C& c) { return contextOf(c).ioasId; }),
            property<C>("FaultQueueId", [](const C& c) { return contextOf(c).faultQueueId; }),
            property<C>("Mode",
                        [](const C& c) { return static_cast<uint32_t>(contextOf(c).mode); }),
            property<C>("State",
                        [](const C& c) { return static_cast<uint32_t>(contextOf(c).state); }),
            property<C>("CreatedTime", [](const C& c) { return contextOf(c).createdUsec; }),
            property<C>("FdsHeld", [](const C& c) { return contextOf(c).fdsHeld; }),
        });
    return table;
}

} // namespace svad::dbus
