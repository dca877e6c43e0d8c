#include "svad/dbus/objects.h"

#include "svad/core/parse.h"
#include "svad/core/paths.h"
#include "svad/core/text.h"

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

std::vector<sdbus::ObjectPath> devicePaths(const std::vector<std::string>& addresses) {
    std::vector<sdbus::ObjectPath> out;
    out.reserve(addresses.size());
    for (const auto& a : addresses) {
        out.emplace_back(core::devicePath(a));
    }
    return out;
}

} // namespace

// ---- Device -------------------------------------------------------------------

DeviceObject::DeviceObject(sdbus::IConnection& connection, std::string path, DeviceData data)
    : AdaptorInterfaces(connection, sdbus::ObjectPath(std::move(path))), data_(std::move(data)) {
    registerAdaptor();
}

DeviceObject::~DeviceObject() {
    unregisterAdaptor();
}

void DeviceObject::update(DeviceData data) {
    data_ = std::move(data);
}

std::string DeviceObject::Address() {
    return data_.vdpa ? data_.vdpa->name : data_.pci.address;
}

uint32_t DeviceObject::Kind() {
    return data_.vdpa ? 2 : 1;
}

std::string DeviceObject::Driver() {
    return data_.vdpa ? data_.vdpa->driver : data_.pci.driver;
}

sdbus::ObjectPath DeviceObject::Group() {
    return data_.pci.group ? sdbus::ObjectPath(core::groupPath(*data_.pci.group)) : none();
}

sdbus::ObjectPath DeviceObject::Unit() {
    return data_.pci.iommuUnit.empty() ? none()
                                       : sdbus::ObjectPath(core::unitPath(data_.pci.iommuUnit));
}

sdbus::ObjectPath DeviceObject::PhysicalFunction() {
    return data_.pci.physfn.empty() ? none()
                                    : sdbus::ObjectPath(core::devicePath(data_.pci.physfn));
}

std::vector<sdbus::ObjectPath> DeviceObject::VirtualFunctions() {
    return devicePaths(data_.pci.virtfns);
}

std::string DeviceObject::VfioCdev() {
    return data_.pci.vfioDevice.empty()
               ? std::string()
               : underRoot(data_.devRoot, "vfio/devices/" + data_.pci.vfioDevice);
}

std::vector<sdbus::Struct<uint16_t, uint16_t, uint8_t>> DeviceObject::Dvsecs() {
    std::vector<sdbus::Struct<uint16_t, uint16_t, uint8_t>> out;
    for (const auto& d : data_.pci.caps.dvsecs) {
        out.emplace_back(d.vendor, d.id, d.revision);
    }
    return out;
}

std::vector<sdbus::Struct<uint16_t, uint16_t, uint8_t>> DeviceObject::ExtendedCapabilities() {
    std::vector<sdbus::Struct<uint16_t, uint16_t, uint8_t>> out;
    for (const auto& c : data_.pci.caps.extended) {
        out.emplace_back(c.offset, c.id, c.version);
    }
    return out;
}

std::vector<sdbus::ObjectPath> DeviceObject::Queues() {
    std::vector<sdbus::ObjectPath> out;
    for (const auto& q : data_.links.queues) {
        out.emplace_back(core::queuePath(q));
    }
    return out;
}

std::string DeviceObject::VdpaManagementDevice() {
    return data_.vdpa ? data_.vdpa->mgmtdev : std::string();
}

sdbus::ObjectPath DeviceObject::ParentDevice() {
    if (data_.vdpa && !data_.vdpa->parentDevice.empty()) {
        return sdbus::ObjectPath(core::devicePath(data_.vdpa->parentDevice));
    }
    return none();
}

std::string DeviceObject::VhostDevice() {
    return data_.vdpa ? underRoot(data_.devRoot, data_.vdpa->vhostDevice) : std::string();
}

std::vector<sdbus::ObjectPath> DeviceObject::VdpaDevices() {
    std::vector<sdbus::ObjectPath> out;
    for (const auto& v : data_.links.vdpa) {
        out.emplace_back(core::vdpaPath(v));
    }
    return out;
}

sdbus::ObjectPath DeviceObject::HeldBy() {
    const std::string& id = data_.vdpa ? data_.vdpa->name : data_.pci.address;
    uint64_t holder = data_.engine != nullptr ? data_.engine->holderOf(id) : 0;
    return holder == 0 ? none() : sdbus::ObjectPath(contextPath(holder));
}

std::vector<std::string> DeviceObject::Warnings() {
    return data_.vdpa ? data_.vdpa->warnings : data_.pci.warnings;
}

// ---- Group --------------------------------------------------------------------

