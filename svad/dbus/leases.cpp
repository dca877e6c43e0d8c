#include "svad/dbus/leases.h"

#include "svad/core/log.h"

#include <algorithm>
#include <boost/asio/post.hpp>
#include <cerrno>
#include <fcntl.h>
#include <sys/syscall.h>
#include <unistd.h>

namespace svad::dbus {

Leases::Leases(boost::asio::io_context& io, core::Engine& engine, std::function<void()> released)
    : io_(io), engine_(engine), released_(std::move(released)) {
    engine_.addObserver(this);
}

Leases::~Leases() {
    alive_.reset();
    engine_.removeObserver(this);
    pidWatches_.clear();
}

size_t Leases::nameWatched() const {
    size_t n = 0;
    for (const auto& [name, ids] : nameWatches_) {
        n += ids.size();
    }
    return n;
}

void Leases::end(uint64_t id, const std::string& reason) {
    engine_.releaseAsync(id, reason, released_);
}

void Leases::endIfOwner(uint64_t id, pid_t owner, const std::string& reason) {
    // A reservation handed to a new owner meanwhile (SetVmOwner) follows that one:
    // the old owner's exit, already queued, ends nothing.
    const core::Context* ctx = engine_.find(id);
    if (ctx != nullptr && ctx->ownerPid == owner) {
        end(id, reason);
    }
}

void Leases::contextCreated(const core::Context& ctx) {
    follow(ctx);
}

void Leases::contextOwnerChanged(const core::Context& ctx) {
    forget(ctx.id);
    follow(ctx);
}

void Leases::follow(const core::Context& ctx) {
    const uint64_t id = ctx.id;
    // A reservation without an owner yet is held by its VM's name alone.
    if (ctx.mode == core::ContextMode::Reserved && ctx.ownerPid <= 0) {
        return;
    }
    errno = 0;
    int pidfd =
        ctx.ownerPid > 0 ? static_cast<int>(::syscall(SYS_pidfd_open, ctx.ownerPid, 0)) : -1;
    if (pidfd >= 0) {
        ::fcntl(pidfd, F_SETFD, FD_CLOEXEC);
        std::unique_ptr<boost::asio::posix::stream_descriptor> watch;
        try {
            watch = std::make_unique<boost::asio::posix::stream_descriptor>(io_, pidfd);
        } catch (const std::exception& e) {
            ::close(pidfd);
            log::warning(std::string("cannot watch the owner's pidfd, following its bus name: ") +
                             e.what(),
                         {{"CONTEXT", std::to_string(id)}});
            watchName(ctx);
            return;
        }
        std::weak_ptr<int> alive = alive_;
        const pid_t owner = ctx.ownerPid;
        watch->async_wait(boost::asio::posix::stream_descriptor::wait_read,
                          [this, alive, id, owner](const boost::system::error_code& ec) {
                              if (ec || !alive.lock()) {
                                  return;
                              }
                              endIfOwner(id, owner, "owner process exited");
                          });
        pidWatches_.emplace(id, std::move(watch));
        return;
    }
    if (errno == ESRCH) {
        // The owner is already gone: the lease ends as soon as it began.
        std::weak_ptr<int> alive = alive_;
        boost::asio::post(io_, [this, alive, id, owner = ctx.ownerPid] {
            if (alive.lock()) {
                endIfOwner(id, owner, "owner process exited");
            }
        });
        return;
    }
    watchName(ctx);
}

void Leases::watchName(const core::Context& ctx) {
    if (ctx.ownerBusName.empty()) {
        // A reservation's caller is not its owner: without a pidfd it stays
        // until it is released, by the context or by the VM's name.
        log::warning("cannot follow the owner of a reservation (no pidfd): it stays until released",
                     {{"CONTEXT", std::to_string(ctx.id)}, {"VM", ctx.vm}});
        return;
    }
    nameWatches_[ctx.ownerBusName].push_back(ctx.id);
}

void Leases::forget(uint64_t id) {
    pidWatches_.erase(id);
    for (auto it = nameWatches_.begin(); it != nameWatches_.end();) {
        std::erase(it->second, id);
        it = it->second.empty() ? nameWatches_.erase(it) : std::next(it);
    }
}

void Leases::contextReleased(const core::Context& ctx, const std::string& /*reason*/) {
    forget(ctx.id);
}

void Leases::nameLost(const std::string& name) {
    auto it = nameWatches_.find(name);
    if (it == nameWatches_.end()) {
        return;
    }
    auto ids = it->second;
    for (uint64_t id : ids) {
        end(id, "owner left the bus");
    }
}

} // namespace svad::dbus
