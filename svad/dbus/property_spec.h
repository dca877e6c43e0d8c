// One property or signal of a D-Bus interface as its XML in dbus/ declares it;
// the build writes each interface's tables (svad-property-specs, svad/dbus/gen/).
#pragma once

#include <cstdint>
#include <systemd/sd-bus-vtable.h>

namespace svad::dbus {

struct PropertySpec {
    const char* name;
    const char* signature;
    uint64_t flags; // sd-bus vtable flags: how a change is announced
};

struct SignalSpec {
    const char* name;
    const char* signature;
    const char* names; // each argument's name followed by a NUL, as sd-bus reads them
};

// An interface without signals.
inline constexpr SignalSpec kNoSignals[] = {{nullptr, nullptr, nullptr}};

} // namespace svad::dbus
