// Object paths of svad's objects, built from the names in api/svad/names.h.
#pragma once

#include "svad/core/parse.h"
#include "svad/names.h"

#include <cstdint>
#include <string>

namespace svad::core {

inline std::string devicePath(const std::string& address) {
    return std::string(names::kDevicePrefix) + pathLabel(address);
}
inline std::string vdpaPath(const std::string& name) {
    return std::string(names::kVdpaPrefix) + pathLabel(name);
}
inline std::string groupPath(uint32_t id) {
    return std::string(names::kGroupPrefix) + std::to_string(id);
}
inline std::string unitPath(const std::string& name) {
    return std::string(names::kUnitPrefix) + pathLabel(name);
}
inline std::string queuePath(const std::string& name) {
    return std::string(names::kQueuePrefix) + pathLabel(name);
}

} // namespace svad::core
