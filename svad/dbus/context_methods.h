// The Manager's context methods (AllocateContext, ReleaseContext, the PASID
// and virtual ID calls) and the context objects on the bus. Every method is
// asynchronous: the caller's identity, the plugins and the kernel work happen
// off the loop, and the answer goes out when they are done.
//
// The context objects follow the engine (this is a ContextObserver): one
// appears with InterfacesAdded when the engine stores a context, and goes
// with Released and InterfacesRemoved when the engine lets it go, whoever
// ended it (its owner, its lease, a reply the bus would not deliver).
#pragma once

#include "svad/core/engine.h"
#include "svad/dbus/caller_identity.h"
#include "svad/dbus/host_publisher.h"
#include "svad/dbus/object_listing.h"
#include "svad/dbus/objects.h"
#include "svad/dbus/service_metrics.h"

#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <sdbus-c++/sdbus-c++.h>
#include <string>
#include <vector>

namespace svad::dbus {

class ContextMethods final : public core::ContextObserver {
public:
    struct Hooks {
        // A plugin rebound drivers while preparing: publish the host as it is now.
        std::function<void()> rescan;
        // Something was answered late, from a callback: svad's loop flushes the bus.
        std::function<void()> kick;
        // A process's uid (nullopt: no such process), for a reservation's owner.
        std::function<std::optional<uid_t>(pid_t)> processUid;
    };
    ContextMethods(boost::asio::io_context& io, sdbus::IConnection& connection, sdbus::IProxy& bus,
                   core::Engine& engine, CallerIdentity& identity, HostPublisher& host,
                   ServiceMetrics& metrics, Hooks hooks);
    ~ContextMethods() override;
    ContextMethods(const ContextMethods&) = delete;
    ContextMethods& operator=(const ContextMethods&) = delete;

    // `call` is the method call being handled: the reply goes out by hand, to learn
    // its cookie (the bus refuses a reply with fds to a client without fd passing
    // only after the fact).
    void allocate(sdbus::MethodCall call, const std::string& sender, std::string vm,
                  std::vector<std::string> devices, std::map<std::string, sdbus::Variant> options);
    void release(const std::shared_ptr<sdbus::Result<>>& result, const std::string& sender,
                 const std::string& context);
    void allocatePasid(const std::shared_ptr<sdbus::Result<uint32_t>>& result,
                       const std::string& sender, const std::string& context, std::string device,
                       std::map<std::string, sdbus::Variant> options);
    void releasePasid(const std::shared_ptr<sdbus::Result<>>& result, const std::string& sender,
                      const std::string& context, uint32_t pasid);
    void setVirtualId(const std::shared_ptr<sdbus::Result<>>& result, const std::string& sender,
                      const std::string& context, const std::string& device, uint64_t virtId);

    // VM-lifetime reservations: ReserveDevices, SetVmOwner, ReleaseVm.
    using ReserveResult = sdbus::Result<sdbus::ObjectPath, std::map<std::string, sdbus::Variant>>;
    void reserve(const std::shared_ptr<ReserveResult>& result, const std::string& sender,
                 std::string vm, std::vector<std::string> devices,
                 std::map<std::string, sdbus::Variant> options);
    void setVmOwner(const std::shared_ptr<sdbus::Result<std::vector<sdbus::ObjectPath>>>& result,
                    const std::string& sender, std::string vm, uint32_t pid);
    void releaseVm(const std::shared_ptr<sdbus::Result<uint32_t>>& result,
                   const std::string& sender, std::string vm);

    // The context objects at or after `start`, at most `limit` (0: all), appended to `out`.
    void list(const std::string& start, uint32_t limit, std::vector<ListedObject>& out) const;

    void contextCreated(const core::Context& ctx) override;
    void contextStateChanged(const core::Context& ctx, const std::string& reason) override;
    void contextReleased(const core::Context& ctx, const std::string& reason) override;
    void contextOwnerChanged(const core::Context& ctx) override;

private:
    // What a reservation's reply says of its devices.
    std::map<std::string, sdbus::Variant> reservationInfo(const core::Context& ctx) const;
    // A pid given by a caller, with its uid; InvalidArgument when there is no such process.
    core::Outcome<uid_t> ownerUidOf(const std::string& what, uint32_t pid) const;
    // The context at `path`, or NotFound.
    core::Outcome<uint64_t> contextAt(const std::string& path) const;
    // Runs `then` with the admin behind `sender`; a refusal goes to `fail`.
    void asAdmin(const std::string& action, const std::string& sender,
                 std::function<void(const core::Failure&)> fail,
                 std::function<void(const core::Caller&)> then);
    void handOver(sdbus::MethodCall call, const core::Context& ctx,
                  std::chrono::steady_clock::time_point started, const core::Caller& caller);
    // Follows a sent reply that carries a context's fds until the bus has passed it on;
    // if the bus refuses it (onBusError), the context is taken back.
    void watchDelivery(uint64_t id, uint64_t cookie, sdbus::MethodCall call);
    // Asks the bus, with one call, whether it has handled the replies sent so far.
    void checkDelivery();
    void onBusError(sdbus::Message& message);

    sdbus::IConnection& connection_;
    sdbus::IProxy& bus_;
    core::Engine& engine_;
    CallerIdentity& identity_;
    HostPublisher& host_;
    ServiceMetrics& metrics_;
    Hooks hooks_;
    Subtree<ContextData> objects_; // the contexts on the bus, by path
    // Replies carrying fds, by cookie, until the bus has handled them.
    struct PendingReply {
        uint64_t context = 0;
        sdbus::MethodCall call; // to answer with an error when the reply is refused
    };
    std::map<uint64_t, PendingReply> pendingReplies_;
    // The cookies of those replies that no delivery check covers yet, and the timer
    // that sends the next check (one a period, whatever the rate of allocations).
    std::vector<uint64_t> unchecked_;
    boost::asio::steady_timer deliveryCheck_;
    bool checkScheduled_ = false;
    sdbus::Slot busErrors_;
    std::shared_ptr<int> alive_ = std::make_shared<int>(0);
};

} // namespace svad::dbus
