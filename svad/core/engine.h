// The context engine: what svad hands out, to whom, and how it is taken
// back. It is the one owner of contexts and their lifetime: the D-Bus side,
// the lease watcher and the metrics observe it (ContextObserver). No D-Bus
// here: the adaptors decode a call into a request with the caller's
// credentials, call the engine, and map its Outcome to a reply.
//
// An allocation runs in three steps:
//  1. admit (the calling thread, svad's loop): the admission table
//     (admission.h) runs, and the devices are reserved, so that no other
//     request takes them or a relative while this one is under way; the
//     context's id is taken (and recorded) here, so that what the build
//     records, a rebind for auto_bind, names its context;
//  2. build (the Offload: a worker): the plugins decide (no fd leaves svad
//     without a plugin's ALLOW; each verdict is an audit record) and prepare,
//     the kernel objects are made; each undone on failure by its owner;
//  3. commit (back on the loop): the reservation becomes the context, the
//     observers hear of it, and the caller's `done` runs.
// A release is the reverse: the context stays, held and refusing calls,
// while a copy of its fds is torn down on the Offload; then its PASIDs go
// back to the pool, it leaves the engine and the observers hear of it.
#pragma once

#include "svad/core/admission.h"
#include "svad/core/config.h"
#include "svad/core/host_index.h"
#include "svad/core/model.h"
#include "svad/core/outcome.h"
#include "svad/core/pasid_allocator.h"
#include "svad/core/policy.h"
#include "svad/names.h"
#include "svad/ports/fd_store.h"
#include "svad/ports/kernel.h"
#include "svad/ports/state_store.h"

#include <cstddef>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <sys/types.h>
#include <vector>

namespace svad::core {

enum class ContextState : uint32_t { Unknown = 0, Active = 1, Degraded = 2 };

struct ContextDevice {
    std::string id; // as requested: PCI address, vDPA name, queue name
    HeldKind kind = HeldKind::Vfio;
    ports::UniqueFd fd; // svad's own copy; the caller gets a duplicate
    uint32_t devId = 0; // attached mode, VFIO
    bool attached = false;
    uint32_t vdpaGroups = 0;
    uint32_t vdpaAddressSpaces = 0;
    uint32_t pasidWidth = 0; // 0: no PASID for this device
    std::string plugin;      // the plugin that allowed and prepared it
    std::string rule;        // the configuration rule, empty for the default policy
    std::vector<std::pair<std::string, std::string>> options; // the rule's, as prepared
    // A queue: its node's absolute path. svad hands out no fd for a queue (an idxd
    // queue binds the address space of the process that opens it): the owner's
    // uid may open the node while a context of that uid holds the queue.
    std::string node;
};

struct Context {
    uint64_t id = 0;
    std::string vm;
    uid_t ownerUid = 0;
    pid_t ownerPid = 0;
    std::string ownerBusName;
    ContextMode mode = ContextMode::Handoff;
    ContextState state = ContextState::Active;
    uint64_t createdUsec = 0;
    ports::UniqueFd iommufd;
    uint32_t ioasId = 0;
    uint32_t faultQueueId = 0;
    ports::UniqueFd faultQueueFd;
    std::vector<ports::IovaRange> iovaRanges;
    std::vector<ContextDevice> devices;
    std::map<uint32_t, std::string> pasids;     // pasid -> device
    std::map<std::string, uint64_t> virtualIds; // device -> guest-visible ID
    bool hostChanged = false;                   // a plugin rebound a driver while preparing it
    // False for a context taken back after svad restarted without its fds: its
    // devices and PASIDs stay reserved until its owner lets go, but svad can do
    // no kernel work for it.
    bool fdsHeld = true;
    uint64_t ownerStartTime = 0; // the owner's start time (/proc/PID/stat), to know it again

