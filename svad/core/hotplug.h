// From hotplug events to the changes a partial re-read must cover.
#pragma once

#include "svad/core/discovery.h"
#include "svad/ports/hotplug.h"

namespace svad::core {

// Adds what `event` touches to `changes`; false when the event concerns
// nothing svad follows (another subsystem, an action without effect).
bool addEvent(HostChanges& changes, const ports::HotplugEvent& event);

} // namespace svad::core
