// Leases: a context lives as long as its owner (a reservation: once it has one). The owner process
// is followed through a pidfd; when there is none (no pidfd_open, or no pid from the bus), through
// the owner's bus name. When the owner goes, the context is released through the engine like any
// other release. Observes the engine.
#pragma once

#include "svad/core/engine.h"

#include <boost/asio/io_context.hpp>
#include <boost/asio/posix/stream_descriptor.hpp>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

namespace svad::dbus {

class Leases final : public core::ContextObserver {
public:
    // `released` runs after each release a lease started (svad kicks its loop there).
    Leases(boost::asio::io_context& io, core::Engine& engine, std::function<void()> released);
    ~Leases() override;
    Leases(const Leases&) = delete;
    Leases& operator=(const Leases&) = delete;

    // A bus name left the bus: the contexts it owned go.
    void nameLost(const std::string& name);
    size_t watched() const { return pidWatches_.size() + nameWatched(); }

    void contextCreated(const core::Context& ctx) override;
    void contextStateChanged(const core::Context& /*ctx*/, const std::string& /*reason*/) override {
    }
    void contextReleased(const core::Context& ctx, const std::string& reason) override;
    void contextOwnerChanged(const core::Context& ctx) override;

private:
    // Watches the owner's pidfd, else its bus name.
    void follow(const core::Context& ctx);
    void watchName(const core::Context& ctx);
    void forget(uint64_t id);
    size_t nameWatched() const;
    void end(uint64_t id, const std::string& reason);
    // Ends the lease if `owner` still owns the context.
    void endIfOwner(uint64_t id, pid_t owner, const std::string& reason);

    boost::asio::io_context& io_;
    core::Engine& engine_;
    std::function<void()> released_;
    std::map<uint64_t, std::unique_ptr<boost::asio::posix::stream_descriptor>> pidWatches_;
    std::map<std::string, std::vector<uint64_t>> nameWatches_;
    std::shared_ptr<int> alive_ = std::make_shared<int>(0);
};

} // namespace svad::dbus
