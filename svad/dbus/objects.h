// The bus objects: thin adaptors over the generated sdbus-c++ classes. Each
// holds a snapshot of its model object and answers property reads from it.
#pragma once

#include "svad/core/engine.h"
#include "svad/core/model.h"
#include "svad/dbus/Context_adaptor.h"
#include "svad/dbus/Device_adaptor.h"
#include "svad/dbus/Group_adaptor.h"
#include "svad/dbus/Queue_adaptor.h"
#include "svad/dbus/Unit_adaptor.h"
#include "svad/dbus/object_listing.h"
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

class DeviceObject final
    : public sdbus::AdaptorInterfaces<org::svad::Svad1::Device_adaptor,
                                      sdbus::ManagedObject_adaptor, sdbus::Properties_adaptor> {
public:
    using Adaptor = org::svad::Svad1::Device_adaptor;
    // Calls v(name, value) for each property of the interface, in the XML's order.
    template <typename V> void visitProperties(V& v) {
        v("Address", Address());
        v("Kind", Kind());
        v("VendorId", VendorId());
        v("DeviceId", DeviceId());
        v("SubsystemVendorId", SubsystemVendorId());
        v("SubsystemDeviceId", SubsystemDeviceId());
        v("ClassCode", ClassCode());
        v("Revision", Revision());
        v("Driver", Driver());
        v("DriverOverride", DriverOverride());
        v("NumaNode", NumaNode());
        v("Group", Group());
        v("Unit", Unit());
        v("PhysicalFunction", PhysicalFunction());
        v("VirtualFunctions", VirtualFunctions());
        v("SriovTotalVfs", SriovTotalVfs());
        v("SriovNumVfs", SriovNumVfs());
        v("VfioDevice", VfioDevice());
        v("VfioCdev", VfioCdev());
        v("HeaderType", HeaderType());
        v("ConfigSize", ConfigSize());
        v("Pasid", Pasid());
        v("PasidExec", PasidExec());
        v("PasidPriv", PasidPriv());
        v("PasidMaxWidth", PasidMaxWidth());
        v("Ats", Ats());
        v("AtsInvalidateQueueDepth", AtsInvalidateQueueDepth());
        v("Pri", Pri());
        v("PriOutstandingCapacity", PriOutstandingCapacity());
        v("Acs", Acs());
        v("AcsCapability", AcsCapability());
        v("Sriov", Sriov());
        v("Siov", Siov());
        v("Dvsecs", Dvsecs());
        v("ExtendedCapabilities", ExtendedCapabilities());
        v("Queues", Queues());
        v("VdpaManagementDevice", VdpaManagementDevice());
        v("ParentDevice", ParentDevice());
        v("VhostDevice", VhostDevice());
        v("VdpaDevices", VdpaDevices());
        v("HeldBy", HeldBy());
        v("Warnings", Warnings());
    }
    DeviceObject(sdbus::IConnection& connection, std::string path, DeviceData data);
    ~DeviceObject();
    void update(DeviceData data);
    const DeviceData& data() const { return data_; }

private:
    std::string Address() override;
    uint32_t Kind() override;
    uint16_t VendorId() override { return data_.pci.vendor; }
    uint16_t DeviceId() override { return data_.pci.device; }
    uint16_t SubsystemVendorId() override { return data_.pci.subsystemVendor; }
    uint16_t SubsystemDeviceId() override { return data_.pci.subsystemDevice; }
    uint32_t ClassCode() override { return data_.pci.classCode; }
    uint8_t Revision() override { return data_.pci.revision; }
    std::string Driver() override;
    std::string DriverOverride() override { return data_.pci.driverOverride; }
    int32_t NumaNode() override { return data_.pci.numaNode; }
    sdbus::ObjectPath Group() override;
    sdbus::ObjectPath Unit() override;
    sdbus::ObjectPath PhysicalFunction() override;
    std::vector<sdbus::ObjectPath> VirtualFunctions() override;
    uint32_t SriovTotalVfs() override { return data_.pci.sriovTotalVfs; }
    uint32_t SriovNumVfs() override { return data_.pci.sriovNumVfs; }
    std::string VfioDevice() override { return data_.pci.vfioDevice; }
    std::string VfioCdev() override;
    uint32_t ConfigSize() override { return data_.pci.configSize; }
    uint8_t HeaderType() override { return data_.pci.headerType; }
    bool Pasid() override { return data_.pci.caps.pasid.present; }
    bool PasidExec() override { return data_.pci.caps.pasid.exec; }
    bool PasidPriv() override { return data_.pci.caps.pasid.priv; }
    uint32_t PasidMaxWidth() override { return data_.pci.caps.pasid.maxWidth; }
    bool Ats() override { return data_.pci.caps.ats.present; }
    uint32_t AtsInvalidateQueueDepth() override { return data_.pci.caps.ats.invalidateQueueDepth; }
    bool Pri() override { return data_.pci.caps.pri.present; }
    uint32_t PriOutstandingCapacity() override { return data_.pci.caps.pri.outstandingCapacity; }
    bool Acs() override { return data_.pci.caps.acs.present; }
    uint16_t AcsCapability() override { return data_.pci.caps.acs.capability; }
    bool Sriov() override { return data_.pci.caps.sriov.present; }
    bool Siov() override { return data_.pci.caps.siov; }
    std::vector<sdbus::Struct<uint16_t, uint16_t, uint8_t>> Dvsecs() override;
    std::vector<sdbus::Struct<uint16_t, uint16_t, uint8_t>> ExtendedCapabilities() override;
    std::vector<sdbus::ObjectPath> Queues() override;
    std::string VdpaManagementDevice() override;
    sdbus::ObjectPath ParentDevice() override;
    std::string VhostDevice() override;
    std::vector<sdbus::ObjectPath> VdpaDevices() override;
    sdbus::ObjectPath HeldBy() override;
    std::vector<std::string> Warnings() override;

    DeviceData data_;
};

