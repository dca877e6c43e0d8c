// The context engine: what svad hands out, to whom, and how it is taken
// back. No D-Bus here: the adaptors decode a call into a request with the
// caller's credentials, call the engine, and map its Outcome to a reply.
//
// Every allocation is two-phase: all kernel calls happen first, each undone
// on failure by the guard that owns it; only a complete context is stored.
#pragma once

#include "svad/core/model.h"
#include "svad/core/pasid_allocator.h"
#include "svad/names.h"
#include "svad/ports/kernel.h"

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <sys/types.h>
#include <variant>
#include <vector>

namespace svad::core {

// A failure the caller sees as org.svad.Svad1.Error.<error>.
struct Failure {
    names::Error error = names::Error::InvalidArgument;
    std::string message;
};

template <typename T> class Outcome {
public:
    Outcome(T value) : v_(std::move(value)) {}
    Outcome(Failure f) : v_(std::move(f)) {}
    bool ok() const { return std::holds_alternative<T>(v_); }
    T& value() { return std::get<T>(v_); }
    const Failure& failure() const { return std::get<Failure>(v_); }

private:
    std::variant<T, Failure> v_;
};

struct Done {};

enum class ContextMode : uint32_t { Unknown = 0, Handoff = 1, Attached = 2 };
enum class ContextState : uint32_t { Unknown = 0, Active = 1, Degraded = 2 };
enum class HeldKind : uint32_t { Vfio = 1, Vdpa = 2, Queue = 3 };

struct Caller {
    uid_t uid = 0;
    pid_t pid = 0;
    std::string busName;
};

struct AllocateRequest {
    std::string vm;
    std::vector<std::string> devices;
    ContextMode mode = ContextMode::Handoff;
    bool faultQueue = false;
    std::optional<pid_t> ownerPid; // root only
    Caller caller;
};

struct ContextDevice {
    std::string id; // as requested: PCI address, vDPA name, queue name
    HeldKind kind = HeldKind::Vfio;
    ports::UniqueFd fd; // svad's own copy; the caller gets a duplicate
    uint32_t devId = 0; // attached mode, VFIO
    bool attached = false;
    uint32_t vdpaGroups = 0;
    uint32_t vdpaAddressSpaces = 0;
    uint32_t pasidWidth = 0; // 0: no PASID for this device
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

    const ContextDevice* device(const std::string& id) const;
};

class Engine {
public:
    Engine(ports::Kernel& kernel, PasidAllocator& pasids);
    ~Engine();
    Engine(const Engine&) = delete;
    Engine& operator=(const Engine&) = delete;

    // The host the next requests resolve devices against.
    void setHost(Host host);
    const Host& host() const { return host_; }

    Outcome<Context*> allocate(const AllocateRequest& request, uint64_t nowUsec);
    // Whether the caller may act on a context: it exists, and the caller owns it or is root.
    Outcome<Done> checkAccess(uint64_t id, const Caller& caller) const;
    // Releases a context (the caller must own it, or be root).
    Outcome<Done> release(uint64_t id, const Caller& caller);
    // Releases without an ownership check: the owner went away.
    void releaseUnchecked(uint64_t id);
    Outcome<uint32_t> allocatePasid(uint64_t id, const std::string& device, const Caller& caller);
    Outcome<Done> releasePasid(uint64_t id, uint32_t pasid, const Caller& caller);
    Outcome<Done> setVirtualId(uint64_t id, const std::string& device, uint64_t virtId,
                               const Caller& caller);

    const Context* find(uint64_t id) const;
    const std::map<uint64_t, std::unique_ptr<Context>>& contexts() const { return contexts_; }
    // The context holding a device (PCI address, vDPA name) or queue; 0 if none.
    uint64_t holderOf(const std::string& device) const;
    // Contexts whose devices are no longer on the host (after a rescan): marked degraded.
    std::vector<uint64_t> markDegraded();
    size_t pasidCount() const;

private:
    struct Resolved;
    Outcome<Done> checkOwner(const Context& ctx, const Caller& caller) const;
    Outcome<std::vector<Resolved>> resolve(const AllocateRequest& request) const;
    void teardown(Context& ctx);
    uint32_t pasidWidthOf(const PciDevice& dev) const;
    const PciDevice* pciDevice(const std::string& address) const;

    ports::Kernel& kernel_;
    PasidAllocator& pasids_;
    Host host_;
    uint64_t nextId_ = 1;
    std::map<uint64_t, std::unique_ptr<Context>> contexts_;
    std::map<std::string, uint64_t> held_; // device id -> context
};

} // namespace svad::core
