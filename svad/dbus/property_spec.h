// One property of a D-Bus interface as its XML in dbus/ declares it; the
// build writes each interface's table (svad-property-specs, svad/dbus/gen/).
#pragma once

#include <cstdint>
#include <systemd/sd-bus-vtable.h>

namespace svad::dbus {

struct PropertySpec {
    const char* name;
    const char* signature;
    uint64_t flags; // sd-bus vtable flags: how a change is announced
};

} // namespace svad::dbus