class GroupObject final
    : public sdbus::AdaptorInterfaces<org::svad::Svad1::Group_adaptor, sdbus::ManagedObject_adaptor,
                                      sdbus::Properties_adaptor> {
public:
    using Adaptor = org::svad::Svad1::Group_adaptor;
    // Calls v(name, value) for each property of the interface, in the XML's order.
    template <typename V> void visitProperties(V& v) {
        v("Id", Id());
        v("Type", Type());
        v("TypeName", TypeName());
        v("ReservedRegions", ReservedRegions());
        v("Devices", Devices());
        v("Viable", Viable());
        v("Blockers", Blockers());
        v("Warnings", Warnings());
    }
    GroupObject(sdbus::IConnection& connection, std::string path, core::IommuGroup data);
    ~GroupObject();
    void update(core::IommuGroup data);
    const core::IommuGroup& data() const { return data_; }

private:
    uint32_t Id() override { return data_.id; }
    uint32_t Type() override { return static_cast<uint32_t>(data_.type); }
    std::string TypeName() override { return data_.typeName; }
    std::vector<sdbus::Struct<uint64_t, uint64_t, std::string>> ReservedRegions() override;
    std::vector<sdbus::ObjectPath> Devices() override;
    bool Viable() override { return data_.viable; }
    std::vector<std::string> Blockers() override;
    std::vector<std::string> Warnings() override { return data_.warnings; }

    core::IommuGroup data_;
};