    const ContextDevice* device(const std::string& id) const;
};

// Where the engine runs its slow parts (plugin decisions, driver rebinds,
// device opens and closes): `work` on another thread, then `then` back on the
// thread that owns the engine. `then` may be dropped when svad stops.
class Offload {
public:
    virtual ~Offload() = default;
    virtual void run(std::function<void()> work, std::function<void()> then) = 0;
};

// Runs both at once on the calling thread: tests, and an engine without a loop.
class InlineOffload final : public Offload {
public:
    void run(std::function<void()> work, std::function<void()> then) override {
        work();
        then();
    }
};

// Hears of every context's life, on the engine's thread.
class ContextObserver {
public:
    virtual ~ContextObserver() = default;
    // A context was stored; its fds are ready to hand over.
    virtual void contextCreated(const Context& ctx) = 0;
    // Its state changed: Degraded (reason: which devices left the host) or Active again.
    virtual void contextStateChanged(const Context& ctx, const std::string& reason) = 0;
    // It is gone from the engine (find() no longer knows it) and its devices are
    // free: its kernel objects are torn down.
    virtual void contextReleased(const Context& ctx, const std::string& reason) = 0;
    // A reservation's owner changed (setVmOwner): its lease follows the new pid.
    virtual void contextOwnerChanged(const Context& /*ctx*/) {}
    // restore() took back the contexts of the last run: each was told as created,
    // with restoring() true (an observer may wait for this to sum them up once).
    virtual void contextsRestored() {}
};

// The ids of the context's devices that are not on `host`, comma-separated;
// empty when every one is.
std::string goneDevices(const Context& ctx, const HostIndex& host);

class Engine final : private Claims {
public:
    Engine(ports::Kernel& kernel, PasidAllocator& pasids, DeviceBroker& broker);
    ~Engine() override;
    Engine(const Engine&) = delete;
    Engine& operator=(const Engine&) = delete;

    // Where contexts are recorded, on the engine's thread, before the reply that
    // reports a change (null, the default: nowhere, and ids start at 1 each run).
    // `startTimeOf` gives an owner's start time, to know the same process again.
    void setStateStore(ports::StateStore* store, std::function<uint64_t(pid_t)> startTimeOf);
    // At start-up, after the first host is set and before any request: takes
    // back the contexts of the last run
    // from the store. Each comes back without its fds (fdsHeld false), holding
    // its devices and PASIDs; the observers hear of it as created. One whose
    // owner is gone (`ownerAlive` false: no such pid, or another process under
    // it) is then released through the normal path.
    struct Restored {
        size_t kept = 0;      // with their fds
        size_t reserved = 0;  // without: fdsHeld false
        size_t released = 0;  // the owner exited while svad was down
        size_t fdsClosed = 0; // passed fds no context took, or not what was stored
        size_t givenBack = 0; // auto_bind records of contexts that did not survive
    };
    // `passed`: the fds the service manager's store gave back at this start; a
    // context whose fds are all there comes back with them (fdsHeld true).
    // Every passed fd no context takes is closed and dropped from the store.
    Restored restore(const std::function<bool(pid_t, uint64_t)>& ownerAlive,
                     std::vector<ports::StoredFd> passed = {});
    // Where a context's fds are kept across svad's restarts (null: nowhere).
    void setFdStore(ports::FdStore* fds) { fdStore_ = fds; }

    // Where build and teardown run; null (the default) runs them inline.
    void setOffload(Offload* offload) { offload_ = offload != nullptr ? offload : &inline_; }
    void addObserver(ContextObserver* observer);
    void removeObserver(ContextObserver* observer);

    // The host the next requests resolve devices against; it is indexed here,
    // once, for the lookups of every request until the next.
    void setHost(Host host);
    // The same for a host indexed already (off the engine's thread); returns the
    // index it replaces, for the caller to let go of where it likes.
    std::shared_ptr<const HostIndex> setHostIndex(std::shared_ptr<const HostIndex> index);
    const Host& host() const { return host_->host(); }
    // The same host, shared: no copy for a reader on another thread.
    std::shared_ptr<const Host> sharedHost() const { return host_->sharedHost(); }
    // The same host's index (valid until the next setHost; share it to keep it).
    const HostIndex& hostIndex() const { return *host_; }
    // How many hosts were set: a reader of host() knows whether it changed.
    uint64_t hostGeneration() const { return hostGeneration_; }
    // The rules the next requests are judged by; contexts already made stay.
    void setConfig(std::shared_ptr<const Config> config);
    const Config& config() const { return *config_; }

