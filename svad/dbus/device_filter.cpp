#include "svad/dbus/device_filter.h"

#include "svad/dbus/errors.h"

namespace svad::dbus {

namespace {

template <typename T>
T filterValue(const std::string& key, const sdbus::Variant& v, const char* signature) {
    return typedValue<T>("filter key", key, v, signature);
}

} // namespace

DeviceFilter DeviceFilter::parse(const std::map<std::string, sdbus::Variant>& filter) {
    DeviceFilter f;
    for (const auto& [key, value] : filter) {
        if (key == "kind") {
            f.kind_ = filterValue<uint32_t>(key, value, "u");
            if (*f.kind_ != 1 && *f.kind_ != 2) {
                throwError(names::Error::InvalidArgument,
                           "filter key 'kind' must be 1 (pci) or 2 (vdpa)");
            }
        } else if (key == "address") {
            f.address_ = filterValue<std::string>(key, value, "s");
        } else if (key == "driver") {
            f.driver_ = filterValue<std::string>(key, value, "s");
        } else if (key == "unit") {
            f.unit_ = filterValue<std::string>(key, value, "s");
        } else if (key == "vendor") {
            f.vendor_ = filterValue<uint16_t>(key, value, "q");
        } else if (key == "device") {
            f.device_ = filterValue<uint16_t>(key, value, "q");
        } else if (key == "group") {
            f.group_ = filterValue<uint32_t>(key, value, "u");
        } else if (key == "pasid") {
            f.pasid_ = filterValue<bool>(key, value, "b");
        } else if (key == "ats") {
            f.ats_ = filterValue<bool>(key, value, "b");
        } else if (key == "pri") {
            f.pri_ = filterValue<bool>(key, value, "b");
        } else if (key == "siov") {
            f.siov_ = filterValue<bool>(key, value, "b");
        } else if (key == "vfio") {
            f.vfio_ = filterValue<bool>(key, value, "b");
        } else {
            throwError(names::Error::InvalidArgument,
                       "unknown filter key '" + core::echo(key) +
                           "' (known: kind address vendor device driver pasid ats pri siov "
                           "group unit vfio)");
        }
    }
    return f;
}

bool DeviceFilter::matches(const DeviceData& d) const {
    const bool isVdpa = d.vdpa != nullptr;
    const auto& pci = *d.pci;
    if (kind_ && *kind_ != (isVdpa ? 2U : 1U)) {
        return false;
    }
    if (address_ && *address_ != (isVdpa ? d.vdpa->name : pci.address)) {
        return false;
    }
    if (driver_ && *driver_ != (isVdpa ? d.vdpa->driver : pci.driver)) {
        return false;
    }
    const bool pciOnlyKey =
        unit_ || vendor_ || device_ || group_ || pasid_ || ats_ || pri_ || siov_ || vfio_;
    if (isVdpa) {
        return !pciOnlyKey;
    }
    return !((unit_ && *unit_ != pci.iommuUnit) || (vendor_ && *vendor_ != pci.vendor) ||
             (device_ && *device_ != pci.device) || (group_ && pci.group != group_) ||
             (pasid_ && *pasid_ != pci.caps.pasid.present) ||
             (ats_ && *ats_ != pci.caps.ats.present) || (pri_ && *pri_ != pci.caps.pri.present) ||
             (siov_ && *siov_ != pci.caps.siov) || (vfio_ && *vfio_ != !pci.vfioDevice.empty()));
}

} // namespace svad::dbus