GroupObject::GroupObject(sdbus::IConnection& connection, std::string path, core::IommuGroup data)
    : AdaptorInterfaces(connection, sdbus::ObjectPath(std::move(path))), data_(std::move(data)) {
    registerAdaptor();
}

GroupObject::~GroupObject() {
    unregisterAdaptor();
}

void GroupObject::update(core::IommuGroup data) {
    data_ = std::move(data);
}

std::vector<sdbus::Struct<uint64_t, uint64_t, std::string>> GroupObject::ReservedRegions() {
    std::vector<sdbus::Struct<uint64_t, uint64_t, std::string>> out;
    for (const auto& r : data_.reservedRegions) {
        out.emplace_back(r.start, r.end, r.type);
    }
    return out;
}

std::vector<sdbus::ObjectPath> GroupObject::Devices() {
    return devicePaths(data_.devices);
}

std::vector<std::string> GroupObject::Blockers() {
    std::vector<std::string> out;
    out.reserve(data_.blockers.size());
    for (const auto& b : data_.blockers) {
        out.push_back(core::blockerText(b));
    }
    return out;
}

// ---- Unit ---------------------------------------------------------------------

UnitObject::UnitObject(sdbus::IConnection& connection, std::string path, core::IommuUnit data)
    : AdaptorInterfaces(connection, sdbus::ObjectPath(std::move(path))), data_(std::move(data)) {
    registerAdaptor();
}

UnitObject::~UnitObject() {
    unregisterAdaptor();
}

void UnitObject::update(core::IommuUnit data) {
    data_ = std::move(data);
}

const core::VtdCaps& UnitObject::vtd() const {
    static const core::VtdCaps kNone{};
    return data_.vtd ? *data_.vtd : kNone;
}

std::vector<sdbus::ObjectPath> UnitObject::Devices() {
    return devicePaths(data_.devices);
}

// ---- Queue --------------------------------------------------------------------

QueueObject::QueueObject(sdbus::IConnection& connection, std::string path, QueueData data)
    : AdaptorInterfaces(connection, sdbus::ObjectPath(std::move(path))), data_(std::move(data)) {
    registerAdaptor();
}

QueueObject::~QueueObject() {
    unregisterAdaptor();
}

void QueueObject::update(QueueData data) {
    data_ = std::move(data);
}

sdbus::ObjectPath QueueObject::Device() {
    return data_.queue.parentDevice.empty()
               ? none()
               : sdbus::ObjectPath(core::devicePath(data_.queue.parentDevice));
}

std::string QueueObject::CharDevice() {
    return underRoot(data_.devRoot, data_.queue.charDevice);
}

std::vector<sdbus::ObjectPath> QueueObject::HeldBy() {
    std::vector<sdbus::ObjectPath> out;
    if (data_.engine != nullptr) {
        for (uint64_t holder : data_.engine->holdersOf(data_.queue.name)) {
            out.emplace_back(contextPath(holder));
        }
    }
    return out;
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

ContextObject::ContextObject(sdbus::IConnection& connection, std::string path,
                             const core::Engine& engine, uint64_t id)
    : AdaptorInterfaces(connection, sdbus::ObjectPath(std::move(path))), engine_(engine), id_(id) {
    registerAdaptor();
}

ContextObject::~ContextObject() {
    unregisterAdaptor();
}

const core::Context& ContextObject::ctx() const {
    const core::Context* c = engine_.find(id_);
    return c != nullptr ? *c : gone_;
}

// A reason may quote a kernel error about a node under the dev root: bounded, valid UTF-8.
void ContextObject::announceRelease(const std::string& reason) {
    emitReleased(core::cutUtf8(reason, 1024));
    emitInterfacesRemovedSignal();
}

void ContextObject::announceDegraded(const std::string& reason) {
    emitDegraded(core::cutUtf8(reason, 1024));
    announceChanged({"State"});
}

std::vector<std::string> ContextObject::Devices() {
    std::vector<std::string> out;
    for (const auto& d : ctx().devices) {
        out.push_back(d.id);
    }
    return out;
}

std::vector<sdbus::ObjectPath> ContextObject::DeviceObjects() {
    std::vector<sdbus::ObjectPath> out;
    for (const auto& d : ctx().devices) {
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
}

std::vector<sdbus::Struct<uint32_t, std::string>> ContextObject::Pasids() {
    std::vector<sdbus::Struct<uint32_t, std::string>> out;
    for (const auto& [pasid, device] : ctx().pasids) {
        out.emplace_back(pasid, device);
    }
    return out;
}

std::vector<sdbus::Struct<std::string, uint64_t>> ContextObject::VirtualIds() {
    std::vector<sdbus::Struct<std::string, uint64_t>> out;
    for (const auto& [device, id] : ctx().virtualIds) {
        out.emplace_back(device, id);
    }
    return out;
}

} // namespace svad::dbus