    // Admits on the calling thread, builds on the Offload, and calls `done` on the
    // engine's thread with the stored context (valid until it is released) or why not.
    using AllocateDone = std::function<void(Outcome<const Context*>)>;
    void allocate(const AllocateRequest& request, uint64_t nowUsec, AllocateDone done);
    // All three steps on the calling thread.
    Outcome<Context*> allocate(const AllocateRequest& request, uint64_t nowUsec);

    // Whether the caller may act on a context: it exists, and the caller owns it or is root.
    Outcome<Done> checkAccess(uint64_t id, const Caller& caller) const;
    Outcome<Done> checkOwner(const Context& ctx, const Caller& caller) const;
    // Releases a context (the caller must own it, or be root), all on the calling thread.
    Outcome<Done> release(uint64_t id, const Caller& caller);
    // Releases without an ownership check (the owner went away, svad took it back),
    // all on the calling thread.
    void releaseUnchecked(uint64_t id, const std::string& reason = "released by the owner");
    // Releases through the Offload: the context stays (held, readable, refusing
    // every call) until its teardown has run; then it goes, the observers hear of
    // it and `done` runs. For an unknown id `done` runs at once; for one already
    // leaving, with the first release.
    void releaseAsync(uint64_t id, const std::string& reason, std::function<void()> done = {});

    Outcome<uint32_t> allocatePasid(uint64_t id, const std::string& device, const Caller& caller);
    Outcome<Done> releasePasid(uint64_t id, uint32_t pasid, const Caller& caller);
    Outcome<Done> setVirtualId(uint64_t id, const std::string& device, uint64_t virtId,
                               const Caller& caller);

    // VM-lifetime reservations (mode Reserved): devices held for a VM, whoever
    // called. A reservation has no owner until one is named; then it ends when
    // that process exits, like any context. It ends too on ReleaseContext, and
    // when the VM's reservations are released by name.
    // The VM's reservations that are not leaving, oldest first.
    std::vector<uint64_t> reservationsOf(const std::string& vm) const;
    // The VM's reservations follow `pid` (running as `uid`) from now on: each is
    // recorded and the observers hear contextOwnerChanged. The caller must own
    // each (or be root). NotFound when the VM holds none.
    Outcome<std::vector<uint64_t>> setVmOwner(const std::string& vm, pid_t pid, uid_t uid,
                                              const Caller& caller);

    const Context* find(uint64_t id) const;
    const std::map<uint64_t, std::unique_ptr<Context>>& contexts() const { return contexts_; }
    // The context holding a device (PCI address, vDPA name) or queue; 0 if none
    // (the first, for a shared queue).
    uint64_t holderOf(const std::string& device) const;
    std::vector<uint64_t> holdersOf(const std::string& device) const;
    // Marks contexts whose devices are no longer on the host degraded (and those
    // whose devices are back active), telling the observers; returns their ids.
    std::vector<uint64_t> markDegraded();
    // The PASIDs the contexts hold, all together (kept as they come and go).
    size_t pasidCount() const;
    // Allocations under way, and releases still tearing down.
    size_t inFlight() const { return reservations_.size() + leaving_.size(); }
    // Whether restore() is under way.
    bool restoring() const { return restoring_; }

private:
    struct Ticket;
    // The devices of an allocation under way.
    struct Reservation {
        std::string vm;
        std::vector<std::pair<std::string, std::string>> devices; // device, rule
    };
    // A context being torn down: still held and readable, no longer usable.
    struct Leaving {
        std::string reason;
        std::vector<std::function<void()>> done;
    };
    // Claims, for the admission checks.
    std::vector<Holder> holders(const std::string& device) const override;
    uint32_t contextsThroughRule(const std::string& vm, const std::string& rule) const override;

