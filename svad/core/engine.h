// The context engine: what svad hands out, to whom, and how it is taken
// back. No D-Bus here: the adaptors decode a call into a request with the
// caller's credentials, call the engine, and map its Outcome to a reply.
//
// Every device of a request passes the configuration's rules and then the
// policy plugins (DeviceBroker) before anything is opened: no fd leaves
// svad without a plugin's ALLOW. Each verdict is written as an audit record.
//
// Every allocation is two-phase: all kernel calls happen first, each undone
// on failure by the guard that owns it; only a complete context is stored.
#pragma once

#include "svad/core/config.h"
#include "svad/core/model.h"
#include "svad/core/outcome.h"
#include "svad/core/pasid_allocator.h"
#include "svad/core/policy.h"
#include "svad/names.h"
#include "svad/ports/kernel.h"

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <span>
#include <string>
#include <sys/types.h>
#include <variant>
#include <vector>

namespace svad::core {

enum class ContextMode : uint32_t { Unknown = 0, Handoff = 1, Attached = 2 };
enum class ContextState : uint32_t { Unknown = 0, Active = 1, Degraded = 2 };
enum class HeldKind : uint32_t { Vfio = 1, Vdpa = 2, Queue = 3 };

struct Caller {
    uid_t uid = 0;
    pid_t pid = 0;
    std::string busName;
    std::vector<gid_t> gids; // primary and supplementary, from the bus or the user database
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
    std::string plugin;      // the plugin that allowed and prepared it
    std::string rule;        // the configuration rule, empty for the default policy
    std::vector<std::pair<std::string, std::string>> options; // the rule's, as prepared
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

    const ContextDevice* device(const std::string& id) const;
};

class Engine {
public:
    Engine(ports::Kernel& kernel, PasidAllocator& pasids, DeviceBroker& broker);
    ~Engine();
    Engine(const Engine&) = delete;
    Engine& operator=(const Engine&) = delete;

    // The host the next requests resolve devices against.
    void setHost(Host host);
    const Host& host() const { return host_; }
    // The rules the next requests are judged by; contexts already made stay.
    void setConfig(std::shared_ptr<const Config> config);
    const Config& config() const { return *config_; }

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
    // The context holding a device (PCI address, vDPA name) or queue; 0 if none
    // (the first, for a shared queue).
    uint64_t holderOf(const std::string& device) const;
    std::vector<uint64_t> holdersOf(const std::string& device) const;
    // Contexts whose devices are no longer on the host (after a rescan): marked degraded.
    std::vector<uint64_t> markDegraded();
    size_t pasidCount() const;

private:
    struct Resolved;
    Outcome<Done> checkOwner(const Context& ctx, const Caller& caller) const;
    Outcome<std::vector<Resolved>> resolve(const AllocateRequest& request);
    Outcome<Done> judge(const AllocateRequest& request, std::vector<Resolved>& resolved);
    PolicyQuery query(const AllocateRequest& request, const Resolved& r) const;
    // One rule for relatives, applied alike to the devices held by other
    // contexts and to those earlier in the same request (`earlier`):
    //  - a PCI function handed out whole takes with it every function it
    //    governs (the members of its IOMMU group; for a PF, its VFs), so no
    //    vDPA device or work queue on any of them may be handed out beside it,
    //    neither in another context nor in the same one;
    //  - functions that govern one another (one IOMMU group, PF and VF) may
    //    be held together only by one context.
    // A shared queue in several contexts and sibling queues or vDPA devices
    // are not relatives.
    struct Claim;
    Outcome<Done> checkRelatives(const Resolved& r, std::span<const Resolved> earlier) const;
    std::optional<std::string> clash(const Claim& mine, const Claim& other) const;
    bool governs(const PciDevice& whole, const std::string& function) const;
    std::set<std::string> relativesOf(const Claim& c) const;
    const IommuGroup* groupOf(const PciDevice& dev) const;
    void audit(const AllocateRequest& request, const std::string& device, const std::string& plugin,
               const std::string& verdict, const std::string& reason,
               const std::string& rule) const;
    void teardown(Context& ctx);
    uint32_t pasidWidthOf(const PciDevice& dev) const;
    const PciDevice* pciDevice(const std::string& address) const;

    ports::Kernel& kernel_;
    PasidAllocator& pasids_;
    DeviceBroker& broker_;
    std::shared_ptr<const Config> config_;
    Host host_;
    uint64_t nextId_ = 1;
    std::map<uint64_t, std::unique_ptr<Context>> contexts_;
    std::map<std::string, std::vector<uint64_t>> held_; // device id -> contexts
};

} // namespace svad::core
