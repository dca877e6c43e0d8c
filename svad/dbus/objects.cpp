#include "svad/dbus/objects.h"

#include "svad/core/paths.h"

namespace svad::dbus {

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

std::string underRoot(const std::string& root, const std::string& rel) {
    if (rel.empty()) {
        return {};
    }
    if (root.empty() || root == "/") {
        return "/" + rel;
    }
    return root + "/" + rel;
}

} // namespace

// ---- Device -------------------------------------------------------------------

DeviceObject::DeviceObject(sdbus::IConnection& connection, std::string path, DeviceData data)
    : AdaptorInterfaces(connection, std::move(path)), data_(std::move(data)) {
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

std::vector<std::string> DeviceObject::Warnings() {
    return data_.vdpa ? data_.vdpa->warnings : data_.pci.warnings;
}

// ---- Group --------------------------------------------------------------------

GroupObject::GroupObject(sdbus::IConnection& connection, std::string path, core::IommuGroup data)
    : AdaptorInterfaces(connection, std::move(path)), data_(std::move(data)) {
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

// ---- Unit ---------------------------------------------------------------------

UnitObject::UnitObject(sdbus::IConnection& connection, std::string path, core::IommuUnit data)
    : AdaptorInterfaces(connection, std::move(path)), data_(std::move(data)) {
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
    : AdaptorInterfaces(connection, std::move(path)), data_(std::move(data)) {
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

} // namespace svad::dbus
