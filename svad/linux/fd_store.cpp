#include "svad/linux/fd_store.h"

#include "svad/core/log.h"

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <fcntl.h>
#include <systemd/sd-daemon.h>

namespace svad::linux_impl {

ports::Status SystemdFdStore::keep(const std::string& name, int fd) {
    const std::string message = "FDSTORE=1\nFDPOLL=0\nFDNAME=" + name;
    const int r = sd_pid_notify_with_fds(0, 0, message.c_str(), &fd, 1);
    if (r < 0) {
        return ports::KernelError{-r, "cannot hand fd " + name + " to the service manager's store"};
    }
    if (r == 0 && !toldNone_) {
        // Not under a service manager (started by hand, or in a test): said once.
        toldNone_ = true;
        log::info("no service manager: the contexts' fds are not kept across restarts");
    }
    return ports::okStatus();
}

void SystemdFdStore::drop(const std::string& name) {
    (void)sd_notify(0, ("FDSTOREREMOVE=1\nFDNAME=" + name).c_str());
}

std::vector<ports::StoredFd> SystemdFdStore::takePassed() {
    std::vector<ports::StoredFd> out;
    char** names = nullptr;
    const int n = sd_listen_fds_with_names(1, &names);
    for (int i = 0; i < n; ++i) {
        const int fd = SD_LISTEN_FDS_START + i;
        (void)::fcntl(fd, F_SETFD, FD_CLOEXEC);
        std::string name = names != nullptr && names[i] != nullptr ? names[i] : "";
        out.push_back(ports::StoredFd{std::move(name), ports::UniqueFd(fd)});
    }
    if (names != nullptr) {
        for (int i = 0; names[i] != nullptr; ++i) {
            std::free(names[i]); // NOLINT(cppcoreguidelines-no-malloc): sd-daemon's allocation
        }
        std::free(static_cast<void*>(names)); // NOLINT(cppcoreguidelines-no-malloc)
    }
    return out;
}

} // namespace svad::linux_impl
