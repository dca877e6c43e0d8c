// Opens the bus svad and svactl talk on: "system", "session" or an address.
// Header-only, so that svactl needs nothing of the daemon to use it.
#pragma once

#include <memory>
#include <sdbus-c++/sdbus-c++.h>
#include <string>

namespace svad::dbus {

inline std::unique_ptr<sdbus::IConnection> connectBus(const std::string& bus) {
    if (bus == "system") {
        return sdbus::createSystemBusConnection();
    }
    if (bus == "session") {
        return sdbus::createSessionBusConnection();
    }
    return sdbus::createSessionBusConnectionWithAddress(bus);
}

} // namespace svad::dbus
