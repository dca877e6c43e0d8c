// systemd's file descriptor store (sd_pid_notify_with_fds, FDSTORE=1,
// FDPOLL=0). The unit must allow it (FileDescriptorStoreMax=); without
// NOTIFY_SOCKET the store keeps nothing and says so once in the log. A name is
// dropped with FDSTOREREMOVE=1.
#pragma once

#include "svad/ports/fd_store.h"

#include <vector>

namespace svad::linux_impl {

class SystemdFdStore final : public ports::FdStore {
public:
    ports::Status keep(const std::string& name, int fd) override;
    void drop(const std::string& name) override;

    // The fds the service manager passed at this start (LISTEN_FDS and
    // LISTEN_FDNAMES), each made close-on-exec; the environment is cleared.
    static std::vector<ports::StoredFd> takePassed();

private:
    bool toldNone_ = false;
};

} // namespace svad::linux_impl
