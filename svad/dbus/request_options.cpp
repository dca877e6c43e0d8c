#include "svad/dbus/request_options.h"

#include "svad/core/text.h"
#include "svad/dbus/errors.h"
#include "svad/names.h"

#include <cstdint>

namespace svad::dbus {

namespace {

template <typename T>
T optionValue(const std::string& key, const sdbus::Variant& v, const char* signature) {
    return typedValue<T>("option", key, v, signature);
}

} // namespace

void decodeAllocateOptions(const std::map<std::string, sdbus::Variant>& options,
                           core::AllocateRequest& req) {
    for (const auto& [key, value] : options) {
        if (key == "mode") {
            const auto mode = optionValue<std::string>(key, value, "s");
            // Anything else is Unknown, which the admission table's mode check refuses.
            req.mode = core::contextModeFromName(mode);
        } else if (key == "fault_queue") {
            req.faultQueue = optionValue<bool>(key, value, "b");
        } else if (key == "owner_pid") {
            auto pid = optionValue<uint32_t>(key, value, "u");
            if (pid == 0 || pid > INT32_MAX) {
                throwError(names::Error::InvalidArgument, "option 'owner_pid' is not a pid");
            }
            req.ownerPid = static_cast<pid_t>(pid);
        } else {
            throwError(names::Error::InvalidArgument, "unknown option '" + core::echo(key) +
                                                          "' (known: mode fault_queue owner_pid)");
        }
    }
}

void decodePasidOptions(const std::map<std::string, sdbus::Variant>& options) {
    if (!options.empty()) {
        throwError(names::Error::InvalidArgument, "unknown option '" +
                                                      core::echo(options.begin()->first) +
                                                      "' (none are defined yet)");
    }
}

void decodeReserveOptions(const std::map<std::string, sdbus::Variant>& options,
                          core::AllocateRequest& req, const OwnerUidLookup& ownerUid) {
    for (const auto& [key, value] : options) {
        if (key != "owner_pid") {
            throwError(names::Error::InvalidArgument,
                       "unknown option '" + core::echo(key) + "' (known: owner_pid)");
        }
        const auto pid = optionValue<uint32_t>(key, value, "u");
        auto uid = ownerUid(pid);
        if (!uid.ok()) {
            throw busError(uid.failure());
        }
        req.ownerPid = static_cast<pid_t>(pid);
        req.ownerUid = uid.value();
    }
}

} // namespace svad::dbus