class UnitObject final
    : public sdbus::AdaptorInterfaces<org::svad::Svad1::Unit_adaptor, sdbus::ManagedObject_adaptor,
                                      sdbus::Properties_adaptor> {
public:
    using Adaptor = org::svad::Svad1::Unit_adaptor;
    // Calls v(name, value) for each property of the interface, in the XML's order.
    template <typename V> void visitProperties(V& v) {
        v("Name", Name());
        v("Kind", Kind());
        v("Version", Version());
        v("Cap", Cap());
        v("Ecap", Ecap());
        v("ScalableMode", ScalableMode());
        v("Pasid", Pasid());
        v("PasidWidth", PasidWidth());
        v("Nesting", Nesting());
        v("PageRequest", PageRequest());
        v("FirstLevel", FirstLevel());
        v("SecondLevel", SecondLevel());
        v("DeviceTlb", DeviceTlb());
        v("MaxAddressWidth", MaxAddressWidth());
        v("Devices", Devices());
        v("Warnings", Warnings());
    }
    UnitObject(sdbus::IConnection& connection, std::string path, core::IommuUnit data);
    ~UnitObject();
    void update(core::IommuUnit data);
    const core::IommuUnit& data() const { return data_; }

private:
    std::string Name() override { return data_.name; }
    uint32_t Kind() override { return static_cast<uint32_t>(data_.kind); }
    std::string Version() override { return data_.version; }
    uint64_t Cap() override { return vtd().cap; }
    uint64_t Ecap() override { return vtd().ecap; }
    bool ScalableMode() override { return vtd().scalableMode; }
    bool Pasid() override { return vtd().pasid; }
    uint32_t PasidWidth() override { return vtd().pasidWidth; }
    bool Nesting() override { return vtd().nesting; }
    bool PageRequest() override { return vtd().pageRequest; }
    bool FirstLevel() override { return vtd().firstLevel; }
    bool SecondLevel() override { return vtd().secondLevel; }
    bool DeviceTlb() override { return vtd().deviceTlb; }
    uint32_t MaxAddressWidth() override { return vtd().maxAddressWidth; }
    std::vector<sdbus::ObjectPath> Devices() override;
    std::vector<std::string> Warnings() override { return data_.warnings; }
    const core::VtdCaps& vtd() const;

    core::IommuUnit data_;
};

struct QueueData {
    std::string devRoot;
    const core::Engine* engine = nullptr;
    core::SiovQueue queue;
    bool operator==(const QueueData&) const = default;
};

class QueueObject final
    : public sdbus::AdaptorInterfaces<org::svad::Svad1::Queue_adaptor, sdbus::ManagedObject_adaptor,
                                      sdbus::Properties_adaptor> {
public:
    using Adaptor = org::svad::Svad1::Queue_adaptor;
    // Calls v(name, value) for each property of the interface, in the XML's order.
    template <typename V> void visitProperties(V& v) {
        v("Name", Name());
        v("Device", Device());
        v("IdxdDevice", IdxdDevice());
        v("Mode", Mode());
        v("Type", Type());
        v("State", State());
        v("Size", Size());
        v("GroupId", GroupId());
        v("Priority", Priority());
        v("Threshold", Threshold());
        v("WqName", WqName());
        v("CharDevice", CharDevice());
        v("HeldBy", HeldBy());
        v("Warnings", Warnings());
    }
    QueueObject(sdbus::IConnection& connection, std::string path, QueueData data);
    ~QueueObject();
    void update(QueueData data);
    const QueueData& data() const { return data_; }

private:
    std::string Name() override { return data_.queue.name; }
    sdbus::ObjectPath Device() override;
    std::string IdxdDevice() override { return data_.queue.idxdDevice; }
    uint32_t Mode() override { return static_cast<uint32_t>(data_.queue.mode); }
    uint32_t Type() override { return static_cast<uint32_t>(data_.queue.type); }
    uint32_t State() override { return static_cast<uint32_t>(data_.queue.state); }
    uint32_t Size() override { return data_.queue.size; }
    int32_t GroupId() override { return data_.queue.groupId; }
    uint32_t Priority() override { return data_.queue.priority; }
    uint32_t Threshold() override { return data_.queue.threshold; }
    std::string WqName() override { return data_.queue.wqName; }
    std::string CharDevice() override;
    std::vector<sdbus::ObjectPath> HeldBy() override;
    std::vector<std::string> Warnings() override { return data_.queue.warnings; }

    QueueData data_;
};

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