    Outcome<std::unique_ptr<Ticket>> admit(const AllocateRequest& request, uint64_t nowUsec);
    // Runs on the Offload: reads only the ticket, and calls the kernel and the broker.
    Outcome<std::unique_ptr<Context>> build(Ticket& ticket) const;
    Outcome<Context*> commit(Ticket& ticket, Outcome<std::unique_ptr<Context>> built);
    uint64_t reserve(Reservation r);
    void unreserve(uint64_t key);
    // Marks a context leaving; false when it is unknown (done ran) or leaving already.
    bool beginRelease(uint64_t id, const std::string& reason, std::function<void()> done);
    // Moves its kernel objects into a copy for the teardown.
    static std::unique_ptr<Context> takeKernelObjects(Context& ctx);
    // After the teardown: PASIDs back, the context gone, the observers told.
    // `forgotten`: the worker removed its record already.
    void finishRelease(uint64_t id, bool forgotten = false);
    // A context that may be acted on: stored and not leaving.
    Context* usable(uint64_t id);
    // Kernel objects and plugins' undo; runs on the Offload.
    void teardown(Context& ctx) const;
    // The context's PASIDs back to the pool; on the engine's thread.
    void returnPasids(Context& ctx);
    // Queues, on the engine's thread (which sees every holder): the owner's uid
    // gets access to each queue's node; on a failure, what this call granted
    // goes again. revokeQueues takes it away (from the first `count` devices)
    // where no other context of that uid holds the queue.
    Outcome<Done> grantQueues(const Context& ctx);
    void revokeQueues(const Context& ctx, size_t count = SIZE_MAX);
    // The node path of a queue on the current host; empty when it has none.
    std::string queueNode(const std::string& queue) const;
    // "device X,Y removed from the host"; empty when every device of the context is on it.
    static std::string degradedReason(const Context& ctx, const HostIndex& host);

    // The context as the state store keeps it.
    ports::StoredContext stored(const Context& ctx) const;
    // What fstat says of an fd: its type and rdev (nullopt: not open).
    static std::optional<ports::StoredFdIdentity> identityOf(int fd);
    // The context id in an fd store name ("ctx12-dev0": 12); 0 if none.
    static uint64_t contextOfFdName(const std::string& name);
    // The PASID width a device has on the current host (0: none, or not there).
    uint32_t pasidWidthOf(const std::string& device) const;
    // Runs a change of the store; a failure is logged and named in the result.
    Outcome<Done> record(const std::string& what, const std::function<void()>& change) const;

    ports::Kernel& kernel_;
    PasidAllocator& pasids_;
    ports::StateStore* store_ = nullptr;
    std::function<uint64_t(pid_t)> startTimeOf_;
    ports::FdStore* fdStore_ = nullptr;
    // The context's fds by their names in the fd store.
    static std::vector<std::pair<std::string, int>> fdNames(const Context& ctx);
    void keepFds(const Context& ctx);
    DeviceBroker& broker_;
    InlineOffload inline_;
    Offload* offload_ = &inline_;
    std::vector<ContextObserver*> observers_;
    std::shared_ptr<const Config> config_;
    std::shared_ptr<const HostIndex> host_;
    uint64_t nextId_ = 1;
    bool restoring_ = false;
    uint64_t hostGeneration_ = 0;
    std::map<uint64_t, std::unique_ptr<Context>> contexts_;
    size_t pasidsHeld_ = 0;                             // the sum of contexts_' pasids.size()
    std::map<std::string, std::vector<uint64_t>> held_; // device id -> contexts
    uint64_t nextReservation_ = 1;
    std::map<uint64_t, Reservation> reservations_;
    std::map<std::string, std::vector<uint64_t>> reserved_; // device id -> reservations
    std::map<uint64_t, Leaving> leaving_;
    // Expires with the engine: a build or teardown finishing late finds it gone.
    std::shared_ptr<int> alive_ = std::make_shared<int>(0);
};

} // namespace svad::core
