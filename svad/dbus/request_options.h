// The a{sv} options of the Manager's request methods (AllocateContext,
// AllocatePasid, ReserveDevices), decoded into the engine's request. An
// unknown key or a value of the wrong type is InvalidArgument: each decoder
// throws the bus error the caller gets, an sdbus::Error named
// org.svad.Svad1.Error.*.
#pragma once

#include "svad/core/admission.h"
#include "svad/core/outcome.h"

#include <cstdint>
#include <functional>
#include <map>
#include <sdbus-c++/sdbus-c++.h>
#include <string>
#include <sys/types.h>

namespace svad::dbus {

// AllocateContext: mode, fault_queue, owner_pid.
void decodeAllocateOptions(const std::map<std::string, sdbus::Variant>& options,
                           core::AllocateRequest& req);

// AllocatePasid: none are defined yet.
void decodePasidOptions(const std::map<std::string, sdbus::Variant>& options);

// The owner's uid for the pid a reservation names, or why there is none.
using OwnerUidLookup = std::function<core::Outcome<uid_t>(uint32_t pid)>;

// ReserveDevices: owner_pid, whose uid `ownerUid` looks up as the key is met.
void decodeReserveOptions(const std::map<std::string, sdbus::Variant>& options,
                          core::AllocateRequest& req, const OwnerUidLookup& ownerUid);

} // namespace svad::dbus
