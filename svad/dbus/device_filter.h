// The filter of Manager.ListDevices: decoded once from the caller's a{sv}
// (an unknown key or a value of the wrong type is InvalidArgument, never a
// silent match-all), then matched against each published device.
#pragma once

#include "svad/dbus/objects.h"

#include <cstdint>
#include <map>
#include <optional>
#include <sdbus-c++/sdbus-c++.h>
#include <string>

namespace svad::dbus {

class DeviceFilter {
public:
    // Throws the bus error the caller gets.
    static DeviceFilter parse(const std::map<std::string, sdbus::Variant>& filter);
    bool matches(const DeviceData& d) const;

private:
    std::optional<uint32_t> kind_;
    std::optional<std::string> address_;
    std::optional<std::string> driver_;
    std::optional<std::string> unit_;
    std::optional<uint16_t> vendor_;
    std::optional<uint16_t> device_;
    std::optional<uint32_t> group_;
    std::optional<bool> pasid_;
    std::optional<bool> ats_;
    std::optional<bool> pri_;
    std::optional<bool> siov_;
    std::optional<bool> vfio_;
};

} // namespace svad::dbus
