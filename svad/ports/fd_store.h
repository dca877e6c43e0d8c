// The service manager's file descriptor store: the fds svad holds for its
// contexts survive svad's own restart (a crash, `systemctl restart`, an
// upgrade) there, and come back at the next start by name. Two
// implementations: systemd's (svad/linux/fd_store.*) and one in memory for
// tests. Without a service manager the store keeps nothing.
#pragma once

#include "svad/ports/kernel.h"

#include <cstdint>
#include <string>
#include <vector>

namespace svad::ports {

struct StoredFd {
    std::string name;
    UniqueFd fd;
};

class FdStore {
public:
    virtual ~FdStore() = default;
    // Hands a duplicate of `fd` to the store under `name` (fdStoreName()).
    virtual Status keep(const std::string& name, int fd) = 0;
    // Drops every fd stored under `name`.
    virtual void drop(const std::string& name) = 0;
};

// The name of one of a context's fds in the store: "ctx12-iommufd",
// "ctx12-dev0" (by the device's place in the context), "ctx12-fault".
// Names are short, plain ASCII and hold no ':' (systemd's rules).
inline std::string fdStoreName(uint64_t context, const std::string& role) {
    return "ctx" + std::to_string(context) + "-" + role;
}

} // namespace svad::ports
